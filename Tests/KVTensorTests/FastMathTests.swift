import Foundation
import XCTest

@testable import KVTensor

final class FastMathTests: XCTestCase {
  /// Distance in units in the last place between two finite positive floats.
  private func ulps(_ a: Float, _ b: Float) -> Int {
    abs(Int(a.bitPattern) - Int(b.bitPattern))
  }

  func testExpWithinTwoUlpOfCorrectlyRoundedOverWholeRange() {
    // Every 97th float bit pattern... is too many; a dense sweep of 2M points instead, plus
    // the ends of the range.
    var worstUlp = 0
    var worstRel: Double = 0
    var worstX: Float = 0
    let count = 2_000_000
    let lo = FastMath.expLow
    let hi = FastMath.expHigh
    var xs = [Float](repeating: 0, count: count + 6)
    for i in 0..<count { xs[i] = lo + (hi - lo) * Float(i) / Float(count - 1) }
    xs[count] = 0
    xs[count + 1] = -1e-30
    xs[count + 2] = 1e-30
    xs[count + 3] = .ulpOfOne
    xs[count + 4] = -87.3
    xs[count + 5] = 88.3
    var ys = [Float](repeating: 0, count: xs.count)
    xs.withUnsafeBufferPointer { x in
      ys.withUnsafeMutableBufferPointer { y in
        FastMath.exp(x.baseAddress!, count: x.count, out: y.baseAddress!)
      }
    }
    for (x, y) in zip(xs, ys) {
      let exact = Foundation.exp(Double(x))
      let rounded = Float(exact)
      let u = ulps(y, rounded)
      let rel = abs(Double(y) - exact) / exact
      if u > worstUlp { worstUlp = u; worstX = x }
      worstRel = max(worstRel, rel)
    }
    print("FastMath.exp: max \(worstUlp) ulp (at x = \(worstX)), max rel error \(worstRel)")
    XCTAssertLessThanOrEqual(worstUlp, 2)
    XCTAssertLessThan(worstRel, 3e-7)
  }

  func testExpAgreesWithFoundationExpFloat() {
    var worstRel: Float = 0
    for i in -20000...20000 {
      let x = Float(i) / 250  // -80 ... 80
      let a = FastMath.exp(x)
      let b = Foundation.exp(x)
      worstRel = max(worstRel, abs(a - b) / b)
    }
    print("FastMath.exp vs Foundation.exp(Float): max rel error \(worstRel)")
    XCTAssertLessThan(worstRel, 3e-7)
  }

  func testExpSpecialValues() {
    XCTAssertEqual(FastMath.exp(0), 1)
    XCTAssertEqual(FastMath.exp(-Float.infinity), 0)
    XCTAssertEqual(FastMath.exp(-100), 0)
    XCTAssertEqual(FastMath.exp(-88), 0)  // would be subnormal: flushed
    XCTAssertEqual(FastMath.exp(100), .infinity)
    XCTAssertEqual(FastMath.exp(.infinity), .infinity)
    XCTAssertTrue(FastMath.exp(.nan).isNaN)
    XCTAssertEqual(FastMath.exp(1), Float(M_E), accuracy: 2 * Float(M_E).ulp)
  }

  func testTailsComputeLikeVectorBody() {
    // The same value gives the same bits in the vector body and in any tail position.
    let values: [Float] = (0..<23).map { Float($0) * 0.37 - 4 }
    var whole = values
    whole.withUnsafeMutableBufferPointer { FastMath.exp($0.baseAddress!, count: 23, out: $0.baseAddress!) }
    for count in 1...23 {
      var part = Array(values.prefix(count))
      part.withUnsafeMutableBufferPointer {
        FastMath.exp($0.baseAddress!, count: count, out: $0.baseAddress!)
      }
      XCTAssertEqual(part, Array(whole.prefix(count)), "count \(count)")
      for (x, y) in zip(values.prefix(count), part) { XCTAssertEqual(FastMath.exp(x), y) }
    }
  }

  func testExpShiftSumMaxAndSumOfSquares() {
    for count in [1, 7, 8, 9, 16, 31, 100] {
      let values: [Float] = (0..<count).map { Float(($0 * 37) % 19) / 3 - 2 }
      var row = values
      let m = row.withUnsafeBufferPointer { FastMath.max($0.baseAddress!, count: count) }
      XCTAssertEqual(m, values.max()!)
      let sum = row.withUnsafeMutableBufferPointer {
        FastMath.expShiftSum($0.baseAddress!, count: count, shift: m)
      }
      var expected: Double = 0
      for (x, e) in zip(values, row) {
        let ref = Foundation.exp(Double(x - m))
        XCTAssertEqual(Double(e), ref, accuracy: ref * 3e-7)
        expected += ref
      }
      XCTAssertEqual(Double(sum), expected, accuracy: expected * 1e-6)
      let squares = values.withUnsafeBufferPointer { FastMath.sumOfSquares($0.baseAddress!, count: count) }
      let ref = values.reduce(0.0) { $0 + Double($1) * Double($1) }
      XCTAssertEqual(Double(squares), ref, accuracy: ref * 1e-6)
    }
  }

  /// The softmax row kernels on every path this CPU runs: each e^x and the max bit for bit as
  /// the portable C form; the sum bit for bit on AVX2 (the same 8 lanes) and within rounding on
  /// AVX-512 (16 lanes); all within 2 ulp of `FastMath` (the same formula) and the sum within
  /// 1e-6 of a double-precision one.
  func testSoftmaxRowKernelsOnEveryPath() {
    var seed: UInt64 = 7
    func next() -> Float {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Float(Int(seed >> 40) % 20_000) / 100 - 150  // -150 ..< 50: under- and overflow
    }
    for count in [1, 2, 7, 8, 9, 15, 16, 17, 33, 64, 100, 1000] {
      let values = (0..<count).map { _ in next() }
      let m = values.withUnsafeBufferPointer {
        SoftmaxRow.max($0.baseAddress!, count: count, path: .portable)
      }
      XCTAssertEqual(m, values.max()!)
      for shift in [m, m - 100, m + 100] {
        var reference = values
        let sum = reference.withUnsafeMutableBufferPointer {
          SoftmaxRow.expShiftSum($0.baseAddress!, count: count, shift: shift, path: .portable)
        }
        var swift = values
        _ = swift.withUnsafeMutableBufferPointer {
          FastMath.expShiftSum($0.baseAddress!, count: count, shift: shift)
        }
        for (a, b) in zip(reference, swift) where a.isFinite && b.isFinite {
          XCTAssertLessThanOrEqual(ulps(a, b), 2, "portable against FastMath, \(count)")
        }
        let exact = values.reduce(0.0) { $0 + Foundation.exp(Double($1 - shift)) }
        if exact.isFinite && exact < Double(Float.greatestFiniteMagnitude) {
          XCTAssertEqual(Double(sum), exact, accuracy: exact * 1e-6 + 1e-30, "sum, \(count)")
        }
        for path in [KernelPath.avx2, .avx512] where path.isSupported {
          let km = values.withUnsafeBufferPointer {
            SoftmaxRow.max($0.baseAddress!, count: count, path: path)
          }
          XCTAssertEqual(km.bitPattern, m.bitPattern, "\(path) max, \(count)")
          var fast = values
          let ksum = fast.withUnsafeMutableBufferPointer {
            SoftmaxRow.expShiftSum($0.baseAddress!, count: count, shift: shift, path: path)
          }
          XCTAssertEqual(fast.map(\.bitPattern), reference.map(\.bitPattern), "\(path) exp, \(count)")
          if path == .avx512 {
            XCTAssertEqual(ksum, sum, accuracy: sum.isFinite ? sum * 1e-6 : 0, "\(path) sum, \(count)")
          } else {
            XCTAssertEqual(ksum.bitPattern, sum.bitPattern, "\(path) sum, \(count)")
          }
        }
      }
    }
  }
}

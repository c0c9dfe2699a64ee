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
}

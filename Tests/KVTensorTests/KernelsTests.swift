import Foundation
import XCTest

@testable import KVTensor

final class KernelsTests: XCTestCase {
  func testRMSNormMatchesNaiveAndIsThreadCountIndependent() {
    let rows = 37
    let cols = 45
    let x = randomFloats(rows * cols, seed: 1)
    let w = randomFloats(cols, seed: 2)
    func run(_ threads: Int) -> [Float] {
      var out = [Float](repeating: 0, count: rows * cols)
      Kernels.rmsNorm(x, weight: w, eps: 1e-5, rows: rows, cols: cols, out: &out, threads: threads)
      return out
    }
    let one = run(1)
    XCTAssertEqual(run(2), one)
    XCTAssertEqual(run(5), one)
    for r in 0..<rows {
      let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
      let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(cols) + 1e-5).squareRoot()
      for c in 0..<cols {
        XCTAssertEqual(Double(one[r * cols + c]), Double(w[c]) * row[c] * scale, accuracy: 1e-5)
      }
    }
  }

  func testSiluGateMatchesNaiveAndIsThreadCountIndependent() {
    let rows = 19
    let cols = 29  // not a multiple of 8: exercises the tail
    let gu = randomFloats(rows * 2 * cols, seed: 3).map { $0 * 12 }
    func run(_ threads: Int) -> [Float] {
      var out = [Float](repeating: 0, count: rows * cols)
      Kernels.siluGate(gu, rows: rows, cols: cols, out: &out, threads: threads)
      return out
    }
    let one = run(1)
    XCTAssertEqual(run(2), one)
    XCTAssertEqual(run(3), one)
    for r in 0..<rows {
      for c in 0..<cols {
        let g = Double(gu[r * 2 * cols + c])
        let u = Double(gu[r * 2 * cols + cols + c])
        let ref = g / (1 + Foundation.exp(-g)) * u
        XCTAssertEqual(Double(one[r * cols + c]), ref, accuracy: abs(ref) * 1e-6 + 1e-7)
      }
    }
  }

  func testSoftmaxMatchesNaive() {
    let rows = 11
    let cols = 13
    let x = randomFloats(rows * cols, seed: 4).map { $0 * 30 }
    var y = x
    Kernels.softmax(&y, rows: rows, cols: cols, threads: 2)
    var y1 = x
    Kernels.softmax(&y1, rows: rows, cols: cols, threads: 1)
    XCTAssertEqual(y, y1)
    for r in 0..<rows {
      let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
      let m = row.max()!
      let e = row.map { Foundation.exp($0 - m) }
      let s = e.reduce(0, +)
      for c in 0..<cols { XCTAssertEqual(Double(y[r * cols + c]), e[c] / s, accuracy: 1e-6) }
    }
  }

  func testRotaryTableMatchesPerPositionFormula() {
    let rope = RotaryEmbedding(dimension: 16, base: 10000)
    let heads = 3
    let ld = heads * 16 + 5
    let positions = [0, 1, 7, 300, 1023, 5]
    let x = randomFloats(positions.count * ld, seed: 5)
    var a = x
    rope.apply(&a, rows: positions.count, ld: ld, heads: heads, table: rope.table(positions: positions), threads: 1)
    var b = x
    rope.apply(&b, rows: positions.count, ld: ld, heads: heads, table: rope.table(positions: positions), threads: 4)
    XCTAssertEqual(a, b)
    for (r, p) in positions.enumerated() {
      for h in 0..<heads {
        for i in 0..<8 {
          let angle = Float(p) * rope.inverseFrequencies[i]
          let u = x[r * ld + h * 16 + i]
          let v = x[r * ld + h * 16 + i + 8]
          XCTAssertEqual(a[r * ld + h * 16 + i], u * cos(angle) - v * sin(angle))
          XCTAssertEqual(a[r * ld + h * 16 + i + 8], v * cos(angle) + u * sin(angle))
        }
      }
      // Columns past the heads are untouched.
      for c in (heads * 16)..<ld { XCTAssertEqual(a[r * ld + c], x[r * ld + c]) }
    }
  }

  func testParallelCoversEveryItemOnce() {
    for threads in [1, 2, 3, 8] {
      for count in [0, 1, 5, 64] {
        var hits = [Int](repeating: 0, count: count)
        hits.withUnsafeMutableBufferPointer { h in
          let p = h.baseAddress
          Parallel.forEach(count, threads: threads) { item, worker in
            XCTAssertLessThan(worker, threads)
            p![item] += 1
          }
        }
        XCTAssertEqual(hits, [Int](repeating: 1, count: count))
        var rowHits = [Int](repeating: 0, count: count)
        rowHits.withUnsafeMutableBufferPointer { h in
          let p = h.baseAddress
          Parallel.rows(count, threads: threads) { range in for r in range { p![r] += 1 } }
        }
        XCTAssertEqual(rowHits, [Int](repeating: 1, count: count))
      }
    }
  }

  func testLinearOneRowMatchesMatrixPath() {
    let outFeatures = 70
    let inFeatures = 33
    let w = randomFloats(outFeatures * inFeatures, seed: 6)
    let x = randomFloats(2 * inFeatures, seed: 7)
    var both = [Float](repeating: 0, count: 2 * outFeatures)
    Linear.apply(x, rows: 2, ldx: inFeatures, weight: w, outFeatures: outFeatures, inFeatures: inFeatures, out: &both, ldo: outFeatures)
    var one = [Float](repeating: 1, count: outFeatures)
    Linear.apply(x, rows: 1, ldx: inFeatures, weight: w, outFeatures: outFeatures, inFeatures: inFeatures, beta: 1, out: &one, ldo: outFeatures)
    for o in 0..<outFeatures {
      XCTAssertEqual(one[o], both[o] + 1, accuracy: 1e-5)
    }
  }

  /// OpenBLAS 0.3.21 (pthread build) called from several threads at once, one BLAS thread each:
  /// every result must equal the serial one bit for bit.
  func testConcurrentSingleThreadedBLASEqualsSerial() {
    let m = 96
    let n = 80
    let k = 64
    let calls = 24
    let a = (0..<calls).map { randomFloats(m * k, seed: UInt64(100 + $0)) }
    let b = randomFloats(n * k, seed: 8)
    func gemm(_ i: Int, into c: UnsafeMutablePointer<Float>) {
      a[i].withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
          BLAS.sgemm(transB: true, m: m, n: n, k: k, a: ap.baseAddress!, lda: k, b: bp.baseAddress!, ldb: k, c: c, ldc: n)
        }
      }
    }
    var serial = [Float](repeating: 0, count: calls * m * n)
    serial.withUnsafeMutableBufferPointer { s in
      Parallel.withSingleThreadedBLAS { for i in 0..<calls { gemm(i, into: s.baseAddress! + i * m * n) } }
    }
    for _ in 0..<20 {
      var parallel = [Float](repeating: .nan, count: calls * m * n)
      parallel.withUnsafeMutableBufferPointer { s in
        let base = s.baseAddress!
        withBLASThreads(2) {
          Parallel.withSingleThreadedBLAS {
            Parallel.forEach(calls, threads: 4) { i, _ in gemm(i, into: base + i * m * n) }
          }
        }
      }
      XCTAssertTrue(parallel == serial)
    }
  }
}

import Foundation
import KVModels
import KVTensor
import XCTest

/// The weight kernels (CKVKernels) on every path this CPU runs, against what the `gguf` Python
/// package dequantizes from the same bytes (scripts/gen_gguf_fixtures.py's all_types.gguf: every
/// supported type, quantized from data and as random bytes).
final class WeightKernelTests: XCTestCase {
  private struct Expected: Decodable {
    struct Tensor: Decodable {
      let name: String
      let dims: [Int]
      let bits: [UInt32]
    }
    let tensors: [Tensor]
  }

  private func fixture(_ name: String) -> URL {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
      .appendingPathComponent("gguf").appendingPathComponent(name)
  }

  private var paths: [KernelPath] { KernelPath.allCases.filter(\.isSupported) }

  private func withPath<R>(_ path: KernelPath, _ body: () throws -> R) throws -> R {
    let saved = KernelPath.current
    try KernelPath.select(path)
    defer { try? KernelPath.select(saved) }
    return try body()
  }

  /// Each tensor of all_types.gguf read in place as a `WeightMatrix`.
  private func matrices() throws -> [(Expected.Tensor, WeightMatrix)] {
    let gguf = try GGUFFile(path: fixture("all_types.gguf").path)
    let expected = try JSONDecoder().decode(
      Expected.self, from: Data(contentsOf: fixture("all_types.expected.json")))
    return try expected.tensors.map { t in
      let info = try gguf.tensor(t.name)
      let format = try XCTUnwrap(WeightFormat(ggml: info.type), t.name)
      let part = WeightMatrix.Part(
        format: format, bytes: try gguf.tensorData(t.name), rows: info.rowCount)
      return (
        t,
        WeightMatrix(cols: info.rowLength, parts: [part], mapped: [true], owners: [gguf], meter: nil)
      )
    }
  }

  func testDequantizationOnEveryPathMatchesPythonBitwise() throws {
    let all = try matrices()
    XCTAssertEqual(Set(all.map { $0.1.formatName }), Set(WeightFormat.allCases.map(\.name)))
    for path in paths {
      try withPath(path) {
        for (t, w) in all {
          let out = [Float](unsafeUninitializedCapacity: w.rows * w.cols) { buf, n in
            w.dequantizeRows(0..<w.rows, into: buf.baseAddress!, ld: w.cols)
            n = w.rows * w.cols
          }
          XCTAssertEqual(mismatches(out, t.bits[...]), 0, "\(path) \(t.name)")
          // Row by row (an embedding lookup) as well.
          var row = [Float](repeating: 0, count: w.cols)
          w.dequantizeRow(w.rows - 1, into: &row)
          XCTAssertEqual(mismatches(row, t.bits.suffix(w.cols)), 0, "\(path) \(t.name) last row")
        }
      }
    }
  }

  func testMatrixVectorOnEveryPathMatchesDoublePrecision() throws {
    for (t, w) in try matrices() {
      let values = t.bits.map { Float(bitPattern: $0) }
      guard values.allSatisfy(\.isFinite) else { continue }  // random f16/bf16 bytes hold NaNs
      let x = (0..<w.cols).map { Float(sin(Double($0) * 0.37)) }
      for path in paths {
        try withPath(path) {
          for beta: Float in [0, 1] {
            var y = [Float](repeating: 0.5, count: w.rows)
            x.withUnsafeBufferPointer { xp in
              w.apply(xp.baseAddress!, rows: 1, ldx: w.cols, beta: beta, out: &y, ldo: w.rows, scratch: nil)
            }
            for r in 0..<w.rows {
              var exact = Double(beta) * 0.5
              var magnitude = 0.0
              for c in 0..<w.cols {
                exact += Double(values[r * w.cols + c]) * Double(x[c])
                magnitude += abs(Double(values[r * w.cols + c]) * Double(x[c]))
              }
              // The integer paths quantize x in blocks of 32 (|x - x̃| ≤ dx/2, dx = max|x|/127):
              // their exact int32 sums add at most Σ_blocks dx/2·Σ|w| to the float rounding.
              var quantization = 0.0
              if path.quantizesActivations && [.q8_0, .q4_0, .q4_1].contains(w.parts[0].format) {
                for b in 0..<(w.cols / 32) {
                  let dx = Double(x[(32 * b)..<(32 * b + 32)].map { abs($0) }.max()!) / 127
                  for c in (32 * b)..<(32 * b + 32) {
                    quantization += dx / 2 * abs(Double(values[r * w.cols + c]))
                  }
                }
              }
              XCTAssertEqual(
                Double(y[r]), exact, accuracy: quantization + 1e-5 * max(magnitude, 1),
                "\(path) \(t.name) row \(r) beta \(beta)")
            }
          }
        }
      }
    }
  }
}

/// Elements whose bits differ; vcvtph2ps quiets a signalling NaN, so any NaN matches a NaN.
private func mismatches(_ values: [Float], _ bits: ArraySlice<UInt32>) -> Int {
  zip(values, bits).filter { v, b in
    v.bitPattern != b && !(v.isNaN && Float(bitPattern: b).isNaN)
  }.count
}

import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// SmolLM2-135M against Hugging Face transformers 5.24.0 (fp32, same dequantized GGUF weights):
/// fixtures from scripts/gen_parity_fixtures.py.
final class DecoderParityTests: XCTestCase {
  struct Manifest: Decodable {
    struct Prompt: Decodable {
      let name: String
      let ids: [Int]
      let argmax: [Int]
      let top_ids: [[Int]]
      let greedy32: [Int]
    }
    let columns: [Int]
    let prompts: [Prompt]
  }

  static let tolerance: Float = 1e-3

  /// The float32 reference path (the GGUF dequantized, as transformers loads it).
  func testReferencePathMatchesTransformers() throws {
    try checkAgainstTransformers(.f32)
  }

  /// The Q4_1/Q8_0 matrices read in place, on every float kernel path this CPU runs: the same
  /// bounds (prefill's sgemm sees bitwise the reference's weights; decode sums in another
  /// order).
  func testStoredPathOnEveryKernelPathMatchesTransformers() throws {
    let saved = KernelPath.current
    defer { try? KernelPath.select(saved) }
    // The float kernel paths; the integer ones (x quantized to int8 in decode) leave the exact
    // greedy continuation at near ties and are bounded by FidelityTests instead.
    for path in KernelPath.allCases where path.isSupported && !path.quantizesActivations {
      try KernelPath.select(path)
      try checkAgainstTransformers(.stored)
    }
  }

  func checkAgainstTransformers(_ precision: WeightPrecision) throws {
    let path = try TestPaths.requireModel()
    let dir = TestPaths.fixtures + "/parity"
    let manifest = try JSONDecoder().decode(
      Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/manifest.json")))
    let meter = MemoryMeter()
    let model = try LlamaModel.load(gguf: GGUFFile(path: path), precision: precision, meter: meter)
    let vocab = model.config.vocabularySize
    XCTAssertGreaterThanOrEqual(manifest.prompts.map(\.ids.count).reduce(0, +), 100)
    XCTAssertTrue(manifest.prompts.contains { $0.ids.count > 300 })

    for prompt in manifest.prompts {
      let n = prompt.ids.count
      let columns = try NPYReader.read("\(dir)/\(prompt.name).columns.npy").values
      let top = try NPYReader.read("\(dir)/\(prompt.name).top.npy").values
      let full = ProcessInfo.processInfo.environment["KVLAB_FULL_PARITY"] != nil
        ? try? NPYReader.read("\(TestPaths.root)/bench/out/parity-full/\(prompt.name).npy").values
        : nil
      let cache = DenseKVCache(
        layers: model.config.layers, kvHeads: model.config.kvHeads, headDim: model.config.headDim,
        meter: meter)
      // Chunks of 100 exercise attention over cached entries plus a causal block.
      var worst: Float = 0
      var start = 0
      while start < n {
        let chunk = Array(prompt.ids[start..<min(n, start + 100)])
        let logits = try XCTUnwrap(
          model.forward(
            model.embed(chunk, meter: meter), positions: Array(start..<(start + chunk.count)),
            origins: chunk.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
            logits: .all, meter: meter))
        for r in 0..<chunk.count {
          let p = start + r
          let row = logits.row(r)
          XCTAssertEqual(
            argmax(row, vocab), prompt.argmax[p], "\(prompt.name): argmax differs at position \(p)")
          for (k, col) in manifest.columns.enumerated() {
            worst = max(worst, abs(row[col] - columns[p * manifest.columns.count + k]))
          }
          for (k, col) in prompt.top_ids[p].enumerated() {
            worst = max(worst, abs(row[col] - top[p * prompt.top_ids[p].count + k]))
          }
          if let full {
            for col in 0..<vocab { worst = max(worst, abs(row[col] - full[p * vocab + col])) }
          }
        }
        start += chunk.count
      }
      XCTAssertLessThanOrEqual(worst, Self.tolerance, "\(prompt.name): max |Δlogit| \(worst)")
      print("parity \(precision) \(KernelPath.current) \(prompt.name): \(n) tokens, max |Δlogit| = \(worst)\(full != nil ? " (all columns)" : "")")

      // 32 greedy tokens continue the cache one position at a time.
      var next = prompt.argmax[n - 1]
      var generated: [Int] = []
      for step in 0..<32 {
        generated.append(next)
        let logits = try XCTUnwrap(
          model.forward(
            model.embed([next], meter: meter), positions: [n + step],
            origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
            meter: meter))
        next = argmax(logits.pointer, vocab)
      }
      XCTAssertEqual(generated, prompt.greedy32, "\(prompt.name): greedy continuation differs")
    }
  }

  private func argmax(_ row: UnsafePointer<Float>, _ n: Int) -> Int {
    var best = 0
    for i in 1..<n where row[i] > row[best] { best = i }
    return best
  }
}

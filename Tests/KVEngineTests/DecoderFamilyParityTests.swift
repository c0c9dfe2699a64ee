import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// Tiny random qwen2 and llama (attention_bias) decoders, written as GGUF the way llama.cpp's
/// converter writes them, against Hugging Face transformers 5.24.0 (fp32, same weights): every
/// logit of every position, argmax, and an 8-token greedy continuation. Fixtures from
/// scripts/gen_decoder_fixtures.py (Fixtures/decoders/manifest.json names them).
final class DecoderFamilyParityTests: XCTestCase {
  struct Manifest: Decodable {
    struct Variant: Decodable {
      let name: String
      let architecture: String
      let f16: Bool
      let o_proj_bias: Bool
      let ids: [Int]
      let argmax: [Int]
      let greedy: [Int]
    }
    let variants: [Variant]
  }

  static let tolerance: Float = 1e-4
  static let dir = TestPaths.fixtures + "/decoders"

  static func manifest() throws -> Manifest {
    try JSONDecoder().decode(
      Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/manifest.json")))
  }

  static func variant(_ name: String) throws -> Manifest.Variant {
    try XCTUnwrap(try manifest().variants.first { $0.name == name }, "\(name) not in manifest")
  }

  static func gguf(_ name: String) throws -> GGUFFile { try GGUFFile(path: "\(dir)/\(name).gguf") }

  // MARK: Parity

  /// qwen2: q/k/v biases, no rotary permutation in the GGUF, θ = 1e6, untied output, F32.
  func testQwen2MatchesTransformers() throws {
    let v = try Self.variant("qwen2")
    let model = try LlamaModel.load(gguf: Self.gguf(v.name), meter: MemoryMeter())
    XCTAssertEqual(model.config.architecture, "qwen2")
    XCTAssertTrue(model.config.attentionBias)
    XCTAssertFalse(model.config.tiedEmbeddings)
    XCTAssertEqual(model.config.ropeTheta, 1e6)
    try checkParity(model, v)
  }

  /// llama with attention_bias=True (q/k biases permuted like the weights), tied embeddings,
  /// head_dim 24 (heads·head_dim ≠ hidden), F16 weights; its o_proj bias is zero.
  func testLlamaQKVBiasF16MatchesTransformers() throws {
    let v = try Self.variant("llama_qkv_bias")
    let model = try LlamaModel.load(gguf: Self.gguf(v.name), meter: MemoryMeter())
    XCTAssertEqual(model.config.architecture, "llama")
    XCTAssertTrue(model.config.attentionBias)
    XCTAssertTrue(model.config.tiedEmbeddings)
    XCTAssertEqual(model.config.headDim, 24)
    try checkParity(model, v)
  }

  /// llama with attention_bias=True: biases on q/k/v and on the output projection (o_proj).
  func testLlamaFullAttentionBias() throws {
    let v = try Self.variant("llama_bias")
    XCTAssertTrue(v.o_proj_bias)
    try checkParity(try LlamaModel.load(gguf: Self.gguf(v.name), meter: MemoryMeter()), v)
  }

  /// Prefill in chunks (7: attention over cached entries plus a causal block; 1: decode-style;
  /// all at once: the causal block alone), comparing every logit; then greedy decoding.
  private func checkParity(_ model: LlamaModel, _ v: Manifest.Variant) throws {
    try Self.checkParity(
      model, name: v.name, logitsPath: "\(Self.dir)/\(v.name).logits.npy", ids: v.ids,
      argmax: v.argmax, greedy: v.greedy)
  }

  /// The same for any decoder and golden file (the Qwen3 fixtures use it too).
  static func checkParity(
    _ model: LlamaModel, name: String, logitsPath: String, ids: [Int], argmax expected: [Int],
    greedy: [Int]
  ) throws {
    let v = (name: name, ids: ids, argmax: expected, greedy: greedy)
    let meter = MemoryMeter()
    let vocab = model.config.vocabularySize
    let n = v.ids.count
    let reference = try NPYReader.read(logitsPath)
    XCTAssertEqual(reference.shape, [n, vocab])
    for chunkSize in [7, 1, n] {
      let cache = DenseKVCache(
        layers: model.config.layers, kvHeads: model.config.kvHeads, headDim: model.config.headDim,
        meter: meter)
      var worst: Float = 0
      var start = 0
      while start < n {
        let chunk = Array(v.ids[start..<min(n, start + chunkSize)])
        let logits = try XCTUnwrap(
          model.forward(
            model.embed(chunk, meter: meter), positions: Array(start..<(start + chunk.count)),
            origins: chunk.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
            logits: .all, meter: meter))
        XCTAssertEqual(logits.cols, vocab)
        for r in 0..<chunk.count {
          let p = start + r
          let row = logits.row(r)
          XCTAssertEqual(argmax(row, vocab), v.argmax[p], "\(v.name): argmax differs at \(p)")
          for col in 0..<vocab {
            worst = max(worst, abs(row[col] - reference.values[p * vocab + col]))
          }
        }
        start += chunk.count
      }
      XCTAssertLessThanOrEqual(
        worst, Self.tolerance, "\(v.name), chunks of \(chunkSize): max |Δlogit| \(worst)")
      print(
        "parity \(v.name) (chunks of \(chunkSize)): \(n) tokens × \(vocab), max |Δlogit| \(worst)")
      guard chunkSize == 7 else { continue }

      // Greedy tokens continue the cache one position at a time.
      var next = v.argmax[n - 1]
      var generated: [Int] = []
      for step in 0..<v.greedy.count {
        generated.append(next)
        let logits = try XCTUnwrap(
          model.forward(
            model.embed([next], meter: meter), positions: [n + step],
            origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
            meter: meter))
        next = argmax(logits.pointer, vocab)
      }
      XCTAssertEqual(generated, v.greedy, "\(v.name): greedy continuation differs")
    }
  }

  private static func argmax(_ row: UnsafePointer<Float>, _ n: Int) -> Int {
    var best = 0
    for i in 1..<n where row[i] > row[best] { best = i }
    return best
  }

  // MARK: Configs and files

  /// config.json (as transformers 5 writes it: rope_theta inside rope_parameters) decodes into
  /// the same DecoderConfig the GGUF metadata gives.
  func testConfigJSONEqualsGGUFConfig() throws {
    let expected: [String: (arch: String, headDim: Int, theta: Float, eps: Float, tied: Bool)] = [
      "qwen2": ("qwen2", 16, 1e6, 1e-6, false),
      "llama_qkv_bias": ("llama", 24, 5e5, 1e-5, true),
      "llama_bias": ("llama", 24, 5e5, 1e-5, true),
    ]
    let variants = try Self.manifest().variants
    XCTAssertEqual(Set(variants.map(\.name)), Set(expected.keys))
    for v in variants {
      let json = try JSONDecoder().decode(
        DecoderConfig.self,
        from: Data(contentsOf: URL(fileURLWithPath: "\(Self.dir)/\(v.name).config.json")))
      let fromGGUF = try DecoderConfig(gguf: Self.gguf(v.name))
      XCTAssertEqual(json, fromGGUF, v.name)
      let e = try XCTUnwrap(expected[v.name])
      XCTAssertEqual(json.architecture, e.arch, v.name)
      XCTAssertEqual(json.hiddenSize, 64, v.name)
      XCTAssertEqual(json.intermediateSize, 128, v.name)
      XCTAssertEqual(json.layers, 2, v.name)
      XCTAssertEqual(json.heads, 4, v.name)
      XCTAssertEqual(json.kvHeads, 2, v.name)
      XCTAssertEqual(json.headDim, e.headDim, v.name)
      XCTAssertEqual(json.vocabularySize, 300, v.name)
      XCTAssertEqual(json.ropeTheta, e.theta, v.name)
      XCTAssertEqual(json.rmsNormEps, e.eps, v.name)
      XCTAssertEqual(json.tiedEmbeddings, e.tied, v.name)
      XCTAssertTrue(json.attentionBias, v.name)
      // Round trip through DecoderConfig's own encoding (top-level rope_theta, 4.x style).
      let again = try JSONDecoder().decode(DecoderConfig.self, from: JSONEncoder().encode(json))
      XCTAssertEqual(again, json, v.name)
    }
  }

  /// The files hold what the tests claim: F32 for qwen2, F16 2-D weights (F32 norms and biases)
  /// for the llama ones, biases on q/k/v (and o for llama), output.weight only when untied.
  func testFixtureTensorLayout() throws {
    for v in try Self.manifest().variants {
      let file = try Self.gguf(v.name)
      XCTAssertEqual(file.metadata["general.architecture"]?.string, v.architecture)
      for (name, info) in file.tensors {
        let wantF16 = v.f16 && info.dims.filter { $0 > 1 }.count == 2
        XCTAssertEqual(info.type, wantF16 ? .f16 : .f32, "\(v.name) \(name)")
      }
      for t in ["attn_q.bias", "attn_k.bias", "attn_v.bias"] {
        XCTAssertNotNil(file.tensors["blk.1.\(t)"], "\(v.name) \(t)")
      }
      XCTAssertEqual(file.tensors["blk.1.attn_output.bias"] != nil, v.architecture == "llama")
      XCTAssertEqual(file.tensors["output.weight"] != nil, v.architecture == "qwen2")
    }
  }

  /// transformers 4.x configs keep rope_theta at the top level; scaled RoPE and MLP biases,
  /// which this decoder does not implement, are refused rather than ignored.
  func testConfigJSONVariants() throws {
    func decode(_ extra: String) throws -> DecoderConfig {
      let json = """
        {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 300, "rms_norm_eps": 1e-6, "hidden_act": "silu"\(extra)}
        """
      return try JSONDecoder().decode(DecoderConfig.self, from: Data(json.utf8))
    }
    XCTAssertEqual(try decode(#", "rope_theta": 1000000.0"#).ropeTheta, 1e6)
    XCTAssertEqual(
      try decode(#", "rope_theta": 1000000.0, "rope_scaling": null"#).ropeTheta, 1e6)
    XCTAssertEqual(
      try decode(#", "rope_parameters": {"rope_theta": 250000.0, "rope_type": "default"}"#)
        .ropeTheta, 2.5e5)
    XCTAssertEqual(try decode("").ropeTheta, 10000)
    XCTAssertTrue(try decode("").attentionBias, "qwen2 has q/k/v biases without attention_bias")
    XCTAssertEqual(try decode("").headDim, 16)
    XCTAssertThrowsError(
      try decode(#", "rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8}"#))
    XCTAssertThrowsError(try decode(#", "rope_scaling": {"type": "linear", "factor": 2.0}"#))
    XCTAssertThrowsError(try decode(#", "mlp_bias": true"#))
  }
}

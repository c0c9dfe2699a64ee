import Foundation
import KVEngine
import KVModels
import KVTensor
import XCTest

/// Tiny random Qwen3 decoders (per-head Q/K RMSNorm, no biases, head_dim ≠ hidden/heads) of two
/// shapes, from the folder transformers 5.24.0 saved and from GGUF, against transformers' fp32
/// logits: every logit of every position, argmax, 8 greedy tokens. Fixtures from
/// scripts/gen_qwen3_fixtures.py.
final class Qwen3ParityTests: XCTestCase {
  struct Manifest: Decodable {
    struct Variant: Decodable {
      let name: String
      let f16: Bool
      let heads: Int
      let kv_heads: Int
      let head_dim: Int
      let tied: Bool
      let ids: [Int]
      let argmax: [Int]
      let greedy: [Int]
    }
    let variants: [Variant]
  }

  static let dir = TestPaths.fixtures + "/qwen3"

  static func variants() throws -> [Manifest.Variant] {
    let m = try JSONDecoder().decode(
      Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/manifest.json")))
    XCTAssertEqual(m.variants.map(\.name), ["qwen3_gqa2", "qwen3_gqa6"])
    return m.variants
  }

  private func check(_ model: LlamaModel, _ v: Manifest.Variant) throws {
    let c = model.config
    XCTAssertEqual(c.architecture, "qwen3")
    XCTAssertTrue(c.qkNorm)
    XCTAssertFalse(c.attentionBias)
    XCTAssertEqual([c.heads, c.kvHeads, c.headDim], [v.heads, v.kv_heads, v.head_dim])
    XCTAssertNotEqual(c.heads * c.headDim, c.hiddenSize, "head_dim must differ from hidden/heads")
    XCTAssertEqual(c.tiedEmbeddings, v.tied)
    try DecoderFamilyParityTests.checkParity(
      model, name: v.name, logitsPath: "\(Self.dir)/\(v.name).logits.npy", ids: v.ids,
      argmax: v.argmax, greedy: v.greedy)
  }

  func testFolderMatchesTransformers() throws {
    for v in try Self.variants() {
      let folder = try HFModelFolder(path: "\(Self.dir)/\(v.name)")
      XCTAssertEqual(folder.modelType, "qwen3")
      let model = try LlamaModel.load(
        folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder),
        config: try folder.decodeConfig(DecoderConfig.self), meter: MemoryMeter())
      try check(model, v)
    }
  }

  func testGGUFMatchesTransformers() throws {
    for v in try Self.variants() {
      let file = try GGUFFile(path: "\(Self.dir)/\(v.name).gguf")
      XCTAssertEqual(file.metadata["general.architecture"]?.string, "qwen3")
      XCTAssertNotNil(file.tensors["blk.0.attn_q_norm.weight"])
      let model = try LlamaModel.load(gguf: file, precision: .f32, meter: MemoryMeter())
      XCTAssertEqual(model.weightFormat, "F32")
      try check(model, v)
      // The folder's config.json and the GGUF metadata describe the same decoder.
      let json = try HFModelFolder(path: "\(Self.dir)/\(v.name)").decodeConfig(DecoderConfig.self)
      XCTAssertEqual(json, model.config, v.name)
      if v.f16 {
        XCTAssertEqual(
          try LlamaModel.load(gguf: file, meter: MemoryMeter()).weightFormat, "F16")
      }
    }
  }

  /// A session loads the folder (model_type qwen3, its tokenizer.json) and the GGUF (the same
  /// tokenizer as `tokenizer.ggml.*`, weights dequantized): the same chat text gives the same
  /// ids and, at every position, the same logits.
  func testSessionLoadsBothFormsAlike() throws {
    let v = try Self.variants()[0]
    let tmp = NSTemporaryDirectory() + "qwen3-session-\(getpid())"
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    var runs: [(context: [Int], logits: [Float])] = []
    for (i, path) in ["\(Self.dir)/\(v.name)", "\(Self.dir)/\(v.name).gguf"].enumerated() {
      let session = Session(options: EngineOptions(threads: 2, modelDirectories: []))
      let report = try session.load(path, precision: .f32)
      XCTAssertEqual(report.architecture, "qwen3", path)
      XCTAssertEqual(session.model?.config.qkNorm, true, path)
      try session.feedText("What is in this picture? The sky is blue.", raw: false)
      let out = "\(tmp)/\(i).npy"
      _ = try session.writeLogits(to: out)
      runs.append((session.context, try NPYReader.read(out).values))
    }
    XCTAssertGreaterThan(runs[0].context.count, 10)
    XCTAssertEqual(runs[0].context, runs[1].context)
    let gap = zip(runs[0].logits, runs[1].logits).map { abs($0 - $1) }.max() ?? .infinity
    XCTAssertEqual(runs[0].logits.count, runs[1].logits.count)
    XCTAssertLessThanOrEqual(gap, 1e-5)
  }

  /// A qwen3 GGUF without its Q norm is refused naming the tensor; a config asking for
  /// sliding-window layers is refused naming the key.
  func testMissingNormAndSlidingWindowRefused() throws {
    let v = try Self.variants()[0]
    XCTAssertThrowsError(
      try JSONDecoder().decode(
        DecoderConfig.self,
        from: Data(
          """
          {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300,
           "use_sliding_window": true}
          """.utf8))
    ) { XCTAssertTrue("\($0)".contains("use_sliding_window"), "\($0)") }
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent(
      "qwen3-no-qnorm-\(getpid())")
    try? FileManager.default.removeItem(at: tmp)
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: tmp) }
    let src = "\(Self.dir)/\(v.name)"
    for f in ["config.json", "tokenizer.json"] {
      try FileManager.default.copyItem(atPath: "\(src)/\(f)", toPath: tmp.path + "/" + f)
    }
    // The safetensors with layer 1's q_norm renamed away: rewritten header, same data.
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(src)/model.safetensors"))
    let headerLength = Int(data.prefix(8).withUnsafeBytes { $0.load(as: UInt64.self) })
    var header = try XCTUnwrap(
      JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength)))
        as? [String: Any])
    header["model.layers.1.self_attn.renamed.weight"] = try XCTUnwrap(
      header.removeValue(forKey: "model.layers.1.self_attn.q_norm.weight"))
    var json = try JSONSerialization.data(withJSONObject: header)
    while json.count < headerLength { json.append(0x20) }
    var out = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    out.append(data.subdata(in: (8 + headerLength)..<data.count))
    try out.write(to: tmp.appendingPathComponent("model.safetensors"))
    let session = Session(options: EngineOptions(threads: 2, modelDirectories: []))
    XCTAssertThrowsError(try session.load(tmp.path)) {
      let line = "\($0)"
      XCTAssertTrue(line.contains("model.layers.1.self_attn.q_norm.weight"), line)
      XCTAssertFalse(line.contains("\n"), line)
    }
    XCTAssertNil(session.model)
  }
}

import Foundation
import KVTensor
import XCTest

@testable import KVModels

// Files written by the `safetensors` Python package and transformers' save_pretrained
// (scripts/gen_safetensors_fixtures.py); hostile headers are built here.

private func fixture(_ name: String) -> String {
  Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    .appendingPathComponent("safetensors").appendingPathComponent(name).path
}

private struct DTypesExpected: Decodable {
  struct Tensor: Decodable {
    let name: String
    let dtype: String
    let shape: [Int]
    let data_offsets: [Int]
    let bits: [UInt32]?
  }
  let safetensors_header_length: Int
  let metadata: [String: String]
  let tensors: [Tensor]
}

private struct TinyExpected: Decodable {
  struct Tensor: Decodable {
    let shape: [Int]
    let sha256: String
  }
  let files: [String]
  let tensors: [String: Tensor]
}

final class SafetensorsTests: XCTestCase {
  func testEveryDTypeMatchesTorchBitwise() throws {
    let expected = try JSONDecoder().decode(
      DTypesExpected.self,
      from: Data(contentsOf: URL(fileURLWithPath: fixture("dtypes.expected.json"))))
    let file = try SafetensorsFile(path: fixture("dtypes.safetensors"))
    XCTAssertEqual(file.metadata, expected.metadata)
    XCTAssertEqual(file.dataOffset, 8 + expected.safetensors_header_length)
    XCTAssertEqual(Set(file.tensorNames), Set(expected.tensors.map(\.name)))
    for t in expected.tensors {
      let info = try file.tensor(t.name)
      XCTAssertEqual(info.dtype.rawValue, t.dtype, t.name)
      XCTAssertEqual(info.shape, t.shape, t.name)
      XCTAssertEqual(
        [info.dataOffsets.lowerBound, info.dataOffsets.upperBound], t.data_offsets, t.name)
      if let bits = t.bits {
        let values = try file.floats(t.name)
        XCTAssertEqual(values.map(\.bitPattern), bits, t.name)  // NaN payloads included
        let buffer = try file.loaded(t.name, category: .weights, meter: nil)
        XCTAssertEqual(buffer.array.map(\.bitPattern), bits, t.name)
      } else {
        XCTAssertThrowsError(try file.floats(t.name)) {
          XCTAssertEqual(
            "\($0)",
            "\(fixture("dtypes.safetensors")): tensor '\(t.name)' is \(t.dtype); kvlab converts F32, F16 and BF16 to float32"
          )
        }
      }
    }
    XCTAssertEqual(try file.tensor("f32.scalar").elementCount, 1)
    XCTAssertEqual(try file.floats("f32.scalar"), [3.25])
    XCTAssertEqual(try file.floats("bf16.empty"), [])
    XCTAssertEqual(Array(try file.bytes("u8.bytes")), [0, 7, 255])
  }

  func testMeteredLoadCountsTheBytes() throws {
    let file = try SafetensorsFile(path: fixture("dtypes.safetensors"))
    let meter = MemoryMeter()
    do {
      let b = try file.loaded("f32.odd", category: .weights, meter: meter)
      XCTAssertEqual(meter.reading(.weights).current, b.byteCount)
      XCTAssertEqual(b.count, 105)
    }
    XCTAssertEqual(meter.reading(.weights).current, 0)
    XCTAssertEqual(meter.reading(.weights).highWater, 105 * 4)
  }

  func testShardedHuggingFaceFolder() throws {
    let expected = try JSONDecoder().decode(
      TinyExpected.self,
      from: Data(contentsOf: URL(fileURLWithPath: fixture("tiny_llama.expected.json"))))
    let folder = try HFModelFolder(path: fixture("tiny_llama"))
    XCTAssertEqual(folder.modelType, "llama")
    XCTAssertEqual(folder.architectures, ["LlamaForCausalLM"])
    XCTAssertEqual(folder.files.count, expected.files.filter { $0.hasSuffix(".safetensors") }.count)
    XCTAssertGreaterThan(folder.files.count, 1)
    XCTAssertEqual(folder.tensorNames, expected.tensors.keys.sorted())
    for (name, t) in expected.tensors {
      let values = try folder.floats(name, shape: t.shape)
      XCTAssertEqual(sha256Hex(values), t.sha256, name)
    }
    let config = try folder.decodeConfig(DecoderConfig.self)
    XCTAssertEqual(config.hiddenSize, 16)
    XCTAssertEqual(config.kvHeads, 2)
    XCTAssertEqual(config.ropeTheta, 10000)
    XCTAssertThrowsError(try folder.checkedTensor("model.norm.weight", shape: [17])) {
      XCTAssertTrue(
        "\($0)".hasSuffix(
          ": tensor 'model.norm.weight' has shape [16], but config.json implies [17]"), "\($0)")
    }
    XCTAssertThrowsError(try folder.floats("lm_head.bias")) {
      XCTAssertEqual(
        "\($0)",
        "\(fixture("tiny_llama")): no tensor named 'lm_head.bias' in the model's safetensors")
    }
    XCTAssertNil(try folder.imagePreprocessor())
  }

  /// config.json of the three VLM families transformers 5.24 writes: family detection and the
  /// nested text_config decoding the architectures will build on.
  func testVLMConfigs() throws {
    let dir = try makeTemporaryFolder(self)
    for (name, type, arch) in [
      ("qwen2_vl", "qwen2_vl", "Qwen2VLForConditionalGeneration"),
      ("llava", "llava", "LlavaForConditionalGeneration"),
      ("idefics3", "idefics3", "Idefics3ForConditionalGeneration"),
    ] {
      let model = (dir as NSString).appendingPathComponent(name)
      try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
      try FileManager.default.copyItem(
        atPath: fixture("configs/\(name).json"),
        toPath: (model as NSString).appendingPathComponent("config.json"))
      try FileManager.default.copyItem(
        atPath: fixture("dtypes.safetensors"),
        toPath: (model as NSString).appendingPathComponent("model.safetensors"))
      let folder = try HFModelFolder(path: model)
      XCTAssertEqual(folder.modelType, type)
      XCTAssertEqual(folder.architectures, [arch], name)
      let text = try folder.decodeConfig(DecoderConfig.self, at: "text_config")
      XCTAssertEqual(text.hiddenSize, 32, name)
      XCTAssertEqual(text.layers, 2, name)
      XCTAssertEqual(text.kvHeads, 2, name)
      XCTAssertNotNil(folder.config["vision_config"]?.object, name)
    }
  }

  // MARK: - hostile files

  private func write(_ bytes: [UInt8]) throws -> String {
    let dir = try makeTemporaryFolder(self)
    let path = (dir as NSString).appendingPathComponent("model.safetensors")
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
  }

  /// A file with this header text and `data` bytes of data.
  private func file(header: String, data: Int) -> [UInt8] {
    let h = Array(header.utf8)
    return (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h
      + [UInt8](repeating: 0, count: data)
  }

  private func openError(_ bytes: [UInt8]) throws -> String? {
    let path = try write(bytes)
    do {
      _ = try SafetensorsFile(path: path)
      return nil
    } catch let e as SafetensorsError {
      XCTAssertEqual(e.path, path)
      XCTAssertFalse(e.description.contains("\n"))
      return e.message
    }
  }

  func testHostileHeaders() throws {
    let f32x6 = #""dtype": "F32", "shape": [2, 3]"#
    let cases: [(String, [UInt8], String)] = [
      (
        "short file", [1, 0, 0, 0, 0],
        "file too short to be safetensors: 5 bytes (the header length alone is 8)"
      ),
      (
        "absurd length", [0, 0, 0, 0, 0, 1, 0, 0] + Array("{}".utf8),
        "header length 1099511627776 is absurd (the format's limit is 100000000 bytes)"
      ),
      (
        "length past EOF", [0xE8, 0x03, 0, 0, 0, 0, 0, 0] + Array("{}".utf8),
        "header length 1000 runs past the end of the file (10 bytes)"
      ),
      (
        "not JSON at all", file(header: "GGUF....", data: 0),
        "header does not start with '{' (not a safetensors file?)"
      ),
      (
        "bad JSON", file(header: #"{"w": {"dtype": "F32", "#, data: 0),
        "header is not valid JSON (line 1, column 24: \"w\": expected a key (a string), found the end of the file)"
      ),
      (
        "a number past a double",
        file(header: #"{"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}"#, data: 4),
        "header is line 1, column 34: \"w.shape\": 1e400 is not a finite number (past the range of a double)"
      ),
      (
        "a name given twice: the last entry counts (4 bytes, not 8)",
        file(
          header:
            #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
          data: 8),
        "the data section has 4 bytes after the last tensor (8 bytes, tensors end at 4)"
      ),
      (
        "unknown dtype",
        file(header: #"{"w": {"dtype": "F13", "shape": [1], "data_offsets": [0, 4]}}"#, data: 4),
        "tensor 'w': unknown dtype 'F13'"
      ),
      (
        "dtype not a string",
        file(header: #"{"w": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}}"#, data: 4),
        "tensor 'w': \"dtype\" must be a string, got 4"
      ),
      (
        "no shape", file(header: #"{"w": {"dtype": "F32", "data_offsets": [0, 4]}}"#, data: 4),
        "tensor 'w': no \"shape\""
      ),
      (
        "negative dim",
        file(
          header: #"{"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]}}"#, data: 4),
        "tensor 'w': \"shape\" must be a list of non-negative integers, got [2, -3]"
      ),
      (
        "fractional dim",
        file(header: #"{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, data: 4),
        "tensor 'w': \"shape\" must be a list of non-negative integers, got [1.5]"
      ),
      (
        "no offsets", file(header: #"{"w": {"dtype": "F32", "shape": [1]}}"#, data: 4),
        "tensor 'w': no \"data_offsets\""
      ),
      (
        "three offsets",
        file(header: #"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}"#, data: 4),
        "tensor 'w': \"data_offsets\" must be two non-negative integers, got [0, 4, 8]"
      ),
      (
        "reversed offsets",
        file(header: #"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}"#, data: 4),
        "tensor 'w': data_offsets [4, 0] end before they begin"
      ),
      (
        "size mismatch", file(header: #"{"w": {\#(f32x6), "data_offsets": [0, 20]}}"#, data: 20),
        "tensor 'w': shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] span 20"
      ),
      (
        "BF16 counted as 4 bytes",
        file(header: #"{"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 12]}}"#, data: 12),
        "tensor 'w': shape [3] of BF16 needs 6 bytes, but data_offsets [0, 12] span 12"
      ),
      (
        "overflowing shape",
        file(
          header:
            #"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#,
          data: 4),
        "tensor 'w': shape [4294967296, 4294967296] is too large"
      ),
      (
        "past the end", file(header: #"{"w": {\#(f32x6), "data_offsets": [0, 24]}}"#, data: 16),
        "tensor 'w': data_offsets [0, 24] run past the end of the data section (16 bytes)"
      ),
      (
        "huge offsets",
        file(
          header:
            #"{"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}}"#,
          data: 1),
        "tensor 'w': \"data_offsets\" must be two non-negative integers, got [1.8446744073709552e+19, 1.8446744073709552e+19]"
      ),
      (
        "overlap",
        file(
          header:
            #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#,
          data: 24),
        "tensors 'a' (bytes 0..<16) and 'b' (bytes 8..<24) overlap"
      ),
      (
        "gap",
        file(
          header:
            #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [20, 24]}}"#,
          data: 24),
        "bytes 16..<20 of the data section belong to no tensor (the format allows no gaps)"
      ),
      (
        "trailing bytes",
        file(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, data: 12),
        "the data section has 8 bytes after the last tensor (12 bytes, tensors end at 4)"
      ),
      (
        "entry not an object", file(header: #"{"w": [1, 2]}"#, data: 0),
        "tensor 'w': entry is not an object"
      ),
      (
        "metadata not strings",
        file(header: #"{"__metadata__": {"format": "pt", "n": 3}}"#, data: 0),
        "__metadata__ 'n' must be a string, got 3"
      ),
      (
        "metadata not an object", file(header: #"{"__metadata__": "pt"}"#, data: 0),
        "__metadata__ must be an object of strings"
      ),
      (
        "control characters in a name",
        file(
          header: "{\"evil\\nname\": {\"dtype\": \"X\", \"shape\": [], \"data_offsets\": [0, 0]}}",
          data: 0),
        "tensor 'evil\\nname': unknown dtype 'X'"
      ),
    ]
    for (what, bytes, expected) in cases {
      XCTAssertEqual(try openError(bytes), expected, what)
    }
    // Valid edge cases: no tensors at all; __metadata__ only; zero-size tensors; header padding.
    XCTAssertNil(try openError(file(header: "{}", data: 0)))
    XCTAssertNil(try openError(file(header: #"{"__metadata__": {"a": "b"}}     "#, data: 0)))
    XCTAssertNil(
      try openError(
        file(
          header:
            #"{"e": {"dtype": "F16", "shape": [0, 5], "data_offsets": [0, 0]}, "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}"#,
          data: 4)))
  }

  func testMissingAndUnreadableFiles() throws {
    XCTAssertThrowsError(try SafetensorsFile(path: "/no/such/model.safetensors")) {
      XCTAssertEqual("\($0)", "/no/such/model.safetensors: cannot open: No such file or directory")
    }
    let dir = try makeTemporaryFolder(self)
    XCTAssertThrowsError(try SafetensorsFile(path: dir)) {
      XCTAssertEqual("\($0)", "\(dir): not a regular file")
    }
  }

  func testBrokenFolders() throws {
    let fm = FileManager.default
    func copyOfTinyLlama() throws -> String {
      let dir = (try makeTemporaryFolder(self) as NSString).appendingPathComponent("tiny")
      try fm.copyItem(atPath: fixture("tiny_llama"), toPath: dir)
      return dir
    }
    func error(_ path: String) -> String {
      do {
        _ = try HFModelFolder(path: path)
        return "opened"
      } catch {
        return "\(error)".replacingOccurrences(of: path, with: "<dir>")
      }
    }
    let missingShard = try copyOfTinyLlama()
    let shard = try XCTUnwrap(
      try fm.contentsOfDirectory(atPath: missingShard).sorted().first {
        $0.hasPrefix("model-00002")
      })
    let index = try HFModelFolder.readJSONObject(
      (missingShard as NSString).appendingPathComponent("model.safetensors.index.json"))
    let inShard = index["weight_map"]!.object!.values.filter { $0.string == shard }.count
    try fm.removeItem(atPath: (missingShard as NSString).appendingPathComponent(shard))
    XCTAssertEqual(
      error(missingShard),
      "<dir>: missing safetensors shard '\(shard)' (model.safetensors.index.json places \(inShard) tensors there)"
    )

    let noConfig = try copyOfTinyLlama()
    try fm.removeItem(atPath: (noConfig as NSString).appendingPathComponent("config.json"))
    XCTAssertEqual(error(noConfig), "<dir>: no config.json in this folder")

    let badConfig = try copyOfTinyLlama()
    try Data("{\"model_type\": ".utf8).write(
      to: URL(fileURLWithPath: (badConfig as NSString).appendingPathComponent("config.json")))
    XCTAssertEqual(
      error(badConfig),
      "<dir>/config.json: not valid JSON (line 1, column 16: \"model_type\": expected a value, found the end of the file)"
    )

    let noWeights = try makeTemporaryFolder(self)
    try fm.copyItem(
      atPath: fixture("tiny_llama/config.json"),
      toPath: (noWeights as NSString).appendingPathComponent("config.json"))
    XCTAssertEqual(
      error(noWeights),
      "<dir>: no model.safetensors, model.safetensors.index.json or other *.safetensors in this folder"
    )

    let wrongIndex = try copyOfTinyLlama()
    let indexPath = (wrongIndex as NSString).appendingPathComponent("model.safetensors.index.json")
    var text = try String(contentsOfFile: indexPath, encoding: .utf8)
    let firstShard = "model-00001-of-"
    let otherShard = "model-00002-of-"
    // Point every tensor of shard 1 at shard 2.
    text = text.replacingOccurrences(of: firstShard, with: otherShard)
    try Data(text.utf8).write(to: URL(fileURLWithPath: indexPath))
    let m = error(wrongIndex)
    XCTAssertTrue(
      m.hasPrefix("<dir>: model.safetensors.index.json places tensor '")
        && m.hasSuffix("which has no such tensor"), m)

    let escaping = try copyOfTinyLlama()
    let escapingIndex = (escaping as NSString).appendingPathComponent(
      "model.safetensors.index.json")
    try Data(#"{"weight_map": {"w": "../../etc/passwd"}}"#.utf8).write(
      to: URL(fileURLWithPath: escapingIndex))
    XCTAssertEqual(
      error(escaping),
      "<dir>/model.safetensors.index.json: shard name '../../etc/passwd' is not a plain file name")

    XCTAssertEqual(error("/no/such/model"), "<dir>: no such folder")
  }

  func testConfigDecodingErrorsNameTheKey() throws {
    let dir = try makeTemporaryFolder(self)
    try Data(
      #"{"model_type": "llava", "text_config": {"model_type": "llama", "hidden_size": "big"}}"#.utf8
    )
    .write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("config.json")))
    try FileManager.default.copyItem(
      atPath: fixture("dtypes.safetensors"),
      toPath: (dir as NSString).appendingPathComponent("model.safetensors"))
    let folder = try HFModelFolder(path: dir)
    XCTAssertThrowsError(try folder.decodeConfig(DecoderConfig.self, at: "text_config")) {
      XCTAssertEqual(
        "\($0)", "\(dir)/config.json: \"text_config\": \"hidden_size\" has the wrong type")
    }
    XCTAssertThrowsError(try folder.decodeConfig(DecoderConfig.self, at: "vision_config")) {
      XCTAssertEqual("\($0)", "\(dir)/config.json: no \"vision_config\" object")
    }
    XCTAssertThrowsError(try folder.decodeConfig(DecoderConfig.self)) {
      XCTAssertEqual("\($0)", "\(dir)/config.json: missing \"hidden_size\"")
    }
  }
}

import Foundation
import KVModels
import XCTest

@testable import KVRepl

/// Bad images, clips and model folders through the REPL: each gives its one-line error, the
/// REPL keeps running, and what the session held is untouched (same context, same answer).
final class VisionBadInputTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  /// A REPL with the tiny LLaVA loaded and one image fed; `line` must fail with `message`
  /// (the temporary folder's path written as `$T`) and leave the context as it was.
  func expect(
    _ line: String, _ message: String, model: String = "llava",
    setUp: (String) throws -> Void = { _ in },
    file: StaticString = #filePath, lineNumber: UInt = #line
  ) throws {
    let (repl, out) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    try setUp(folder)
    XCTAssertEqual(
      repl.run(line: "load \(Self.vlm)/\(model)/model"), .ok, out.text, file: file, line: lineNumber
    )
    XCTAssertEqual(
      repl.run(line: "feed image \(Self.vlm)/images/img_33x33.png"), .ok, out.text, file: file,
      line: lineNumber)
    let context = repl.session.context
    XCTAssertEqual(
      output(of: line, in: repl, out, expecting: .failed, file: file, line: lineNumber),
      message + "\n", file: file, line: lineNumber)
    XCTAssertEqual(
      repl.session.context, context, "the context changed", file: file, line: lineNumber)
    XCTAssertEqual(repl.run(line: "show tokens"), .ok, file: file, line: lineNumber)
  }

  static func png(width: UInt32, height: UInt32) -> Data {
    func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
      let t = Array(type.utf8)
      var len = UInt32(body.count).bigEndian
      var crc: UInt32 = 0xFFFF_FFFF  // PNG's CRC-32 (polynomial 0xEDB88320), bit by bit
      for byte in t + body {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
      }
      crc ^= 0xFFFF_FFFF
      var c = crc.bigEndian
      return withUnsafeBytes(of: &len, Array.init) + t + body + withUnsafeBytes(of: &c, Array.init)
    }
    var w = width.bigEndian
    var h = height.bigEndian
    let ihdr =
      withUnsafeBytes(of: &w, Array.init) + withUnsafeBytes(of: &h, Array.init) + [8, 2, 0, 0, 0]
    return Data(
      [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IEND", []))
  }

  func testTruncatedImage() throws {
    try expect(
      "feed image t.png",
      "error: feed image: t.png: corrupt or truncated PNG: read beyond end of data"
    ) {
      let whole = try Data(contentsOf: URL(fileURLWithPath: Self.vlm + "/images/img_70x40.png"))
      try whole.prefix(100).write(to: URL(fileURLWithPath: $0 + "/t.png"))
    }
  }

  func testNotAnImage() throws {
    try expect(
      "feed image n.png",
      #"error: feed image: n.png: not a PNG, JPEG or binary PPM/PGM image (first bytes: 68 65 6c 6c 6f 0a "hello.")"#
    ) { try "hello\n".write(toFile: $0 + "/n.png", atomically: true, encoding: .utf8) }
  }

  func testUnreadableImage() throws {
    try expect(
      "feed image missing.png",
      "error: feed image: missing.png: cannot open: No such file or directory")
  }

  func testZeroSizeImage() throws {
    try expect("feed image z.png", "error: feed image: z.png: zero-size image (0×10)") {
      try Self.png(width: 0, height: 10).write(to: URL(fileURLWithPath: $0 + "/z.png"))
    }
  }

  func testHugeImageHeader() throws {
    try expect(
      "feed image h.png",
      "error: feed image: h.png: image is 100000×100000 = 10000000000 pixels, more than the limit of 100000000"
    ) {
      try Self.png(width: 100_000, height: 100_000).write(to: URL(fileURLWithPath: $0 + "/h.png"))
    }
  }

  func testFolderWithoutImages() throws {
    try expect(
      "feed frames empty",
      "error: feed frames: empty: no images in this folder (PNG, JPEG or binary PPM/PGM, recognised by their first bytes; 1 other entry skipped)"
    ) {
      try FileManager.default.createDirectory(
        atPath: $0 + "/empty", withIntermediateDirectories: true)
      try "x".write(toFile: $0 + "/empty/notes.txt", atomically: true, encoding: .utf8)
    }
  }

  func testMissingClip() throws {
    try expect("feed frames nope.mp4", "error: feed frames: nope.mp4: no such file or folder")
  }

  /// A video needs ffmpeg: without it, the message says so; with it, ffprobe's own complaint
  /// about a file that is not a video.
  func testVideoWithoutFFmpeg() throws {
    let write: (String) throws -> Void = {
      try "not a video".write(toFile: $0 + "/clip.mp4", atomically: true, encoding: .utf8)
    }
    guard Frames.findFFmpeg() != nil else {
      return try expect(
        "feed frames clip.mp4", "error: feed frames: clip.mp4: " + Frames.ffmpegMissing,
        setUp: write)
    }
    let (repl, out) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    try write(folder)
    XCTAssertEqual(repl.run(line: "load \(Self.vlm)/llava/model"), .ok)
    XCTAssertEqual(repl.run(line: "feed frames clip.mp4"), .failed)
    XCTAssertEqual(
      out.lines.last,
      "error: feed frames: clip.mp4: not a video ffmpeg can read (Invalid data found when processing input)")
  }

  func testSplitOnANonIdefics3Model() throws {
    try expect(
      "feed image \(Self.vlm)/images/img_33x33.png split=off",
      "error: feed image: split= applies to models that tile images (idefics3, smolvlm)")
  }

  func testImageIntoATextModel() throws {
    let (repl, out) = makeRepl()
    XCTAssertEqual(repl.run(line: "load"), .ok)
    XCTAssertEqual(repl.run(line: "feed image \(Self.vlm)/images/img_33x33.png"), .failed)
    XCTAssertTrue(
      out.text.hasSuffix(
        "error: feed image: the loaded model has no vision tower (load a vision-language model folder: idefics3, llava, qwen2_vl, qwen2_5_vl, internvl)\n"
      ),
      out.text)
  }

  // MARK: model folders

  /// `line` (a load) fails with `message`; the REPL then loads a good model.
  func expectLoad(
    _ line: String, _ message: String, setUp: (String) throws -> Void,
    file: StaticString = #filePath, lineNumber: UInt = #line
  ) throws {
    let (repl, out) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    try setUp(folder)
    XCTAssertEqual(repl.run(line: line), .failed, file: file, line: lineNumber)
    XCTAssertEqual(
      out.text, message + "\n", file: file, line: lineNumber)
    XCTAssertEqual(
      repl.run(line: "load \(Self.vlm)/llava/model"), .ok, out.text, file: file, line: lineNumber)
  }

  /// A copy of a fixture model folder in the temporary folder, edited by `edit`.
  func brokenCopy(_ family: String, into folder: String, edit: (String) throws -> Void) throws {
    let copy = folder + "/m"
    try FileManager.default.copyItem(atPath: "\(Self.vlm)/\(family)/model", toPath: copy)
    try edit(copy)
  }

  func editConfig(_ path: String, _ change: (inout [String: Any]) -> Void) throws {
    let url = URL(fileURLWithPath: path + "/config.json")
    var config = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    change(&config)
    try JSONSerialization.data(withJSONObject: config).write(to: url)
  }

  func testUnsupportedArchitecture() throws {
    try expectLoad(
      "load m",
      "error: load: m/config.json: model_type 'blip2' is not a supported architecture (llama, qwen2, qwen3, idefics3, smolvlm, llava, qwen2_vl, qwen2_5_vl, internvl)"
    ) {
      try self.brokenCopy("llava", into: $0) {
        try self.editConfig($0) { $0["model_type"] = "blip2" }
      }
    }
  }

  /// Qwen2.5-VL's vision config: keys it cannot do without, values it cannot use, and a config
  /// that disagrees with the weights.
  func testQwen25VLConfigErrors() throws {
    func vision(_ change: @escaping (inout [String: Any]) -> Void) -> (String) throws -> Void {
      { folder in
        try self.brokenCopy("qwen2_5_vl", into: folder) { m in
          try self.editConfig(m) { c in
            var v = c["vision_config"] as! [String: Any]
            change(&v)
            c["vision_config"] = v
          }
        }
      }
    }
    let cases: [(String, (inout [String: Any]) -> Void)] = [
      (#"m/config.json: "vision_config": missing "window_size""#, { $0["window_size"] = nil }),
      (
        #"m/config.json: "vision_config": missing "fullatt_block_indexes""#,
        { $0["fullatt_block_indexes"] = nil }
      ),
      (
        #"m/config.json: "vision_config": missing "tokens_per_second""#,
        { $0["tokens_per_second"] = nil }
      ),
      (
        "m/config.json: vision_config.window_size 4 is smaller than one merged patch (4·2 pixels)",
        { $0["window_size"] = 4 }
      ),
      (
        "m/config.json: vision_config.fullatt_block_indexes holds 3, but the tower has 3 blocks",
        { $0["fullatt_block_indexes"] = [1, 3] }
      ),
      (
        "m/config.json: vision_config.hidden_act 'gelu' is not supported (silu)",
        { $0["hidden_act"] = "gelu" }
      ),
      (
        "m/config.json: vision out_hidden_size 48 differs from the decoder's 32",
        { $0["out_hidden_size"] = 48 }
      ),
      (
        "m/model.safetensors: tensor 'visual.blocks.0.mlp.gate_proj.weight' has shape [24, 16], but config.json implies [40, 16]",
        { $0["intermediate_size"] = 40 }
      ),
    ]
    for (message, change) in cases {
      try expectLoad("load m", "error: load: " + message, setUp: vision(change))
    }
  }

  func testShapeMismatchBetweenConfigAndWeights() throws {
    try expectLoad(
      "load m",
      "error: load: m/model.safetensors: tensor 'vision_tower.vision_model.embeddings.class_embedding' has shape [32], but config.json implies [48]"
    ) {
      try self.brokenCopy("llava", into: $0) { m in
        try self.editConfig(m) { c in
          var v = c["vision_config"] as! [String: Any]
          v["hidden_size"] = 48
          c["vision_config"] = v
        }
      }
    }
  }

  func testMissingShard() throws {
    try expectLoad(
      "load m",
      "error: load: m: missing safetensors shard 'model-00002-of-00002.safetensors' (model.safetensors.index.json places 1 tensor there)"
    ) {
      try self.brokenCopy("qwen2_vl", into: $0) { m in
        let shard = "model-00001-of-00002.safetensors"
        try FileManager.default.moveItem(atPath: m + "/model.safetensors", toPath: m + "/" + shard)
        let index: [String: Any] = [
          "metadata": [:],
          "weight_map": [
            "model.embed_tokens.weight": shard,
            "visual.merger.ln_q.weight": "model-00002-of-00002.safetensors",
          ],
        ]
        try JSONSerialization.data(withJSONObject: index).write(
          to: URL(fileURLWithPath: m + "/model.safetensors.index.json"))
      }
    }
  }

  func testMissingTokenizer() throws {
    try expectLoad("load m", "error: load: m: no tokenizer.json in this folder") {
      try self.brokenCopy("idefics3", into: $0) {
        try FileManager.default.removeItem(atPath: $0 + "/tokenizer.json")
      }
    }
  }
}

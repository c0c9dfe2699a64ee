import Foundation
import KVEngine
import KVTensor
import XCTest

@testable import KVRepl

/// The tiny InternVL fixture (scripts/gen_internvl_fixtures.py) driven through the REPL: the
/// prompt `feed image`, `feed frames` and `ask` build is the fixture's image-and-clip case, so
/// `logits out=` must give transformers' logits and `ask` its greedy tokens; one tile or frame is
/// one visual unit under a capped budget; bad folders give one-line errors.
final class InternVLReplTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  struct Case: Decodable {
    let name: String
    let input_ids: [Int]
    let greedy: [Int]
    let files: [String: String]
  }
  struct Cases: Decodable { let cases: [Case] }

  func testImageAndClipMatchTransformersThroughTheRepl() throws {
    for shape in ["internvl", "internvl_qwen3"] {
      let base = "\(Self.vlm)/\(shape)"
      let c = try XCTUnwrap(
        try JSONDecoder().decode(
          Cases.self, from: Data(contentsOf: URL(fileURLWithPath: base + "/cases.json"))
        ).cases.first { $0.name == "image_and_clip" })
      let (r, out) = makeRepl()
      let folder = temporaryFolder(self)
      r.workingDirectory = folder
      func run(_ line: String) -> String { output(of: line, in: r, out) }
      let tile = shape == "internvl" ? 32 : 24
      XCTAssertTrue(run("load \(base)/model").contains("internvl"), out.text)
      _ = run("feed image \(Self.vlm)/images/photo_39x53.png")
      let clip = run("feed frames \(Self.vlm)/images/clip\(tile)")
      XCTAssertTrue(clip.contains(": 4 tiles, "), clip)
      _ = run("ask \"Describe the image and the video.\" max=8")
      let context = r.session.context
      XCTAssertEqual(Array(context.prefix(c.input_ids.count)), c.input_ids, "\(shape): prompt ids")
      // The 8 answer tokens (the turn's end marker follows them in the context).
      let generated = Array(context.dropFirst(c.input_ids.count).prefix(c.greedy.count))
      XCTAssertEqual(generated, c.greedy, "\(shape): greedy")
      _ = run("logits out=l.npy")
      let mine = try NPYReader.read(folder + "/l.npy")
      let reference = try NPYReader.read("\(base)/\(try XCTUnwrap(c.files["logits"]))")
      let vocab = reference.shape[1]
      XCTAssertEqual(mine.shape, [context.count, vocab])
      var worst: Float = 0
      for i in 0..<(c.input_ids.count * vocab) {
        worst = max(worst, abs(mine.values[i] - reference.values[i]))
      }
      XCTAssertLessThanOrEqual(worst, 1e-4, "\(shape): logits through the REPL")
      print("repl parity \(shape): \(c.input_ids.count) positions, max |Δlogit| \(worst)")
    }
  }

  /// Under a capped budget with block=tile (or frame) a multi-tile image and a clip are fed one
  /// tile or frame per block, the vision tower run per block; the budget holds.
  func testTilesAndFramesAreUnitsUnderABudget() throws {
    for block in ["tile", "frame"] {
      let (r, out) = makeRepl()
      func run(_ line: String) -> String { output(of: line, in: r, out) }
      _ = run("load \(Self.vlm)/internvl/model")
      let info = run("info model")
      XCTAssertTrue(info.contains("tile 32×32 → 16 tokens"), info)
      _ = run("policy keydiff")
      _ = run("budget 40 tokens")
      _ = run("prefill mode=capped block=\(block)")
      // 77×45 → a 3×2 grid of 32-pixel tiles and a thumbnail.
      let image = run("feed image \(Self.vlm)/images/photo_77x45.png")
      XCTAssertTrue(image.contains(": 7 tiles, 112 visual + "), image)
      let clip = run("feed frames \(Self.vlm)/images/clip32")
      XCTAssertTrue(clip.contains(": 4 tiles, 64 visual + "), clip)
      let tokens = run("show tokens")
      XCTAssertTrue(tokens.contains("video") && tokens.contains("image"), tokens)
      XCTAssertFalse(run("cache map").isEmpty)
      _ = run("ask \"What changes?\" max=4")
      let summary = try XCTUnwrap(r.session.cacheSummary)
      XCTAssertLessThanOrEqual(summary.tokens, 40, block)
      XCTAssertGreaterThan(r.session.context.count, 176, block)
      // The KV memory never held more than the budget, tile by tile.
      let bytesPerToken = try XCTUnwrap(r.session.model).config.kvBytesPerToken
      XCTAssertLessThanOrEqual(r.session.meter.reading(.kv).highWater, 40 * bytesPerToken, block)
    }
  }
}

extension VisionBadInputTests {
  /// InternVL folders that cannot be used: a missing vision key, a tile size the tower cannot
  /// take, a config that disagrees with the weights, a decoder it does not run.
  func testInternVLFolderErrors() throws {
    func edit(_ change: @escaping (inout [String: Any]) -> Void) -> (String) throws -> Void {
      { folder in
        try self.brokenCopy("internvl", into: folder) { m in try self.editConfig(m, change) }
      }
    }
    func vision(_ change: @escaping (inout [String: Any]) -> Void) -> (String) throws -> Void {
      edit { c in
        var v = c["vision_config"] as! [String: Any]
        change(&v)
        c["vision_config"] = v
      }
    }
    let cases: [(String, (String) throws -> Void)] = [
      (#"m/config.json: "vision_config": missing "hidden_size""#, vision { $0["hidden_size"] = nil }),
      (
        "m/config.json: vision_config.image_size 30 is not a multiple of patch_size 4",
        vision { $0["image_size"] = [30, 30] }
      ),
      (
        "m/model.safetensors: tensor 'vision_tower.encoder.layer.0.mlp.fc1.weight' has shape [64, 32], but config.json implies [80, 32]",
        vision { $0["intermediate_size"] = 80 }
      ),
      (
        "m/config.json: image_seq_length 64 differs from the 16 tokens a 32-pixel tile makes",
        edit { $0["image_seq_length"] = 64 }
      ),
      (
        "m/preprocessor_config.json: tile size 40 differs from the vision tower's image_size 32",
        { folder in
          try self.brokenCopy("internvl", into: folder) { m in
            let url = URL(fileURLWithPath: m + "/preprocessor_config.json")
            var p = try XCTUnwrap(
              JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            p["size"] = ["height": 40, "width": 40]
            try JSONSerialization.data(withJSONObject: p).write(to: url)
          }
        }
      ),
    ]
    for (message, setUp) in cases {
      try expectLoad("load m", "error: load: " + message, setUp: setUp)
    }
  }

  /// A bad image fed to a loaded InternVL leaves its context as it was.
  func testTruncatedImageIntoInternVL() throws {
    try expect(
      "feed image t.png",
      "error: feed image: t.png: corrupt or truncated PNG: read beyond end of data",
      model: "internvl"
    ) {
      let whole = try Data(contentsOf: URL(fileURLWithPath: Self.vlm + "/images/img_70x40.png"))
      try whole.prefix(100).write(to: URL(fileURLWithPath: $0 + "/t.png"))
    }
  }
}

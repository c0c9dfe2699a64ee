import Foundation
import KVEngine
import XCTest

@testable import KVRepl

/// The tiny Qwen2.5-VL fixture driven through the REPL: an image is one visual unit (one
/// temporal patch) and four frames are two, whatever the prefill block; `info model`,
/// `show tokens` and `cache map` describe what was fed; a capped budget holds.
final class Qwen25ReplTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  func testImageAndFramesThroughTheRepl() throws {
    for block in ["tile", "frame"] {
      let (r, out) = makeRepl()
      func run(_ line: String) -> String { output(of: line, in: r, out) }
      _ = run("load \(Self.vlm)/qwen2_5_vl/model")
      let info = run("info model")
      XCTAssertTrue(info.contains("qwen2_5_vl"), info)
      XCTAssertTrue(info.contains("one token per 8×8 pixels"), info)
      _ = run("policy keydiff")
      _ = run("budget 40 tokens")
      _ = run("prefill mode=capped block=\(block)")
      // 45×61 → 24×32 pixels: 3×4 tokens; the 32×24 clip: 2 temporal patches of 4×3 tokens.
      let image = run("feed image \(Self.vlm)/images/img_45x61.png")
      XCTAssertTrue(image.contains(": 1 temporal patch, 12 visual + "), image)
      let clip = run("feed frames \(Self.vlm)/images/clip")
      XCTAssertTrue(clip.contains(": 2 temporal patches, 24 visual + "), clip)
      let tokens = run("show tokens")
      XCTAssertTrue(tokens.contains("video"), tokens)
      XCTAssertTrue(tokens.contains("image"), tokens)
      let map = run("cache map")
      XCTAssertFalse(map.isEmpty)
      _ = run("ask \"What changes?\"")
      let summary = try XCTUnwrap(r.session.cacheSummary)
      XCTAssertLessThanOrEqual(summary.tokens, 40, block)
      XCTAssertGreaterThan(r.session.context.count, 40, block)
    }
  }
}

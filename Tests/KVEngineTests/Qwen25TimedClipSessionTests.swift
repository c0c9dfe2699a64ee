import Foundation
import KVModels
import XCTest

@testable import KVEngine

/// Qwen2.5-VL clips with a frame rate through the session (`feed frames` has none, so the feed
/// is made here as `feed video` makes it, with the clip's times). A slow clip's temporal M-RoPE
/// positions reach past the text after it; transformers 5.24's `generate` still continues from
/// the prompt's last position (a bare forward with a cache would continue past the largest,
/// `rope_deltas`, and decode other tokens), and so must `ask`.
final class Qwen25TimedClipSessionTests: XCTestCase {
  struct Case: Decodable {
    struct Message: Decodable {
      struct Item: Decodable {
        let type: String
        let text: String?
      }
      let content: [Item]
    }
    let name: String
    let messages: [Message]
    let images: [String]
    let video_frames: [String]?
    let video_fps: Double?
    let input_ids: [Int]
    let position_ids: [[Int]]
    let rope_deltas: Int
    let greedy: [Int]
    let greedy_rope_deltas: [Int]?
  }
  struct Cases: Decodable { let cases: [Case] }

  static let dir = TestPaths.fixtures + "/vlm"

  /// The 0.5 fps clip: temporal positions 0, 8, 16, 24 from the clip's start pass the closing
  /// text's, and the two continuations differ.
  func testSlowClipReplyMatchesTransformers() throws {
    let checked = try check("qwen2_5_vl")
    XCTAssertEqual(checked.map(\.name), ["video_half_fps"])
    XCTAssertGreaterThan(checked[0].beyond, 0, "the clip must reach past the closing text")
  }

  /// An image and a 3 fps clip (no gap there: the same rule, the reply right after the text).
  func testImageAndTimedClipReplyMatchesTransformers() throws {
    let checked = try check("qwen2_5_vl", base: "\(Self.dir)/qwen2_5_vl_wide")
    XCTAssertEqual(checked.map(\.name), ["image_and_video_3fps"])
  }

  /// Runs the folder's cases that give a frame rate; returns each one's name and how far the
  /// prompt's largest position is past its last.
  private func check(_ family: String, base: String? = nil) throws -> [(
    name: String, beyond: Int
  )] {
    let base = base ?? "\(Self.dir)/\(family)"
    let cases = try JSONDecoder().decode(
      Cases.self, from: Data(contentsOf: URL(fileURLWithPath: "\(base)/cases.json"))
    ).cases
    let session = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
    XCTAssertEqual(try session.load("\(base)/model").architecture, family)
    var checked: [(name: String, beyond: Int)] = []
    for c in cases {
      guard let fps = c.video_fps else { continue }
      session.reset()
      var images = c.images.makeIterator()
      var question = ""
      for item in c.messages[0].content {
        switch item.type {
        case "image":
          try session.feedImage("\(Self.dir)/\(try XCTUnwrap(images.next()))")
        case "video":
          let paths = (c.video_frames ?? []).map { "\(Self.dir)/\($0)" }
          let times = ClipTimes(
            seconds: paths.indices.map { Double($0) / fps }, duration: Double(paths.count) / fps)
          try session.feedVisual { vlm, index, start in
            try vlm.layout(frames: ImageSource.files(paths), times: times, at: index, start: start)
          }
        default:
          question = try XCTUnwrap(item.text)
        }
      }
      let answer = try session.ask(question, options: GenerationOptions(maxTokens: 8)) { _ in }
      let n = c.input_ids.count
      XCTAssertEqual(Array(session.context.prefix(n)), c.input_ids, "\(c.name): prompt")
      XCTAssertEqual(
        answer.tokens, Array(c.greedy.prefix(answer.tokens.count)), "\(c.name): reply")
      XCTAssertTrue(answer.tokens.count == c.greedy.count || answer.stoppedOnEOS, c.name)

      // The prompt's positions are get_rope_index's; the reply's generate's: token k at the
      // prompt's last position + 1 + k on every axis.
      var axes: [[Int]] = [[], [], []]
      for s in session.segments {
        for a in 0..<3 { axes[a] += s.ropeAxes?[a] ?? s.positions }
      }
      XCTAssertEqual(axes.map { Array($0.prefix(n)) }, c.position_ids, "\(c.name): positions")
      let last = c.position_ids[0][n - 1]
      let top = try XCTUnwrap(c.position_ids.flatMap { $0 }.max())
      XCTAssertEqual(top + 1, n + c.rope_deltas)
      let reply = Array((0..<answer.tokens.count).map { last + 1 + $0 })
      for a in 0..<3 {
        XCTAssertEqual(
          Array(axes[a][n..<(n + answer.tokens.count)]), reply, "\(c.name): reply positions")
      }
      if top > last {
        let other = try XCTUnwrap(c.greedy_rope_deltas, "\(c.name): rope_deltas' continuation")
        XCTAssertNotEqual(other, c.greedy)
      }
      checked.append((c.name, top - last))
    }
    return checked
  }
}

import Foundation
import KVModels
import KVTensor
import XCTest

@testable import KVEngine

/// The vision-language families through the session, as a user drives them: `load FOLDER`,
/// `feed image` / `feed frames` in the order of the case's chat message, `ask QUESTION`. The
/// prompt the session builds must be transformers' token for token, its logits (recomputed by
/// `writeLogits`, which re-encodes the images) transformers' within 1e-4, and the answer the
/// greedy continuation up to the first stop token. A clip with a frame rate (Qwen2.5-VL) is fed
/// with its times, as `feed video` feeds one (`feed frames` has none); a slow clip's temporal
/// M-RoPE positions reach past the text after it, and transformers 5.24's `generate` still
/// continues from the prompt's last position (a bare forward with a cache would continue past
/// the largest, `rope_deltas`, and decode other tokens), and so must `ask`.
final class VisionSessionTests: XCTestCase {
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
    let processor_kwargs: [String: Bool]?
    let input_ids: [Int]
    let greedy: [Int]
    let files: [String: String]
    /// Qwen: get_rope_index's positions of the prompt and its rope_deltas, and the continuation
    /// a bare forward with a cache decodes where it is not `greedy`.
    let position_ids: [[Int]]?
    let rope_deltas: Int?
    let greedy_rope_deltas: [Int]?
  }
  struct Cases: Decodable { let cases: [Case] }

  static let dir = TestPaths.fixtures + "/vlm"

  func testIdefics3Session() throws { try check("idefics3") }
  func testLlavaSession() throws { try check("llava") }
  func testQwen2VLSession() throws { try check("qwen2_vl") }
  /// With a 0.5 fps clip whose temporal positions pass the closing text's.
  func testQwen25VLSession() throws { XCTAssertEqual(try check("qwen2_5_vl"), 1) }
  /// An image and a 3 fps clip.
  func testQwen25VLWideSession() throws {
    XCTAssertEqual(try check("qwen2_5_vl", base: "\(Self.dir)/qwen2_5_vl_wide"), 0)
  }

  /// Returns how many cases had a clip reaching past the prompt's last position.
  @discardableResult
  private func check(_ family: String, base: String? = nil) throws -> Int {
    let base = base ?? "\(Self.dir)/\(family)"
    let cases = try JSONDecoder().decode(
      Cases.self, from: Data(contentsOf: URL(fileURLWithPath: "\(base)/cases.json"))
    ).cases
    let session = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
    let report = try session.load("\(base)/model")
    XCTAssertEqual(report.architecture, family)
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent(
      "kvlab-vision-\(UUID().uuidString).npy"
    ).path
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    var beyond = 0
    for c in cases {
      session.reset()
      var images = c.images.makeIterator()
      var question = ""
      for item in c.messages[0].content {
        switch item.type {
        case "image":
          let path = "\(Self.dir)/\(try XCTUnwrap(images.next()))"
          try session.feedImage(path, split: c.processor_kwargs?["do_image_splitting"])
        case "video":
          let paths = (c.video_frames ?? []).map { "\(Self.dir)/\($0)" }
          if let fps = c.video_fps {
            let times = ClipTimes(
              seconds: paths.indices.map { Double($0) / fps }, duration: Double(paths.count) / fps)
            try session.feedVisual { vlm, index, start in
              try vlm.layout(frames: ImageSource.files(paths), times: times, at: index, start: start)
            }
          } else {
            try session.feedFrames(paths)
          }
        default:
          question = try XCTUnwrap(item.text)
        }
      }
      let answer = try session.ask(question, options: GenerationOptions(maxTokens: 8)) { _ in }
      let n = c.input_ids.count
      XCTAssertEqual(Array(session.context.prefix(n)), c.input_ids, "\(family)/\(c.name): prompt")

      // Greedy answer: transformers' 8 tokens, cut at the first token the chat stops on.
      XCTAssertEqual(
        answer.tokens, Array(c.greedy.prefix(answer.tokens.count)), "\(family)/\(c.name)")
      XCTAssertTrue(answer.tokens.count == c.greedy.count || answer.stoppedOnEOS)

      if let expected = c.position_ids, let deltas = c.rope_deltas {
        // The prompt's positions are get_rope_index's; the reply's generate's: token k at the
        // prompt's last position + 1 + k on every axis.
        var axes: [[Int]] = [[], [], []]
        for s in session.segments {
          for a in 0..<3 { axes[a] += s.ropeAxes?[a] ?? s.positions }
        }
        XCTAssertEqual(axes.map { Array($0.prefix(n)) }, expected, "\(c.name): positions")
        let last = expected[0][n - 1]
        let top = try XCTUnwrap(expected.flatMap { $0 }.max())
        XCTAssertEqual(top + 1, n + deltas)
        let reply = (0..<answer.tokens.count).map { last + 1 + $0 }
        for a in 0..<3 {
          XCTAssertEqual(Array(axes[a][n..<(n + reply.count)]), reply, "\(c.name): reply positions")
        }
        if top > last {
          beyond += 1
          let other = try XCTUnwrap(c.greedy_rope_deltas, "\(c.name): rope_deltas' continuation")
          XCTAssertNotEqual(other, c.greedy)
        }
      }

      // Every logit of the prompt, recomputed from the recorded segments (images re-read).
      let rows = try session.writeLogits(to: tmp)
      XCTAssertEqual(rows.rows, session.context.count)
      let mine = try NPYReader.read(tmp).values
      let reference = try NPYReader.read("\(base)/\(try XCTUnwrap(c.files["logits"]))").values
      let vocab = rows.cols
      var worst: Float = 0
      for i in 0..<(n * vocab) { worst = max(worst, abs(mine[i] - reference[i])) }
      XCTAssertLessThanOrEqual(worst, 1e-4, "\(family)/\(c.name): logits through the session")
    }
    return beyond
  }
}

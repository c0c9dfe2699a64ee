import Foundation
import KVEngine
import KVModels
import KVTensor
import XCTest

/// The vision-language families through the session, as a user drives them: `load FOLDER`,
/// `feed image` / `feed frames` in the order of the case's chat message, `ask QUESTION`. The
/// prompt the session builds must be transformers' token for token, its logits (recomputed by
/// `writeLogits`, which re-encodes the images) transformers' within 1e-4, and the answer the
/// greedy continuation up to the first stop token.
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
  }
  struct Cases: Decodable { let cases: [Case] }

  static let dir = TestPaths.fixtures + "/vlm"

  func testIdefics3Session() throws { try check("idefics3") }
  func testLlavaSession() throws { try check("llava") }
  func testQwen2VLSession() throws { try check("qwen2_vl") }
  func testQwen25VLSession() throws { try check("qwen2_5_vl") }

  private func check(_ family: String) throws {
    let base = "\(Self.dir)/\(family)"
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
    // `feed frames` gives no frame rate: a case with one is the parity test's only.
    for c in cases where c.video_fps == nil {
      session.reset()
      var images = c.images.makeIterator()
      var question = ""
      for item in c.messages[0].content {
        switch item.type {
        case "image":
          let path = "\(Self.dir)/\(try XCTUnwrap(images.next()))"
          try session.feedImage(path, split: c.processor_kwargs?["do_image_splitting"])
        case "video":
          try session.feedFrames((c.video_frames ?? []).map { "\(Self.dir)/\($0)" })
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
  }
}

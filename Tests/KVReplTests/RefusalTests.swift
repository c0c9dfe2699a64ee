import Foundation
import KVEngine
import KVModels
import XCTest

@testable import KVRepl

/// A copy of the tiny llama fixture (2 layers, a 64-position context, 64 tokens) with a
/// byte-level tokenizer of its own 64 tokens, no merges: printable ASCII characters that the
/// ChatML system prompt and role names do not use, and `<`, `|`, `>`. Any other byte is
/// dropped, so the chat's system turn is 8 tokens (the `<|`, `|>` of its two markers), the user
/// turn's opening 4, and `QQQ` is one token per letter. Every id decodes to a printable
/// character other than a newline.
func tinyLlama64(_ test: XCTestCase) throws -> String {
  let folder = temporaryFolder(test) + "/tiny_llama"
  try FileManager.default.copyItem(
    atPath: repositoryRoot + "/Tests/KVModelsTests/Fixtures/safetensors/tiny_llama", toPath: folder)
  let used = Set(
    ChatTemplate.chatML.defaultSystemPrompt! + " im_start im_end system user assistant")
  let letters = (33...126).map { Character(Unicode.Scalar(UInt8($0))) }
    .filter { !used.contains($0) }.prefix(64)
  precondition(letters.count == 64 && letters.contains("Q") && letters.contains("<"))
  var vocab: [String: Int] = [:]
  for (i, c) in letters.enumerated() { vocab[String(c)] = i }
  let byteLevel: [String: Any] = [
    "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
  ]
  let tokenizer: [String: Any] = [
    "version": "1.0", "added_tokens": [Any](), "normalizer": NSNull(),
    "pre_tokenizer": byteLevel, "post_processor": NSNull(), "decoder": byteLevel,
    "model": [
      "type": "BPE", "unk_token": NSNull(), "byte_fallback": false, "vocab": vocab,
      "merges": [String](),
    ],
  ]
  try JSONSerialization.data(withJSONObject: tokenizer).write(
    to: URL(fileURLWithPath: folder + "/tokenizer.json"))
  return folder
}

/// A refused input leaves the session as it was: the context limit is checked for the whole
/// input before any block is fed (a budgeted cache fed one token per block used to keep the 64
/// tokens that fitted), and the chat turn is as before, so the same input fed again after a
/// refusal gives the same context as in a fresh session. A generation cut short by an error
/// ends its line before the error.
final class RefusalTests: XCTestCase {
  func loaded(_ setup: [String]) throws -> (Repl, CaptureSink) {
    let model = try tinyLlama64(self)
    let (repl, out) = makeRepl()
    for line in ["load \(model)"] + setup {
      XCTAssertEqual(repl.run(line: line), .ok, out.text)
    }
    XCTAssertEqual(repl.session.model?.config.contextLength, 64)
    return (repl, out)
  }

  func testARefusedFeedLeavesTheContextAsItWas() throws {
    let overflow = String(repeating: "Q", count: 65)
    for setup in [
      [], ["budget 32 tokens", "prefill mode=capped block=1"],
      ["budget 32 tokens", "prefill mode=sequential block=3"],
      ["budget 32 tokens", "prefill mode=post block=7"], ["prefill block=5"],
    ] {
      for before in ["", String(repeating: "B", count: 20)] {
        let (repl, out) = try loaded(setup)
        if !before.isEmpty {
          XCTAssertEqual(repl.run(line: "feed text \(before) raw=on"), .ok, out.text)
        }
        let context = repl.session.context
        let held = repl.session.cacheSummary?.tokens
        let trace = repl.session.memoryTrace.count
        XCTAssertEqual(repl.run(line: "feed text \(overflow) raw=on"), .failed)
        XCTAssertEqual(
          out.lines.last,
          "error: feed text: context would hold \(context.count + 65) tokens; the model's limit is 64",
          "\(setup)")
        XCTAssertEqual(repl.session.context, context, "\(setup), \(context.count) fed before")
        XCTAssertEqual(repl.session.cacheSummary?.tokens, held, "\(setup)")
        XCTAssertEqual(repl.session.memoryTrace.count, trace, "no block ran: \(setup)")
        // What fits still goes in, at the next positions.
        XCTAssertEqual(repl.run(line: "feed text QRT raw=on"), .ok, out.text)
        XCTAssertEqual(repl.session.context.count, context.count + 3)
      }
    }
  }

  /// The chat turn a refused feed would have opened stays closed: feeding after the refusal
  /// lays out the same tokens as feeding in a fresh session.
  func testARefusedFeedLeavesTheChatTurnAsItWas() throws {
    for setup in [[], ["budget 32 tokens", "prefill mode=capped block=1"]] {
      let (fresh, freshOut) = try loaded(setup)
      XCTAssertEqual(fresh.run(line: "feed text QQQ"), .ok, freshOut.text)
      let (refused, out) = try loaded(setup)
      XCTAssertEqual(
        refused.run(line: "feed text \(String(repeating: "Z", count: 70))"), .failed)
      XCTAssertEqual(refused.session.context, [])
      XCTAssertEqual(refused.run(line: "feed text QQQ"), .ok, out.text)
      XCTAssertEqual(refused.session.context, fresh.session.context, "\(setup)")
      // And a refused question leaves the turn open for more text.
      XCTAssertEqual(
        refused.run(line: "ask \(String(repeating: "q", count: 70))"), .failed)
      XCTAssertEqual(refused.session.context, fresh.session.context, "\(setup)")
      XCTAssertNil(refused.session.lastAsk)
    }
  }

  /// `generate` that runs into the context limit half way: the tokens it streamed stay on their
  /// line, the error starts a line of its own, and so does the next command's output.
  func testAGenerationErrorEndsItsPartialLine() throws {
    let (repl, out) = try loaded([])
    XCTAssertEqual(
      repl.run(line: "feed text \(String(repeating: "B", count: 60)) raw=on"), .ok, out.text)
    let lines = CaptureSink.lines(
      output(of: "generate max=10", in: repl, out, expecting: .failed)
        + output(of: "echo next", in: repl, out))
    XCTAssertEqual(lines.count, 3, lines.description)
    XCTAssertFalse(lines[0].isEmpty, "4 tokens were generated before the limit")
    XCTAssertEqual(lines[1], "error: generate: context would hold 65 tokens; the model's limit is 64")
    XCTAssertEqual(lines[2], "next")
    XCTAssertEqual(repl.session.context.count, 64)
  }
}

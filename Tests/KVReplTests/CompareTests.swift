import Foundation
import KVCache
import KVEngine
import XCTest

@testable import KVRepl

/// `compare` on the tiny Idefics3 fixture: one row per setting after the full cache, answers
/// that are full's whenever the budget holds the whole context, the session left exactly as it
/// was, and one-line errors for bad lists.
final class CompareTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  func session() -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    for line in [
      "load \(Self.vlm)/idefics3/model", "policy keydiff", "budget 24 tokens",
      "prefill mode=capped block=tile", "feed image \(Self.vlm)/images/img_70x40.png",
      #"ask "what is it?" max=6"#,
    ] {
      XCTAssertEqual(r.run(line: line), .ok, line + "\n" + out.text)
    }
    return (r, out)
  }

  func lines(_ r: Repl, _ out: CaptureSink, _ line: String) -> [String] {
    CaptureSink.lines(output(of: line, in: r, out))
  }

  func testRowsPerSettingAndTheSessionIsUntouched() throws {
    let (r, out) = session()
    let s = r.session
    let answer = try XCTUnwrap(s.lastAsk)
    let context = s.context
    let settings = s.cacheSettings.description
    let held = try XCTUnwrap(s.budgetedCache).positions(layer: 1, head: 0)
    let kv = s.meter.reading(.kv)
    let total = context.count  // ~60 tokens; a budget of 200 holds all of it and the answer
    let shown = lines(
      r, out, "compare budgets=16,200 policies=knorm,streamingllm modes=capped,post")
    // Header, full, 2 modes × 2 budgets × 2 policies, a blank line, the answers.
    XCTAssertEqual(shown[0].split(separator: " ", omittingEmptySubsequences: true).first, "mode")
    let rows = shown[1..<10].map { $0.split(separator: " ").map(String.init) }
    XCTAssertEqual(
      rows.map { $0[0] },
      ["full"] + Array(repeating: "capped", count: 4) + Array(repeating: "post", count: 4))
    XCTAssertEqual(rows.map { $0[1] }, ["-", "16", "16", "200", "200", "16", "16", "200", "200"])
    XCTAssertEqual(rows[1][2], "knorm")
    XCTAssertEqual(rows[2][2], "streaming")
    XCTAssertEqual(rows[0][3], "A", "the full cache's answer is listed first")
    for row in rows where row[1] == "200" {
      XCTAssertEqual(row[3], "A", "a budget holding the whole context answers as full: \(row)")
      XCTAssertEqual(row[4], "yes")
    }
    for row in rows.dropFirst() {
      // The K/V peak of a capped run is its budget (512 B per token on this model).
      if row[0] == "capped" {
        XCTAssertEqual("\(row[5]) \(row[6])", row[1] == "16" ? "8.00 KiB" : "100.00 KiB", "\(row)")
      }
      XCTAssertTrue(row[7].hasPrefix("~"), "rss varies: masked")
    }
    XCTAssertTrue(shown.contains { $0.hasPrefix("A  \"") })
    // The full cache's answer is the session's own (both greedy over the same context).
    let fullAnswer = try XCTUnwrap(shown.first { $0.hasPrefix("A  ") })
    XCTAssertTrue(total > 24)
    XCTAssertEqual(answer.question, "what is it?")
    // Untouched: context, settings, what the cache holds, the meter's K/V.
    XCTAssertEqual(s.context, context)
    XCTAssertEqual(s.cacheSettings.description, settings)
    XCTAssertEqual(try XCTUnwrap(s.budgetedCache).positions(layer: 1, head: 0), held)
    XCTAssertEqual(s.meter.reading(.kv), kv)
    // The answer of the session's own ask under full: feed again with no budget and compare.
    let (plain, plainOut) = makeRepl()
    for line in [
      "load \(Self.vlm)/idefics3/model", "feed image \(Self.vlm)/images/img_70x40.png",
    ] {
      XCTAssertEqual(plain.run(line: line), .ok)
    }
    let asked = lines(plain, plainOut, #"ask "what is it?" max=6"#)
    XCTAssertEqual(
      fullAnswer, "A  \"\(asked.joined(separator: " ").trimmingCharacters(in: .whitespaces))\"")
  }

  func testQuestionOverTheCurrentInputs() throws {
    let (r, out) = makeRepl()
    for line in [
      "load \(Self.vlm)/idefics3/model", "feed image \(Self.vlm)/images/img_33x33.png",
    ] {
      XCTAssertEqual(r.run(line: line), .ok)
    }
    let shown = lines(r, out, #"compare question="and now?" budgets=400 policies=random max=4"#)
    XCTAssertEqual(shown[1].split(separator: " ").first, "full")
    XCTAssertEqual(
      shown[2].split(separator: " ").prefix(5).joined(separator: " "), "capped 400 random A yes")
  }

  func testBadListsAreOneLineErrors() throws {
    let (r, out) = session()
    let context = r.session.context
    for (line, message) in [
      (
        "compare modes=full",
        "error: compare: modes: 'full' is not a compressing mode (post, sequential or capped)"
      ),
      ("compare budgets=0", "error: compare: budgets: must be positive, got '0'"),
      (
        "compare budgets=32,,64",
        "error: compare: budgets: expected a comma-separated list, got '32,,64'"
      ),
      (
        "compare policies=lru",
        "error: compare: policies: unknown policy 'lru'; known: snapkv, keydiff, knorm, vnorm, random, streaming, h2o, infinipot, gridpool, floors, oracle"
      ),
      (
        "compare budgets=1,2,3,4,5,6,7,8,9 policies=knorm,keydiff,vnorm,random modes=capped,post",
        "error: compare: 72 settings; at most 64 per compare"
      ),
    ] {
      XCTAssertEqual(output(of: line, in: r, out, expecting: .failed), message + "\n", line)
    }
    XCTAssertEqual(r.session.context, context)
    let (fresh, freshOut) = makeRepl()
    XCTAssertEqual(fresh.run(line: "load \(Self.vlm)/idefics3/model"), .ok)
    for (line, message) in [
      (
        "compare budgets=32",
        "error: compare: nothing asked yet: ask a question first, or give question=\"...\""
      ),
      (
        "compare question=\"x\"",
        "error: compare: no budget to compare: set one or give budgets=256,512,..."
      ),
    ] {
      XCTAssertEqual(
        output(of: line, in: fresh, freshOut, expecting: .failed), message + "\n", line)
    }
  }
}

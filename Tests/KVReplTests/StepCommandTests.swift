import Foundation
import XCTest

@testable import KVRepl

/// `prefill stepping on|off`, `prefill step`, `prefill run`, structure-aligned blocks: what the
/// user sees, and the errors (each leaves the session as it was).
final class StepCommandTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  func testSteppingQueuesAndStepsRunTheSameBlocks() {
    let (repl, out) = makeRepl()
    for line in [
      "policy keydiff", "budget 24 tokens", "prefill mode=capped block=tile",
      "load \(Self.vlm)/idefics3/model", "prefill stepping on",
      "feed image \(Self.vlm)/images/img_70x40.png",
    ] {
      XCTAssertEqual(repl.run(line: line), .ok, out.text)
    }
    XCTAssertTrue(out.text.contains("(context 0; 8 blocks waiting)"), out.text)
    XCTAssertEqual(repl.session.pendingBlocks.count, 8)

    // Asking while blocks wait is refused; nothing changes.
    XCTAssertEqual(repl.run(line: #"ask "Hi?""#), .failed)
    XCTAssertTrue(
      out.text.hasSuffix(
        "error: ask: 8 prefill blocks are waiting; run 'prefill step' or 'prefill run' first\n"),
      out.text)
    XCTAssertEqual(repl.session.context.count, 0)

    XCTAssertEqual(repl.run(line: "prefill step"), .ok)
    XCTAssertTrue(
      out.text.contains(
        "block 1/8: +11 tokens (text: 5, image 0: 2, image 0 tile 0: 4); cache 11/24 per layer, context 11\n  nothing evicted\n"
      ), out.text)
    XCTAssertEqual(repl.run(line: "prefill run"), .ok)
    XCTAssertTrue(out.text.hasSuffix("ran 7 blocks (context 51)\n"), out.text)
    XCTAssertEqual(repl.run(line: "prefill step"), .ok)
    XCTAssertTrue(out.text.hasSuffix("nothing waiting (feed with 'prefill stepping on' first)\n"))
    XCTAssertEqual(repl.session.cacheSummary?.tokens, 24)

    // The same without stepping holds the same entries.
    let (plain, _) = makeRepl()
    for line in [
      "policy keydiff", "budget 24 tokens", "prefill mode=capped block=tile",
      "load \(Self.vlm)/idefics3/model", "feed image \(Self.vlm)/images/img_70x40.png",
    ] {
      XCTAssertEqual(plain.run(line: line), .ok)
    }
    XCTAssertEqual(
      plain.session.budgetedCache?.positions(layer: 1, head: 0),
      repl.session.budgetedCache?.positions(layer: 1, head: 0))
  }

  func testStepReportsEvictionsWithScores() {
    let (repl, out) = makeRepl()
    for line in [
      "policy keydiff", "budget 24 tokens", "prefill mode=capped block=tile",
      "load \(Self.vlm)/idefics3/model", "prefill stepping on",
      "feed image \(Self.vlm)/images/img_70x40.png", "prefill step", "prefill step", "prefill step",
    ] {
      XCTAssertEqual(repl.run(line: line), .ok, out.text)
    }
    let shown = output(of: "prefill step", in: repl, out)
    XCTAssertTrue(shown.hasPrefix("block 4/8: +7 tokens"), shown)
    XCTAssertTrue(shown.contains("layer 0 head 0: 6 left, highest score "), shown)
    XCTAssertTrue(shown.contains("(lowest kept "), shown)
  }

  func testBlockSizesAndErrors() {
    let (repl, out) = makeRepl()
    XCTAssertEqual(repl.run(line: "budget 64 tokens"), .ok)
    XCTAssertEqual(repl.run(line: "prefill block=4frames bulk=on"), .ok)
    XCTAssertTrue(out.text.contains("prefill mode=capped block=4frames bulk=on\n"), out.text)
    XCTAssertEqual(repl.run(line: "prefill block=2tile"), .failed)
    XCTAssertTrue(
      out.text.hasSuffix(
        "error: prefill: block must be a number of tokens (e.g. 256), tile, frame or Nframes (e.g. 4frames), got '2tile'\n"
      ),
      out.text)
    XCTAssertEqual(repl.run(line: "prefill block=0"), .failed)
    XCTAssertEqual(repl.session.cacheSettings.block?.description, "4frames")
    XCTAssertEqual(repl.run(line: "prefill stepping maybe"), .failed)
    XCTAssertTrue(
      out.text.hasSuffix("error: prefill stepping: STATE must be on or off, got 'maybe'\n"),
      out.text)
  }
}

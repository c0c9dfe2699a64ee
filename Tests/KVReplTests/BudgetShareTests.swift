import Foundation
import KVCache
import XCTest

@testable import KVEngine
@testable import KVRepl

/// `budget 10%`: a share of the visual tokens fed, on the embedded model (needle images of
/// 8×8 tiles + the global image, 16 tokens each). Before anything is fed it is pending and the
/// cache keeps every token; an image or clip resolves it before its first block; later ones
/// resolve it again over everything fed; `compare budgets=5%,10%` resolves each the same way.
final class BudgetShareTests: XCTestCase {
  func embedded() -> (Repl, CaptureSink) { makeEmbeddedRepl(self) }

  func run(_ r: Repl, _ out: CaptureSink, _ line: String, _ expected: CommandResult = .ok) -> [String] {
    CaptureSink.lines(output(of: line, in: r, out, expecting: expected))
  }

  func testShareIsPendingUntilAnImageThenResolvedBeforeItsBlocks() throws {
    let (r, out) = embedded()
    let s = r.session
    _ = run(r, out, "load")
    XCTAssertEqual(
      run(r, out, "budget 10%"),
      [
        "budget 10% of visual tokens: none fed yet; it becomes tokens when the next image or clip is fed, and until then the cache keeps every token; prefill mode=capped"
      ])
    XCTAssertNil(s.budgetedCache, "nothing to take a share of: the full cache")
    XCTAssertEqual(s.meter.reading(.kv).current, 0)
    // Text before any image is kept whole.
    _ = run(r, out, #"feed text "look closely""#)
    XCTAssertNil(s.budgetedCache)

    let textHeld = s.meter.reading(.kv).current
    s.meter.resetHighWater()
    let fed = run(r, out, "feed synthetic needle-image seed=5")
    let visual = s.visualTokensFed
    XCTAssertEqual(visual, 1040, "8×8 tiles and the global image, 16 tokens each")
    XCTAssertTrue(fed[0].contains(", 1040 visual + "), fed[0])
    let b = try XCTUnwrap(s.budgetedCache)
    XCTAssertEqual(b.budget, 104)
    XCTAssertEqual(b.mode, .capped)
    let perToken = b.bytesPerToken
    XCTAssertEqual(
      fed[1],
      "budget 10% of visual tokens = 104 tokens (of 1040 fed) = \(Format.bytes(104 * perToken)) (\(perToken) B of K/V per token); prefill mode=capped"
    )
    // The cache was sized before the image's first block: the text fed before it is re-prefilled
    // into the new cache, which is all that sits beside it.
    XCTAssertLessThanOrEqual(s.meter.reading(.kv).highWater, 104 * perToken + textHeld)
    XCTAssertEqual(run(r, out, "budget"), [fed[1]])

    // A second image: the share of everything fed.
    s.meter.resetHighWater()
    let second = run(r, out, "feed synthetic count seed=2")
    let total = s.visualTokensFed
    XCTAssertGreaterThan(total, visual)
    XCTAssertEqual(s.budgetedCache?.budget, Session.shareTokens(0.1, of: total))
    XCTAssertTrue(second.contains { $0.hasPrefix("budget 10% of visual tokens = \(total / 10) tokens (of \(total) fed)") }, second.joined(separator: "\n"))
    let grown = total / 10 * perToken
    XCTAssertLessThanOrEqual(
      s.meter.reading(.kv).highWater, grown + grown / (2 * s.model!.config.layers),
      "growing in place moves one buffer at a time")

    // A share set with images in the context resolves at once; tokens replace a share.
    XCTAssertTrue(run(r, out, "budget 25%")[0].hasPrefix("budget 25% of visual tokens = \(total / 4) tokens (of \(total) fed)"))
    XCTAssertEqual(s.budgetedCache?.budget, total / 4)
    XCTAssertTrue(run(r, out, "budget 64 tokens")[0].hasPrefix("budget 64 tokens = "))
    XCTAssertNil(s.cacheSettings.share)
    _ = run(r, out, "feed synthetic count seed=3")
    XCTAssertEqual(s.budgetedCache?.budget, 64, "a token budget does not follow the input")
  }

  func testBadSharesAreOneLineErrorsAndChangeNothing() throws {
    let (r, out) = embedded()
    _ = run(r, out, "load")
    _ = run(r, out, "budget 48 tokens")
    let settings = r.session.cacheSettings.description
    for (line, message) in [
      ("budget 0%", "error: budget: a share must be above 0% and at most 100%, got '0%'"),
      ("budget 150%", "error: budget: a share must be above 0% and at most 100%, got '150%'"),
      ("budget -5%", "error: budget: a share must be above 0% and at most 100%, got '-5%'"),
    ] {
      XCTAssertEqual(run(r, out, line, .failed), [message], line)
      XCTAssertEqual(r.session.cacheSettings.description, settings, line)
    }
    // A share too small for the policy refuses the feed that would resolve it, in one line,
    // and leaves the context and the settings as they were.
    _ = run(r, out, "policy snapkv window=32")
    _ = run(r, out, "budget 1%")
    let refused = run(r, out, "feed synthetic attribute seed=1", .failed)
    XCTAssertEqual(refused.count, 1, refused.joined(separator: "\n"))
    XCTAssertTrue(refused[0].hasPrefix("error: feed synthetic: budget 1% of "), refused[0])
    XCTAssertEqual(r.session.context.count, 0)
    XCTAssertNil(r.session.cacheSettings.budget)
    XCTAssertEqual(r.session.cacheSettings.share, 0.01)
  }

  func testCompareResolvesSharesOverTheVisualTokensFed() throws {
    let (r, out) = embedded()
    for line in ["load", "policy keydiff", "budget 10%", "feed synthetic attribute seed=4", "synthetic ask max=3"] {
      _ = run(r, out, line)
    }
    let visual = r.session.visualTokensFed
    XCTAssertGreaterThan(visual, 0)
    let table = run(r, out, "compare budgets=5%,10%")
    let five = Session.shareTokens(0.05, of: visual)
    let ten = Session.shareTokens(0.1, of: visual)
    XCTAssertTrue(table.contains { $0.contains(" 5% = \(five) ") }, table.joined(separator: "\n"))
    XCTAssertTrue(table.contains { $0.contains(" 10% = \(ten) ") }, table.joined(separator: "\n"))
    // Without images, a share has nothing to be a share of.
    let (t, tout) = embedded()
    for line in ["load", #"feed text "hello""#, #"ask "hi" max=2"#] { _ = run(t, tout, line) }
    XCTAssertEqual(
      run(t, tout, "compare budgets=10%", .failed),
      ["error: compare: budgets: 10% is a share of the visual tokens fed, and none are fed"])
  }

  /// `help budget` and Tab completion read the same examples, and each is a budget `budget`
  /// takes.
  func testHelpAndCompletionAgree() throws {
    let table = CommandTable(Repl.standardCommands)
    let examples = try XCTUnwrap(table.forms(of: "budget").first?.positionals.first?.examples)
    XCTAssertTrue(examples.contains("10%"))
    let help = try table.help(noun: "budget", verb: nil).joined(separator: "\n")
    XCTAssertTrue(help.contains("e.g. " + examples.joined(separator: ", ")), help)
    XCTAssertTrue(help.contains("share of the visual tokens fed"), help)
    let completer = Completer(table: table, directory: nil)
    let offered = completer.complete("budget ").candidates
    for e in examples { XCTAssertTrue(offered.contains(e), "\(e) in \(offered)") }
    XCTAssertEqual(Set(completer.complete("budget 1").candidates), ["1024", "16MiB", "10%"])
    XCTAssertEqual(completer.complete("budget 16").candidates, ["16MiB"])
    let (r, out) = embedded()
    _ = run(r, out, "load")
    for e in examples { _ = run(r, out, "budget \(e)") }
  }
}

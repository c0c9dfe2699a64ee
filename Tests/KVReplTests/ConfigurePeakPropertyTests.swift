import Foundation
import KVCache
import KVEngine
import KVTasks
import XCTest

@testable import KVRepl

/// The K/V high-water mark while the cache is configured: for random orders of `budget`,
/// `policy`, `prefill mode=/block=/bulk=`, `protect` and `quota` (after a first `budget`), then feeds,
/// on the embedded model, no command's peak exceeds the storage of the cache it leaves or the
/// one it replaces: replacing a cache (before anything is fed) never holds two caches' storage,
/// and an empty cache holds none. In `capped` mode that storage is the budget, so the peak from
/// `budget` on never passes the largest budget set; `sequential` adds its block room. (`post`
/// grows with the input by design and is left out.) Then the same with feeds and asks mixed
/// into the configuration, in `capped` mode.
final class ConfigurePeakPropertyTests: XCTestCase {
  /// The storage the cache's settings document: the budget (capped), the budget and the block
  /// room (sequential), what the full cache has allocated.
  func documentedStorage(_ session: Session) -> Int {
    guard let b = session.budgetedCache else { return session.cacheSummary?.bytes ?? 0 }
    switch b.mode {
    case .capped: return b.budgetBytes
    case .sequential: return (b.budget + b.blockCapacity) * b.bytesPerToken
    default: return b.bytesHeld
    }
  }

  /// One command of a trial, run with the K/V high-water mark reset before it.
  struct Measured {
    var result: CommandResult
    /// The K/V high-water mark while it ran, and the documented storage it left.
    var peak: Int
    var after: Int
    /// Whether a budgeted cache held tokens before it.
    var wasFilled: Bool
    /// The trial's commands up to this one, for failure messages.
    var what: String
  }

  func measure(_ repl: Repl, _ lines: [String], _ i: Int, trial: Int) -> Measured {
    let session = repl.session
    session.meter.resetHighWater()
    let wasFilled = (session.budgetedCache?.count ?? 0) > 0
    let result = repl.run(line: lines[i])
    let after = documentedStorage(session)
    if let b = session.budgetedCache {
      XCTAssertEqual(b.bytesHeld, after, "storage as documented: \(lines.prefix(i + 1))")
    }
    return Measured(
      result: result, peak: session.meter.reading(.kv).highWater, after: after,
      wasFilled: wasFilled,
      what: "trial \(trial), \(lines.prefix(i + 1).joined(separator: "; ")) (\(result))")
  }

  func randomConfiguration(_ rng: inout SplitMix64) -> String {
    switch rng.below(6) {
    case 0: return "budget \(rng.pick([48, 64, 96, 128, 256])) tokens"
    case 1:
      return rng.pick([
        "policy keydiff", "policy snapkv", "policy h2o", "policy streaming", "policy knorm",
        "policy random", "policy snapkv window=8",
      ])
    case 2:
      let mode = rng.pick(["capped", "sequential"])
      let block = rng.pick(["", " block=16", " block=64", " block=tile", " block=frame"])
      return "prefill mode=\(mode)\(block)" + rng.pick(["", " bulk=on", " bulk=off"])
    case 3:
      return "prefill"
        + rng.pick([" block=16", " block=tile", " block=frame", " block=100", " bulk=on", " bulk=off"])
    case 4: return "protect " + rng.pick(["text=on", "text=off", "system=on", "system=off"])
    default: return "quota " + rng.pick(["frame=2", "tile=1", "image=4", "off"])
    }
  }

  func randomFeed(_ rng: inout SplitMix64) -> String {
    let seed = rng.below(1000)
    return rng.pick([
      "feed synthetic count seed=\(seed)", "feed synthetic attribute seed=\(seed)",
      "feed synthetic needle-image seed=\(seed)",
      "feed synthetic needle-video frames=12 seed=\(seed)",
      #"feed text "a square and a circle, side by side""#,
    ])
  }

  func testPeakNeverHoldsTwoCachesForRandomConfigurationOrders() throws {
    var rng = SplitMix64(seed: 20_251_206)
    for trial in 0..<16 {
      let (repl, capture) = makeEmbeddedRepl(self, load: true)
      let session = repl.session
      // Loading allocates no K/V: the full cache takes storage with its first block.
      XCTAssertEqual(session.meter.reading(.kv).current, 0, "an empty full cache holds nothing")
      var lines = ["budget \(rng.pick([48, 64, 128, 256])) tokens"]
      lines += (0..<(1 + rng.below(7))).map { _ in randomConfiguration(&rng) }
      let configurations = lines.count
      lines += (0..<(1 + rng.below(2))).map { _ in randomFeed(&rng) }

      var largest = 0
      var allCapped = true
      var before = documentedStorage(session)
      for i in lines.indices {
        let m = measure(repl, lines, i, trial: trial)
        if session.budgetedCache?.mode != .capped { allCapped = false }
        // Sequential mode may grow its block room over a filled cache one buffer at a time
        // (one layer's keys or values at the new size on top, as `setBudget` documents).
        let layers = session.model!.config.layers
        let transient = m.wasFilled && m.after > before ? m.after / (2 * layers) : 0
        XCTAssertLessThanOrEqual(
          m.peak, max(before, m.after) + transient,
          "peak \(m.peak) B over the cache replaced (\(before) B) and the new (\(m.after) B): \(m.what)\n\(capture.text.suffix(600))"
        )
        largest = max(largest, max(before, m.after) + transient)
        if i < configurations {
          XCTAssertEqual(session.context.count, 0, "nothing fed while configuring: \(m.what)")
        }
        before = m.after
      }
      if allCapped, let perToken = session.budgetedCache?.bytesPerToken {
        // Capped throughout: from `budget` on, the peak never passed the largest budget set.
        XCTAssertLessThanOrEqual(
          largest, lines.compactMap { budgetTokens($0) }.max()! * perToken, "trial \(trial)")
      }
    }
  }

  /// Configuration interleaved with feeds and asks, all in `capped` mode with structure-aligned
  /// blocks (so that a change of budget, policy, block, bulk or retention is made in place, and
  /// a share resolves in place): from the first `budget` on, no command's K/V peak passes the
  /// storage it leaves or replaces (plus, when a filled cache's budget changes, the one buffer
  /// that moves at a time), and the peak over the whole run never passes the largest of those.
  func testPeakStaysWithinTheBudgetAcrossFeedsAndAsks() throws {
    var rng = SplitMix64(seed: 20_261_206)
    for trial in 0..<10 {
      let (repl, capture) = makeEmbeddedRepl(self, load: true)
      let session = repl.session
      let first = rng.pick([48, 64, 128, 256])
      var lines = ["budget \(first) tokens", "prefill mode=capped block=" + rng.pick(["tile", "frame", "2frames"])]
      var feeds = 0
      for _ in 0..<(4 + rng.below(6)) {
        switch rng.below(7) {
        case 0: lines.append("budget \(rng.pick([48, 64, 96, 128, 256])) tokens")
        case 1:
          lines.append(rng.pick(["policy keydiff", "policy snapkv", "policy h2o", "policy streaming", "policy knorm"]))
        case 2:
          lines.append("prefill " + rng.pick(["bulk=on", "bulk=off", "block=tile", "block=frame", "block=4frames", "mode=capped bulk=on"]))
        case 3: lines.append(rng.pick(["protect text=on", "protect text=off", "quota frame=2", "quota off"]))
        case 4: lines.append(rng.pick(["budget 10%", "budget 25%", "budget 50%"]))
        case 5: lines.append(rng.pick(["ask \"which shape is red?\" max=4", "synthetic ask max=3"]))
        default:
          if feeds < 3 {
            feeds += 1
            lines.append(randomFeed(&rng))
          }
        }
      }
      lines.append("ask \"what is in the picture?\" max=6")

      var before = documentedStorage(session)
      var largest = 0
      var overall = 0
      let layers = session.model!.config.layers
      for (i, line) in lines.enumerated() {
        // A share before any visual token is a full cache until the next image: not a budget.
        if line.hasSuffix("%"), session.visualTokensFed == 0 { continue }
        session.meter.resetHighWater()
        let wasFilled = (session.budgetedCache?.count ?? 0) > 0
        let result = repl.run(line: line)
        let peak = session.meter.reading(.kv).highWater
        let after = documentedStorage(session)
        let what = "trial \(trial), \(lines.prefix(i + 1).joined(separator: "; ")) (\(result))"
        guard let b = session.budgetedCache else {
          XCTFail("capped from the first budget on: \(what)")
          break
        }
        XCTAssertEqual(b.mode, .capped, what)
        XCTAssertEqual(b.bytesHeld, b.budgetBytes, "capped storage is the budget: \(what)")
        // A filled cache's storage moves one buffer at a time when the budget changes, either
        // way (`setBudget`): one layer's keys or values at the new size on top, no more.
        let transient = wasFilled && after != before ? after / (2 * layers) : 0
        XCTAssertLessThanOrEqual(
          peak, max(before, after) + transient,
          "peak \(peak) B over \(before) B before and \(after) B after: \(what)\n\(capture.text.suffix(600))")
        largest = max(largest, max(before, after) + transient)
        overall = max(overall, peak)
        before = after
      }
      XCTAssertLessThanOrEqual(overall, largest, "trial \(trial)")
      XCTAssertGreaterThan(overall, 0, "trial \(trial): something was held")
    }
  }

  /// The cache rebuilt after feeds: mode and block-size changes, token budgets and shares
  /// (a share first resolved when an image follows text already in the full cache), in random
  /// orders. The old cache goes before the new one is built, so no command's K/V peak passes
  /// the larger of the storage it leaves and the storage it makes (plus, when a filled
  /// budgeted cache changes size in place, the one buffer that moves at a time): from `budget`
  /// on, never two caches at once.
  func testPeakStaysWithinTheBudgetWhenTheCacheIsRebuiltAfterFeeds() throws {
    var rng = SplitMix64(seed: 20_261_207)
    var rebuilt = 0
    for trial in 0..<10 {
      let (repl, capture) = makeEmbeddedRepl(self, load: true)
      let session = repl.session
      var lines: [String] = []
      if rng.below(2) == 0 { lines.append(#"feed text "a square and a circle, side by side""#) }
      lines.append(rng.pick(["budget 64 tokens", "budget 128 tokens", "budget 10%", "budget 25%"]))
      var feeds = 0
      for _ in 0..<(6 + rng.below(5)) {
        switch rng.below(5) {
        case 0, 1:
          if feeds < 3 {
            feeds += 1
            lines.append(rng.below(3) == 0 ? #"feed text "which shape is red?""# : randomFeed(&rng))
          }
        case 2:
          let mode = rng.pick(["capped", "sequential"])
          let block = rng.pick(["", " block=16", " block=64", " block=tile", " block=frame", " block=2frames"])
          lines.append("prefill mode=\(mode)\(block)" + rng.pick(["", " bulk=on", " bulk=off"]))
        case 3:
          lines.append(rng.pick(["budget 48 tokens", "budget 96 tokens", "budget 256 tokens", "budget 10%", "budget 25%", "budget 50%"]))
        default:
          lines.append(rng.pick(["policy keydiff", "policy snapkv", "policy h2o", "policy streaming"]))
        }
      }
      // A mode change over what was fed, at the end at the latest.
      lines.append(rng.pick(["prefill mode=sequential block=16", "prefill mode=capped block=tile"]))

      var before = documentedStorage(session)
      let layers = session.model!.config.layers
      for i in lines.indices {
        let held = session.contextCount
        let m = measure(repl, lines, i, trial: trial)
        if lines[i].hasPrefix("prefill mode="), held > 0, m.result == .ok { rebuilt += 1 }
        // A filled budgeted cache resized in place moves one buffer at a time (`setBudget`).
        let transient = m.wasFilled && m.after != before ? m.after / (2 * layers) : 0
        XCTAssertLessThanOrEqual(
          m.peak, max(before, m.after) + transient,
          "peak \(m.peak) B over \(before) B before and \(m.after) B after: \(m.what)\n\(capture.text.suffix(600))")
        before = m.after
      }
    }
    XCTAssertGreaterThan(rebuilt, 5, "mode changes over a filled context were exercised")
  }

  /// The orders the report found: a share set before any image, text fed into the full cache,
  /// then an image resolves the share; a budget, a feed, then another mode and block size. The
  /// command that rebuilds peaks at the budget's storage, not the full cache's on top of it.
  func testRebuildingAFilledCacheNeverHoldsTwoCaches() throws {
    for (setup, rebuild) in [
      (["budget 25%", #"feed text "a square and a circle, side by side""#],
       "feed synthetic needle-video frames=12 seed=3"),
      (["budget 128 tokens", "feed synthetic count seed=3"], "prefill mode=sequential block=16"),
      (["budget 128 tokens", "prefill mode=sequential block=16", "feed synthetic count seed=3"],
       "prefill mode=capped block=tile"),
    ] {
      let (repl, capture) = makeEmbeddedRepl(self, load: true)
      let session = repl.session
      for line in setup { XCTAssertEqual(repl.run(line: line), .ok, capture.text) }
      let context = session.contextCount
      XCTAssertGreaterThan(context, 0)
      let before = documentedStorage(session)
      session.meter.resetHighWater()
      XCTAssertEqual(repl.run(line: rebuild), .ok, capture.text)
      let after = documentedStorage(session)
      let peak = session.meter.reading(.kv).highWater
      XCTAssertNotNil(session.budgetedCache, "\(setup); \(rebuild)")
      XCTAssertLessThanOrEqual(peak, max(before, after), "\(setup); \(rebuild): \(before) B then \(after) B")
      XCTAssertLessThan(peak, before + after, "\(setup); \(rebuild): two caches at once")
      if !rebuild.hasPrefix("feed") { XCTAssertEqual(session.contextCount, context, "the context re-prefilled") }
    }
  }

  /// A rebuild stopped part way (Ctrl-C while the context is re-prefilled into the new cache)
  /// has already released the old cache: the old settings' cache is built again and the
  /// recorded input prefilled into it, Ctrl-C or not, so the session is as it was — the same
  /// context, settings and cache, and the same next-token logits up to float rounding — and
  /// K/V never held two caches.
  func testAStoppedRebuildPutsTheSessionBack() throws {
    let (repl, capture) = makeEmbeddedRepl(self, load: true)
    let session = repl.session
    for line in ["feed synthetic count seed=3", #"feed text "which shape is red?""#] {
      XCTAssertEqual(repl.run(line: line), .ok, capture.text)
    }
    let context = session.context
    let settings = session.cacheSettings.description
    let held = try XCTUnwrap(session.cacheSummary)
    let logits = try XCTUnwrap(session.nextTokenLogits)
    session.meter.resetHighWater()
    session.cancellation.set()
    XCTAssertThrowsError(try session.configureBudget(.tokens(64))) { error in
      XCTAssertTrue("\(error)".contains("stopped"), "\(error)")
    }
    session.cancellation.clear()
    XCTAssertEqual(session.context, context)
    XCTAssertEqual(session.cacheSettings.description, settings)
    XCTAssertNil(session.budgetedCache, "the full cache again")
    XCTAssertEqual(session.cacheSummary?.tokens, held.tokens)
    let again = try XCTUnwrap(session.nextTokenLogits)
    let worst = zip(logits, again).map { abs($0 - $1) }.max() ?? .infinity
    XCTAssertLessThanOrEqual(worst, 1e-4)
    XCTAssertLessThanOrEqual(
      session.meter.reading(.kv).highWater,
      max(held.bytes, session.cacheSummary!.bytes, 64 * BudgetedCache.bytesPerToken(session.model!.config)),
      "one cache at a time")
    XCTAssertEqual(repl.run(line: #"ask "how many?" max=2"#), .ok, capture.text)
  }

  func budgetTokens(_ line: String) -> Int? {
    guard line.hasPrefix("budget ") else { return nil }
    return Int(line.split(separator: " ")[1])
  }

  /// The report that found it: `budget` then `mem` before anything is fed shows the budget, not
  /// the full cache's storage on top of it (300%), nor a second budgeted cache (500%).
  func testBudgetBeforeAnyFeedPeaksAtTheBudget() throws {
    for setup in [
      ["budget 128 tokens"], ["budget 128 tokens", "prefill block=frame"],
      ["prefill block=frame", "budget 128 tokens", "prefill mode=capped block=tile"],
      ["budget 256 tokens", "budget 128 tokens", "policy keydiff", "budget 128 tokens"],
    ] {
      let (repl, capture) = makeEmbeddedRepl(self)
      for line in ["load"] + setup + ["mem rss=off"] {
        XCTAssertEqual(repl.run(line: line), .ok, capture.text)
      }
      let peak = capture.lines.last ?? ""
      XCTAssertTrue(peak.hasPrefix("kv peak "), capture.text)
      if setup.contains("budget 256 tokens") {
        XCTAssertTrue(peak.hasSuffix("= 128 tokens (200.0%)"), "the 256-token budget came first: \(peak)")
      } else {
        XCTAssertTrue(peak.hasSuffix("= 128 tokens (100.0%)"), "\(setup): \(peak)")
      }
    }
  }
}

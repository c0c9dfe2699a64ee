import Foundation
import KVCache
import KVEngine
import XCTest

@testable import KVRepl

/// budget / policy / protect / quota / prefill / cache / mem on the real SmolLM2 model (skipped
/// when models/ does not hold it): each command's output, and that every error leaves the
/// session's context and cache exactly as they were.
final class CacheCommandTests: XCTestCase {
  static let text = String(
    repeating: "The lighthouse keeper counted the boats and wrote the number in his notebook. ",
    count: 6)
  static let perToken = 46080  // SmolLM2-135M: 2 · 30 layers · 3 KV heads · 64 · 4 bytes

  override func setUpWithError() throws {
    try XCTSkipIf(
      defaultModelPath == nil, "no models/SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/setup.sh)")
  }

  /// Runs a line that must succeed; returns what it printed.
  @discardableResult
  func ok(
    _ r: Repl, _ out: CaptureSink, _ line: String, file: StaticString = #filePath, at: UInt = #line
  ) -> [String] {
    CaptureSink.lines(output(of: line, in: r, out, file: file, line: at))
  }

  /// Everything the cache commands may change.
  struct State: Equatable {
    var context: [Int]
    var settings: String
    var retention: RetentionOptions
    var held: Int?
    var positions: [[Int]]
    var evicted: Int?
    var budget: Int?
    var kv: Int
  }

  func state(_ s: Session) -> State {
    let b = s.budgetedCache
    return State(
      context: s.context, settings: s.cacheSettings.description,
      retention: s.cacheSettings.retention,
      held: s.cacheSummary?.tokens,
      positions: b.map { b in
        (0..<b.layers).flatMap { l in (0..<b.kvHeads).map { b.positions(layer: l, head: $0) } }
      } ?? [],
      evicted: b?.evictedEntries, budget: b?.budget, kv: s.meter.reading(.kv).current)
  }

  /// Runs a line that must fail with exactly `message`, touching nothing.
  func fails(
    _ r: Repl, _ out: CaptureSink, _ line: String, _ message: String,
    file: StaticString = #filePath, at: UInt = #line
  ) {
    let before = state(r.session)
    let printed = output(of: line, in: r, out, expecting: .failed, file: file, line: at)
    XCTAssertEqual(printed, message + "\n", file: file, line: at)
    XCTAssertEqual(state(r.session), before, "\(line) changed the session", file: file, line: at)
  }

  /// Loaded, budget 64 tokens, snapkv window=8, capped blocks of 16, the text fed.
  func budgeted() -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    for line in [
      "load", "budget 64 tokens", "policy snapkv window=8", "prefill mode=capped block=16",
      #"feed text "\#(Self.text)""#,
    ] {
      ok(r, out, line)
    }
    return (r, out)
  }

  func testBudgetSetsShowsAndTurnsOff() throws {
    let (r, out) = makeRepl()
    XCTAssertEqual(ok(r, out, "budget"), ["budget off: the cache keeps every token"])
    XCTAssertEqual(
      ok(r, out, "budget 4MiB"),
      ["budget 4MiB (in tokens once a model is loaded); prefill mode=capped"])
    ok(r, out, "load")
    XCTAssertEqual(
      ok(r, out, "budget"),
      ["budget 4MiB = 91 tokens (46080 B of K/V per token); prefill mode=capped"])
    XCTAssertEqual(r.session.budgetedCache?.budget, 4 * 1_048_576 / Self.perToken)
    XCTAssertEqual(
      ok(r, out, "budget 64 tokens"),
      ["budget 64 tokens = 2.81 MiB (46080 B of K/V per token); prefill mode=capped"])
    ok(r, out, #"feed text "\#(Self.text)""#)
    XCTAssertGreaterThan(r.session.context.count, 100)  // about 130
    XCTAssertEqual(r.session.cacheSummary?.tokens, 64)
    XCTAssertEqual(
      ok(r, out, "budget 16 MiB"),
      ["budget 16MiB = 364 tokens (46080 B of K/V per token); prefill mode=capped"])
    XCTAssertEqual(r.session.budgetedCache?.budget, 364)
    XCTAssertEqual(r.session.cacheSummary?.tokens, 64)
    XCTAssertEqual(
      ok(r, out, "budget 32"),
      ["budget 32 tokens = 1.41 MiB (46080 B of K/V per token); prefill mode=capped"])
    XCTAssertEqual(r.session.cacheSummary?.tokens, 32)
    XCTAssertEqual(ok(r, out, "budget off"), ["budget off: the cache keeps every token"])
    XCTAssertNil(r.session.budgetedCache)
    XCTAssertEqual(r.session.cacheSummary?.tokens, r.session.context.count)
  }

  func testPyramidScheduleFromTheRepl() throws {
    let (r, out) = budgeted()
    XCTAssertEqual(
      ok(r, out, "budget 64 tokens schedule=pyramid"),
      [
        "budget 64 tokens = 2.81 MiB (46080 B of K/V per token); schedule pyramid (layer 0: 96, layer 29: 32); prefill mode=capped"
      ])
    let b = try XCTUnwrap(r.session.budgetedCache)
    XCTAssertEqual(b.layerBudgets.count, 30)
    XCTAssertEqual(b.layerBudgets.reduce(0, +), 64 * 30)
    // Layer 0 had 64 and gains room; the top layers compress at once to their share.
    XCTAssertEqual((0..<30).map { b.count(layer: $0) }, b.layerBudgets.map { min($0, 64) })
    XCTAssertEqual(r.session.meter.reading(.kv).current, 64 * Self.perToken)
    let shown = ok(r, out, "cache")
    XCTAssertTrue(shown.contains("budget    64 tokens = 2.81 MiB on average per layer"), "\(shown)")
    XCTAssertTrue(
      shown.contains("schedule  pyramid: 96 94 92 … 34 32 tokens (layers 0-29)"), "\(shown)")
    XCTAssertTrue(
      shown.contains("held      32 to 64 of 32 to 96 tokens per layer and KV head"), "\(shown)")
    // The next text fills every layer to its own budget; the KV peak stays the budget.
    r.session.meter.resetHighWater()
    ok(r, out, #"feed text "\#(Self.text)""#)
    XCTAssertEqual((0..<30).map { b.count(layer: $0) }, b.layerBudgets)
    XCTAssertEqual(r.session.meter.reading(.kv).highWater, 64 * Self.perToken)
    XCTAssertEqual(
      ok(r, out, "budget slope=0.25"),
      [
        "budget 64 tokens = 2.81 MiB (46080 B of K/V per token); schedule pyramid slope=0.25 (layer 0: 80, layer 29: 48); prefill mode=capped"
      ])
    for (line, message) in [
      (
        "budget schedule=pyramid slope=1.5",
        "error: budget: slope must be a number in 0...0.99, got '1.5'"
      ),
      (
        "budget 16 tokens schedule=pyramid slope=0.9",
        "error: budget: the pyramid slope=0.9 schedule of 16 tokens gives layer 29 only 2, below what snapkv window=8 kernel=5 needs (8)"
      ),
      (
        "budget off schedule=pyramid",
        "error: budget: budget off keeps every token: no schedule to set"
      ),
      ("budget schedule=uniform slope=0.5", "error: budget: slope= applies to schedule=pyramid"),
      (
        "budget schedule=cone",
        "error: budget: schedule must be one of uniform, pyramid, got 'cone'"
      ),
    ] {
      fails(r, out, line, message)
    }
    XCTAssertEqual(
      ok(r, out, "budget schedule=uniform"),
      ["budget 64 tokens = 2.81 MiB (46080 B of K/V per token); prefill mode=capped"])
    XCTAssertEqual(b.layerBudgets, Array(repeating: 64, count: 30))
  }

  func testBudgetErrorsLeaveTheCacheUntouched() throws {
    let (r, out) = budgeted()
    XCTAssertEqual(r.session.cacheSummary?.tokens, 64)
    for (line, message) in [
      ("budget 0", "error: budget: must be positive, got '0'"),
      ("budget -5 tokens", "error: budget: must be positive, got '-5 tokens'"),
      ("budget 16 mibs", "error: budget: unknown unit 'mibs' (did you mean 'MiB'?)"),
      ("budget 16 tokns", "error: budget: unknown unit 'tokns' (did you mean 'tokens'?)"),
      (
        "budget 12 parsecs",
        "error: budget: unknown unit 'parsecs'; use tokens, B, KB, MB, GB, KiB, MiB or GiB"
      ),
      (
        "budget lots",
        "error: budget: 'lots' is not a budget; expected e.g. '1024 tokens' or '24MiB'"
      ),
      ("budget 1.5 tokens", "error: budget: tokens must be a whole number, got '1.5 tokens'"),
      (
        "budget 4 tokens",
        "error: budget: budget of 4 tokens is below what snapkv window=8 kernel=5 needs (8)"
      ),
      ("budget 100B", "error: budget: 100B is less than one token (46080 B of K/V per token)"),
      (
        "policy snapkv window=100",
        "error: policy snapkv: budget of 64 tokens is below what snapkv window=100 kernel=5 needs (100)"
      ),
      ("policy snapkv kernel=4", "error: policy snapkv: kernel must be odd, got 4"),
      (
        "policy lru",
        "error: policy: unknown policy 'lru' (known: snapkv, keydiff, knorm, vnorm, random, streaming, h2o, infinipot, gridpool, floors, oracle)"
      ),
      (
        "prefill block=0",
        "error: prefill: block must be a number of tokens (e.g. 256), tile, frame or Nframes (e.g. 4frames), got '0'"
      ),
      (
        "quota frame=2 tile=3",
        "error: quota: frame= and tile= given; the cache keeps one quota (frame=N, tile=N or image=N)"
      ),
      (
        "cache layer 30",
        "error: cache layer: layer 30 does not exist (the model has 30 layers: 0-29)"
      ),
      (
        "cache log layer=30",
        "error: cache log: layer 30 does not exist (the model has 30 layers: 0-29)"
      ),
    ] {
      fails(r, out, line, message)
    }
    // Protected text the smaller budget cannot hold, with the policy's window.
    ok(r, out, "protect text=on")
    fails(
      r, out, "budget 32 tokens",
      "error: budget: budget of 32 tokens cannot hold the 64 entries that must stay (snapkv window=8 kernel=5, protected text) at layer 0, KV head 0"
    )
    ok(r, out, "protect text=off")
    // A policy that ranks by attention it has not seen yet cannot compress.
    ok(r, out, "policy keydiff")
    ok(r, out, "policy snapkv window=8")
    fails(
      r, out, "budget 32 tokens",
      "error: budget: snapkv window=8 kernel=5 ranks by the attention of the last 8 queries, and none has been seen since it was set (feed text first)"
    )
    ok(r, out, "policy h2o")
    fails(
      r, out, "budget 32 tokens",
      "error: budget: h2o ranks by the attention entries received since it was set, and no block has come since (feed text first)"
    )
    // The next block supplies the attention.
    ok(r, out, #"feed text "And then he slept.""#)
    ok(r, out, "budget 32 tokens")
    XCTAssertEqual(r.session.cacheSummary?.tokens, 32)
  }

  func testPolicyProtectAndQuota() throws {
    let (r, out) = makeRepl()
    XCTAssertEqual(
      ok(r, out, "policy"),
      [
        "policy snapkv window=32 kernel=5",
        "  attention from an observation window of recent queries",
        "protect: text off, system off; quota: none",
        "not in use until a budget is set (e.g. 'budget 1024 tokens')",
      ])
    XCTAssertEqual(ok(r, out, "policy streamingllm sinks=2").first, "policy streaming sinks=2")
    XCTAssertEqual(r.session.cacheSettings.policy.description, "streaming sinks=2")
    ok(r, out, "load")
    ok(r, out, "budget 64 tokens")
    ok(r, out, #"feed text "\#(Self.text)""#)
    let context = r.session.context
    XCTAssertEqual(
      ok(r, out, "policy knorm"),
      [
        "policy knorm", "  keep the keys of smallest norm (query-agnostic)",
        "protect: text off, system off; quota: none",
      ])
    XCTAssertEqual(r.session.budgetedCache?.policy.name, "knorm")
    XCTAssertEqual(ok(r, out, "policy h2o recent=8").first, "policy h2o recent=8")
    XCTAssertEqual(ok(r, out, "policy van").first, "policy vnorm")
    XCTAssertEqual(ok(r, out, "policy random seed=7").first, "policy random seed=7")
    XCTAssertEqual(
      ok(r, out, "policy infinipot alpha=0.25").first, "policy infinipot alpha=0.25 recent=0.25")
    XCTAssertEqual(r.session.context, context)
    XCTAssertEqual(r.session.cacheSummary?.tokens, 64)

    XCTAssertEqual(ok(r, out, "protect"), ["protect: text off, system off; quota: none"])
    XCTAssertEqual(
      ok(r, out, "protect text=on --system"), ["protect: text on, system on; quota: none"])
    XCTAssertEqual(
      r.session.budgetedCache?.options, RetentionOptions(protectText: true, protectSystem: true))
    XCTAssertEqual(
      ok(r, out, "quota frame=4"),
      ["protect: text on, system on; quota: at least 4 entries per frame"])
    XCTAssertEqual(
      r.session.budgetedCache?.options.quota, RetentionOptions.Quota(unit: .frame, minimum: 4))
    XCTAssertEqual(
      ok(r, out, "quota tile=1"), ["protect: text on, system on; quota: at least 1 entry per tile"])
    XCTAssertEqual(
      ok(r, out, "quota"), ["protect: text on, system on; quota: at least 1 entry per tile"])
    XCTAssertEqual(ok(r, out, "quota off"), ["protect: text on, system on; quota: none"])
    XCTAssertEqual(
      ok(r, out, "protect text=off system=off"), ["protect: text off, system off; quota: none"])
    XCTAssertEqual(r.session.budgetedCache?.options, RetentionOptions())
  }

  func testPrefillModes() throws {
    let (r, out) = makeRepl()
    ok(r, out, "load")
    XCTAssertEqual(
      ok(r, out, "prefill"),
      ["prefill mode=full block=512 (default)", "  every token is kept; no budget in use"])
    ok(r, out, "budget 64 tokens")
    ok(r, out, #"feed text "\#(Self.text)""#)
    let context = r.session.context
    XCTAssertEqual(
      ok(r, out, "prefill mode=post block=32"),
      [
        "prefill mode=post block=32",
        "  the whole input is prefilled, then compressed to the budget",
      ])
    XCTAssertEqual(r.session.budgetedCache?.mode, .post)
    XCTAssertEqual(r.session.cacheSummary?.tokens, 64)
    XCTAssertEqual(
      ok(r, out, "prefill mode=sequential"),
      [
        "prefill mode=sequential block=32",
        "  each block is appended, then the excess evicted (budget + block)",
      ])
    XCTAssertEqual(r.session.budgetedCache?.capacityTokens, 64 + 32)
    XCTAssertEqual(ok(r, out, "prefill block=16").first, "prefill mode=sequential block=16")
    XCTAssertEqual(r.session.budgetedCache?.capacityTokens, 64 + 16)
    XCTAssertEqual(ok(r, out, "prefill mode=full").last, "  every token is kept; no budget in use")
    XCTAssertNil(r.session.budgetedCache)
    XCTAssertEqual(r.session.cacheSummary?.tokens, context.count)
    XCTAssertEqual(
      ok(r, out, "policy").last, "not in use while prefill mode=full keeps every token")
    XCTAssertEqual(
      ok(r, out, "budget"),
      ["budget 64 tokens = 2.81 MiB (46080 B of K/V per token); prefill mode=full"])
    XCTAssertEqual(
      ok(r, out, "prefill mode=capped"),
      [
        "prefill mode=capped block=16 evict_every=2 (auto)",
        "  each block is scored with the cache; never more than the budget",
      ])
    XCTAssertEqual(r.session.budgetedCache?.capacityTokens, 64)
    XCTAssertEqual(r.session.budgetedCache?.evictEvery, 2)
    XCTAssertEqual(
      ok(r, out, "prefill evict_every=5").first, "prefill mode=capped block=16 evict_every=5")
    XCTAssertEqual(r.session.budgetedCache?.evictEvery, 5)
    fails(
      r, out, "prefill evict_every=0",
      "error: prefill: evict_every must be a number of tokens from 1 to 65536 or auto, got '0'")
    XCTAssertEqual(r.session.budgetedCache?.evictEvery, 5)
    XCTAssertEqual(
      ok(r, out, "prefill evict_every=auto").first,
      "prefill mode=capped block=16 evict_every=2 (auto)")
    XCTAssertEqual(r.session.context, context)
    // Visual blocks echo the word typed (a frame is not a tile to the reader).
    for (typed, echo) in [("frame", "frame"), ("tile", "tile"), ("4frames", "4frames"), ("2tiles", "2tiles"), ("Frame", "frame")] {
      XCTAssertEqual(
        ok(r, out, "prefill block=\(typed)").first,
        "prefill mode=capped block=\(echo) evict_every=2 (auto)", typed)
    }
  }

  func testCacheViews() throws {
    let (r, out) = budgeted()
    let b = try XCTUnwrap(r.session.budgetedCache)
    let n = r.session.context.count
    let blocks = (n + 15) / 16
    let evicted = (n - 64) * 90
    let summary = ok(r, out, "cache")
    XCTAssertEqual(
      Array(summary.prefix(7)),
      [
        "mode     capped, block 16, \(blocks) blocks so far",
        "budget   64 tokens = 2.81 MiB",
        "policy   snapkv window=8 kernel=5",
        "held     64 of 64 tokens per layer and KV head",
        "storage  2.81 MiB (30 layers × 3 KV heads)",
        "evicted  \(Format.bytes(evicted * 512)) so far (\(evicted) entries over 90 slots)",
        "",
      ])
    XCTAssertEqual(
      Array(summary.dropFirst(7)),
      Format.table([
        ["origin", "fed", "held", "kept"],
        ["text", "\(n)", "64.0", String(format: "%.1f%%", 6400 / Double(n))],
      ]))

    // cache layer 0: the positions printed are the positions each head holds.
    let layer = ok(r, out, "cache layer 0")
    XCTAssertEqual(
      Array(layer.prefix(5)),
      [
        "layer 0: 64 of 64 tokens per KV head", "head  held  text", "0       64    64",
        "1       64    64", "2       64    64",
      ])
    XCTAssertEqual(layer[5], "positions kept (of 0-\(n - 1)):")
    XCTAssertTrue(layer.allSatisfy { $0.count <= 80 })
    let kept = Self.positionLists(Array(layer.dropFirst(6)), prefix: "head ")
    XCTAssertEqual(kept, (0..<3).map { b.positions(layer: 0, head: $0) })

    // cache log: the last block, and which positions left each head.
    let log = ok(r, out, "cache log")
    let first = (blocks - 1) * 16
    let k = n - first
    XCTAssertEqual(
      log[0], "block \(blocks), positions \(first)-\(n - 1): \(k) left each layer and KV head")
    XCTAssertEqual(log[1], "layer  head  left  lowest kept  highest left  positions that left")
    XCTAssertTrue(log.allSatisfy { $0.count <= 80 })
    // A row has its layer number at column 4 (right-aligned under "layer"); continuation lines
    // of long position lists are indented under "positions that left".
    func isRow(_ line: String) -> Bool { line.count > 4 && Array(line)[4].isNumber }
    XCTAssertEqual(log.dropFirst(2).filter(isRow).count, 90)
    let records = b.lastEvictions
    XCTAssertEqual(records.count, 90)
    let logged = ok(r, out, "cache log layer=2")
    XCTAssertEqual(
      logged[0],
      "block \(blocks), positions \(first)-\(n - 1): \(k) left each layer and KV head; layer 2")
    let layer2 = records.filter { $0.layer == 2 }
    let column = try XCTUnwrap(logged[1].range(of: "positions that left")).lowerBound.utf16Offset(
      in: logged[1])
    var left: [[Int]] = []
    for line in logged.dropFirst(2) {
      if isRow(line) {
        let cells = line.split(separator: " ", maxSplits: 5).map(String.init)
        let rec = layer2[left.count]
        XCTAssertEqual(cells[0], "2")
        XCTAssertEqual(cells[1], "\(rec.kvHead)")
        XCTAssertEqual(cells[2], "\(rec.evicted.count)")
        XCTAssertEqual(Float(cells[3])!, rec.lowestKept!, accuracy: abs(rec.lowestKept!) * 1e-3)
        XCTAssertEqual(
          Float(cells[4])!, rec.evicted.map(\.score).max()!, accuracy: abs(rec.lowestKept!) * 1e-3)
        XCTAssertLessThanOrEqual(rec.evicted.map(\.score).max()!, rec.lowestKept!)
        left.append([])
      }
      left[left.count - 1] += Self.positionLists(["p 0 " + line.dropFirst(column)], prefix: "p ")[0]
    }
    XCTAssertEqual(left, layer2.map { $0.evicted.map(\.position).sorted() })

    // cache map: the view of what the cache holds, within 80 columns.
    let map = ok(r, out, "cache map")
    XCTAssertEqual(map, CacheViews.map(RetentionView(cache: b, origins: r.session.contextOrigins)))
    XCTAssertEqual(map[3], "text: \(n) tokens at positions 0-\(n - 1), \((n + 63) / 64) per cell")
    XCTAssertTrue(map.allSatisfy { $0.count <= 80 })

    // Without a budget: everything is held, nothing evicted.
    ok(r, out, "budget off")
    XCTAssertEqual(
      ok(r, out, "cache").first, "mode     full: every token is kept (no budget in use)")
    XCTAssertEqual(
      ok(r, out, "cache log"), ["no budget in use: the cache keeps every token, nothing is evicted"]
    )
    XCTAssertEqual(ok(r, out, "cache layer 29")[0], "layer 29: \(n) of 256 tokens per KV head")
    XCTAssertTrue(ok(r, out, "cache map")[4].allSatisfy { $0 == "│" || $0 == "█" })
  }

  /// Lines `PREFIX N  a-b, c, ...` with continuation lines, as position lists.
  static func positionLists(_ lines: [String], prefix: String) -> [[Int]] {
    var lists: [[Int]] = []
    for line in lines {
      var body = Substring(line)
      if line.hasPrefix(prefix) {
        lists.append([])
        body = body.dropFirst(prefix.count).drop { $0 != " " }
      }
      for item in body.split(whereSeparator: { $0 == " " || $0 == "," }) {
        let ends = item.split(separator: "-").map { Int($0)! }
        lists[lists.count - 1] += Array(ends[0]...ends[ends.count - 1])
      }
    }
    return lists
  }

  func testMemShowsTheKVPeakAgainstTheBudget() throws {
    let (r, out) = makeRepl()
    ok(r, out, "budget 64 tokens")
    ok(r, out, "load")
    ok(r, out, #"feed text "\#(Self.text)""#)
    XCTAssertEqual(
      ok(r, out, "mem rss=off").last,
      "kv peak 2.81 MiB = 64 tokens of the budget's 2.81 MiB = 64 tokens (100.0%)")
    XCTAssertEqual(
      ok(r, out, "mem rss=off unit=B").last,
      "kv peak 2949120 B = 64 tokens of the budget's 2949120 B = 64 tokens (100.0%)")
    // Rebuilding for sequential mode releases the old cache first: the peak is the new one's
    // storage (64 + a 16-token block), never both caches (144 tokens).
    ok(r, out, "prefill mode=sequential block=16")
    XCTAssertEqual(
      ok(r, out, "mem rss=off").last,
      "kv peak 3.52 MiB = 80 tokens of the budget's 2.81 MiB = 64 tokens (125.0%)")
    ok(r, out, "budget off")
    XCTAssertEqual(ok(r, out, "mem rss=off").last?.hasPrefix("total"), true)
  }

  /// examples/budget.kvl replays with identical output, run after run (scripts/test.sh replays
  /// it with the kvlab binary too).
  func testBudgetExampleReplays() throws {
    let path = repositoryRoot + "/examples/budget.kvl"
    for _ in 0..<2 {
      let (r, out) = makeRepl()
      XCTAssertEqual(r.runScript(path, check: true), 0, out.text)
      XCTAssertTrue(out.text.hasSuffix("output matches\n"), out.text)
    }
  }
}

import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// What the REPL's views and commands read from the cache: retention per position, the last
/// eviction event, the catalog's option declarations, and the refusal to rank without attention.
final class InspectionTests: XCTestCase {
  func makeInput(seed: UInt64, count: Int, origins: [TokenOrigin]? = nil) -> SyntheticInput {
    var rng = SeededRNG(seed: seed)
    let o = origins ?? Array(repeating: TokenOrigin(modality: .text, input: 0), count: count)
    return SyntheticInput(
      layers: 3, kvHeads: 2, queryHeads: 4, headDim: 8, origins: o, rng: &rng)
  }

  func cache(
    _ input: SyntheticInput, budget: Int, mode: PrefillMode = .capped, policy: any EvictionPolicy
  ) throws -> BudgetedCache {
    try BudgetedCache(
      layers: input.layers, kvHeads: input.kvHeads, headDim: input.headDim,
      queryHeads: input.queryHeads, budget: budget, mode: mode, policy: policy, blockSize: 16,
      meter: MemoryMeter())
  }

  func testHoldersCountTheSlotsHoldingEachPosition() throws {
    let input = makeInput(seed: 3, count: 40)
    let c = try cache(input, budget: 12, policy: KNormPolicy())
    try input.feed(0..<10, into: c)
    // Under the budget: every slot holds every position fed; later positions are not counted.
    XCTAssertEqual(c.holders(positions: 12), Array(repeating: 6, count: 10) + [0, 0])
    XCTAssertEqual(c.countRange, 10...10)
    try input.feed(10..<26, into: c)
    try input.feed(26..<40, into: c)
    let holders = c.holders(positions: 40)
    XCTAssertEqual(holders.reduce(0, +), 12 * 6)
    for p in 0..<40 {
      var expected = 0
      for l in 0..<3 {
        for h in 0..<2 where c.positions(layer: l, head: h).contains(p) { expected += 1 }
      }
      XCTAssertEqual(holders[p], expected, "position \(p)")
    }
    // K-norm: heads choose independently, so some position is held by some slots only.
    XCTAssertTrue(holders.contains { $0 > 0 && $0 < 6 })
    XCTAssertEqual(c.countRange, 12...12)
    XCTAssertEqual(c.holders(positions: 5).count, 5)
  }

  func testLastEventNamesTheBlockOrTheCompression() throws {
    let input = makeInput(seed: 4, count: 30)
    let c = try cache(input, budget: 10, policy: KNormPolicy())
    XCTAssertNil(c.lastEvent)
    try input.feed(0..<8, into: c)
    XCTAssertEqual(c.lastEvent, .block(index: 1, positions: 0...7))
    try input.feed(8..<20, into: c)
    XCTAssertEqual(c.lastEvent, .block(index: 2, positions: 8...19))
    try c.setBudget(6)
    XCTAssertEqual(c.lastEvent, .compression(budget: 6))
    XCTAssertEqual(c.count, 6)
  }

  /// A policy that ranks by attention refuses to compress before it has seen any: SnapKV after
  /// a policy that kept no window, H2O after any switch. The cache is untouched; the next block
  /// supplies the queries.
  func testAttentionPoliciesNeedABlockBeforeCompressing() throws {
    let input = makeInput(seed: 5, count: 48)
    for attention in [SnapKVPolicy(window: 4, kernel: 3), H2OPolicy()] as [any EvictionPolicy] {
      let c = try cache(input, budget: 20, policy: KeyDiffPolicy())
      try input.feed(0..<16, into: c)
      XCTAssertNil(c.scoringGap)
      try c.setPolicy(attention)
      XCTAssertNotNil(c.scoringGap, "\(attention)")
      let before = (0..<3).map { c.positions(layer: $0, head: 0) }
      XCTAssertThrowsError(try c.setBudget(8), "\(attention)") { e in
        guard case CacheError.invalidState(let m) = e else { return XCTFail("\(e)") }
        XCTAssertTrue(m.contains("\(attention.name)"), m)
        XCTAssertTrue(m.hasSuffix("(feed text first)"), m)
      }
      XCTAssertEqual(c.budget, 20)
      XCTAssertEqual((0..<3).map { c.positions(layer: $0, head: 0) }, before)
      try input.feed(16..<24, into: c)
      XCTAssertNil(c.scoringGap)
      try c.setBudget(8)
      XCTAssertEqual(c.count, 8)
    }
    // Post mode: the compression after the input refuses the same way.
    let post = try cache(input, budget: 10, mode: .post, policy: KNormPolicy())
    try input.feed(0..<16, into: post)
    try post.setPolicy(SnapKVPolicy(window: 4, kernel: 3))
    XCTAssertThrowsError(try post.compress())
    XCTAssertEqual(post.count, 16)
    try input.feed(16..<20, into: post)
    try post.compress()
    XCTAssertEqual(post.count, 10)
    // SnapKV after SnapKV keeps the window it has: no gap.
    let c = try cache(input, budget: 20, policy: SnapKVPolicy(window: 4, kernel: 3))
    try input.feed(0..<16, into: c)
    try c.setPolicy(SnapKVPolicy(window: 6, kernel: 3))
    XCTAssertNil(c.scoringGap)
    try c.setBudget(10)
    XCTAssertEqual(c.count, 10)
  }

  /// The catalog's declarations agree with what `make` builds: defaults are the policy's own,
  /// every alias resolves, ranges and oddness are enforced with the declared bounds.
  func testCatalogSpecsDescribeWhatMakeAccepts() throws {
    XCTAssertEqual(
      PolicyCatalog.names,
      ["snapkv", "keydiff", "knorm", "vnorm", "random", "streaming", "h2o", "infinipot", "gridpool", "floors", "oracle"])
    for spec in PolicyCatalog.specs {
      let p = try PolicyCatalog.make(spec.name)
      XCTAssertEqual(p.name, spec.name)
      let shown = Dictionary(uniqueKeysWithValues: p.options)
      for o in spec.options {
        // A choice at its default is left out of the policy's description (snapkv's pooling).
        if case .choice = o.kind, shown[o.name] == nil {
        } else {
          XCTAssertEqual(shown[o.name], o.defaultValue, "\(spec.name) \(o.name)")
        }
        switch o.kind {
        case .choice(let words):
          for w in words {
            XCTAssertNoThrow(try PolicyCatalog.make(spec.name, options: [o.name: w]))
          }
          XCTAssertThrowsError(try PolicyCatalog.make(spec.name, options: [o.name: "nope"]))
        case .integer(let range, let odd):
          XCTAssertNoThrow(
            try PolicyCatalog.make(spec.name, options: [o.name: "\(range.upperBound)"]))
          XCTAssertThrowsError(
            try PolicyCatalog.make(spec.name, options: [o.name: "\(range.upperBound + 1)"]))
          XCTAssertThrowsError(
            try PolicyCatalog.make(spec.name, options: [o.name: "\(range.lowerBound - 1)"]))
          if odd { XCTAssertThrowsError(try PolicyCatalog.make(spec.name, options: [o.name: "2"])) }
        case .number(let range):
          XCTAssertNoThrow(
            try PolicyCatalog.make(spec.name, options: [o.name: "\(range.upperBound)"]))
          XCTAssertThrowsError(
            try PolicyCatalog.make(spec.name, options: [o.name: "\(range.upperBound + 1)"]))
          XCTAssertThrowsError(try PolicyCatalog.make(spec.name, options: [o.name: "nan"]))
        }
      }
      for alias in spec.aliases { XCTAssertEqual(try PolicyCatalog.make(alias).name, spec.name) }
      XCTAssertEqual(PolicyCatalog.spec(named: spec.name.uppercased())?.name, spec.name)
      XCTAssertEqual(PolicyCatalog.optionNames[spec.name], spec.options.map(\.name))
    }
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["kernel": "4"])) { e in
      XCTAssertEqual("\(e)", "snapkv: kernel must be odd, got 4")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["window": "0"])) { e in
      XCTAssertEqual("\(e)", "snapkv: window must be a whole number in 1...65536, got '0'")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("infinipot", options: ["alpha": "1.5"])) { e in
      XCTAssertEqual("\(e)", "infinipot: alpha must be a number in 0...1, got '1.5'")
    }
  }

  func testBudgetUnits() {
    XCTAssertTrue(KVBudget.isUnit(""))
    XCTAssertTrue(KVBudget.isUnit("MIB"))
    XCTAssertTrue(KVBudget.isUnit("tok"))
    XCTAssertFalse(KVBudget.isUnit("mibs"))
    for u in KVBudget.units { XCTAssertTrue(KVBudget.isUnit(u), u) }
    XCTAssertEqual(KVBudget.split(" 16 mibs ").number, "16")
    XCTAssertEqual(KVBudget.split(" 16 mibs ").unit, "mibs")
    XCTAssertEqual(KVBudget.split("1_024tok").number, "1_024")
    XCTAssertThrowsError(try KVBudget.parse("0")) { e in
      XCTAssertEqual("\(e)", "must be positive, got '0'")
    }
  }
}

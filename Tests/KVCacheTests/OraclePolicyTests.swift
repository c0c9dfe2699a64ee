import Foundation
import KVModels
import KVTensor
import XCTest

@testable import KVCache

/// The oracle policy on synthetic activations: the targets come first, the fill orders the rest.
/// With K-norm as the fill (static scores), block-wise capped eviction must end with a
/// brute-force answer, so the checks do not depend on block boundaries.
final class OraclePolicyTests: XCTestCase {
  /// 3 tiles of 4×4 patches between text: positions 0..<8 text, then 48 patches, then 8 text.
  func input(seed: UInt64) -> SyntheticInput {
    var origins = Array(repeating: TokenOrigin(modality: .text, input: 0), count: 8)
    for t in 0..<3 {
      for r in 0..<4 {
        for c in 0..<4 {
          origins.append(TokenOrigin(modality: .image, input: 1, image: 0, tile: t, row: r, col: c))
        }
      }
    }
    origins += Array(repeating: TokenOrigin(modality: .text, input: 2), count: 8)
    var rng = SeededRNG(seed: seed)
    return SyntheticInput(
      layers: 2, kvHeads: 2, queryHeads: 4, headDim: 8, origins: origins, rng: &rng)
  }

  func norm(_ input: SyntheticInput, _ l: Int, _ h: Int, _ p: Int) -> Float {
    input.key(layer: l, position: p, head: h).map { $0 * $0 }.reduce(0, +)
  }

  /// The positions whose origin is one of `targets`.
  func targetPositions(_ input: SyntheticInput, _ targets: Set<PatchKey>) -> [Int] {
    input.origins.indices.filter { p in
      let o = input.origins[p]
      guard let image = o.image, let tile = o.tile, let row = o.row, let col = o.col else {
        return false
      }
      return targets.contains(
        PatchKey(input: o.input, image: image, tile: tile, row: row, col: col, frame: o.frame))
    }
  }

  func run(_ input: SyntheticInput, budget: Int, oracle: OraclePolicy, block: Int) throws
    -> BudgetedCache
  {
    let c = try BudgetedCache(
      layers: input.layers, kvHeads: input.kvHeads, headDim: input.headDim,
      queryHeads: input.queryHeads, budget: budget, mode: .capped, policy: oracle,
      options: RetentionOptions(), blockSize: block, meter: MemoryMeter())
    var s = 0
    while s < input.count {
      try input.feed(s..<min(input.count, s + block), into: c)
      s += block
    }
    return c
  }

  func testTargetsStayAndKNormFillsTheRest() throws {
    let x = input(seed: 11)
    // A 2×2 block of patches in tile 1 and one patch of tile 2 (the "global" one).
    let targets: Set<PatchKey> = [
      PatchKey(input: 1, image: 0, tile: 1, row: 1, col: 1),
      PatchKey(input: 1, image: 0, tile: 1, row: 1, col: 2),
      PatchKey(input: 1, image: 0, tile: 1, row: 2, col: 1),
      PatchKey(input: 1, image: 0, tile: 1, row: 2, col: 2),
      PatchKey(input: 1, image: 0, tile: 2, row: 3, col: 0),
    ]
    let wanted = targetPositions(x, targets)
    XCTAssertEqual(wanted.count, 5)
    let budget = 12
    for block in [1, 5, 16, 64] {
      let c = try run(
        x, budget: budget, oracle: OraclePolicy(fill: KNormPolicy(), targets: targets, source: "t"),
        block: block)
      for l in 0..<x.layers {
        for h in 0..<x.kvHeads {
          let others = x.origins.indices.filter { !wanted.contains($0) }
            .sorted { norm(x, l, h, $0) < norm(x, l, h, $1) }
          let expected = (wanted + others.prefix(budget - wanted.count)).sorted()
          XCTAssertEqual(c.positions(layer: l, head: h), expected, "block \(block) layer \(l) head \(h)")
        }
      }
    }
  }

  /// More targets than the budget: the cache does not refuse; it keeps the targets the fill
  /// prefers (lowest key norm), and nothing else.
  func testTargetsOverTheBudgetKeepTheFillsFavourites() throws {
    let x = input(seed: 12)
    var targets: Set<PatchKey> = []
    for r in 0..<4 { for c in 0..<4 { targets.insert(PatchKey(input: 1, image: 0, tile: 0, row: r, col: c)) } }
    let wanted = targetPositions(x, targets)
    let budget = 6
    let c = try run(
      x, budget: budget, oracle: OraclePolicy(fill: KNormPolicy(), targets: targets, source: "t"),
      block: 8)
    for l in 0..<x.layers {
      for h in 0..<x.kvHeads {
        let expected = wanted.sorted { norm(x, l, h, $0) < norm(x, l, h, $1) }.prefix(budget).sorted()
        XCTAssertEqual(c.positions(layer: l, head: h), Array(expected), "layer \(l) head \(h)")
      }
    }
  }

  /// Without targets it is its fill, entry for entry.
  func testNoTargetsIsTheFill() throws {
    let x = input(seed: 13)
    let a = try run(x, budget: 10, oracle: OraclePolicy(fill: KeyDiffPolicy()), block: 7)
    let b = try BudgetedCache(
      layers: x.layers, kvHeads: x.kvHeads, headDim: x.headDim, queryHeads: x.queryHeads,
      budget: 10, mode: .capped, policy: KeyDiffPolicy(), options: RetentionOptions(),
      blockSize: 7, meter: MemoryMeter())
    var s = 0
    while s < x.count {
      try x.feed(s..<min(x.count, s + 7), into: b)
      s += 7
    }
    for l in 0..<x.layers {
      for h in 0..<x.kvHeads {
        XCTAssertEqual(a.positions(layer: l, head: h), b.positions(layer: l, head: h))
      }
    }
  }

  func testCatalogOptions() throws {
    let made = try XCTUnwrap(try PolicyCatalog.make("oracle") as? OraclePolicy)
    XCTAssertEqual(made.fill.name, "keydiff")
    XCTAssertEqual(made.description, "oracle fill=keydiff (no targets)")
    let snap = try XCTUnwrap(try PolicyCatalog.make("oracle", options: ["fill": "snapkv"]) as? OraclePolicy)
    XCTAssertEqual(snap.fill.name, "snapkv")
    XCTAssertEqual(snap.queryWindow, 32)
    XCTAssertEqual(snap.minimumBudget, 32)
    XCTAssertThrowsError(try PolicyCatalog.make("oracle", options: ["fill": "oracle"])) {
      XCTAssertEqual(
        "\($0)",
        "oracle: fill must be one of keydiff, snapkv, knorm, vnorm, random, streaming, h2o, infinipot, gridpool, floors, got 'oracle'")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("oracle", options: ["window": "8"])) {
      XCTAssertEqual("\($0)", "oracle: unknown option 'window'; options: fill")
    }
  }

  /// Why the oracle filled by SnapKV (told the question) was refused on count samples that
  /// SnapKV alone answered: not its targets (never mandatory: it must keep exactly what its fill
  /// must), but its reply. A prompt-sized budget (text protected, one visual slot, a few
  /// unprotected marker slots) holds a one-token reply and the turn's end; a reply that runs on
  /// keeps its tokens in SnapKV's window (kept whatever their score), so closing the turn
  /// (protected text) is refused. K-norm, with no window, evicts the reply instead.
  func testARunOnReplyInSnapKVsWindowIsWhatOutgrowsThePromptBudget() throws {
    // Prompt: 10 text, 4 patches; then the reply (generated) and the turn's end (2 text).
    func run(_ policy: any EvictionPolicy, reply: Int) throws -> BudgetedCache {
      var origins = Array(repeating: TokenOrigin(modality: .text, input: 0), count: 6)
      origins += (0..<4).map {
        TokenOrigin(modality: .image, input: 1, image: 0, tile: 0, row: $0 / 2, col: $0 % 2)
      }
      origins += Array(repeating: TokenOrigin(modality: .text, input: 2), count: 4)
      origins += Array(repeating: TokenOrigin(modality: .generated, input: 2), count: reply)
      origins += Array(repeating: TokenOrigin(modality: .text, input: 2), count: 2)
      var rng = SeededRNG(seed: 4)
      let x = SyntheticInput(
        layers: 1, kvHeads: 1, queryHeads: 2, headDim: 8, origins: origins, rng: &rng)
      let c = try BudgetedCache(
        layers: 1, kvHeads: 1, headDim: 8, queryHeads: 2, budget: 10 + 3, mode: .capped,
        policy: policy, options: RetentionOptions(protectText: true), meter: MemoryMeter())
      try x.feed(0..<6, into: c)
      try x.feed(6..<10, into: c)
      try x.feed(10..<14, into: c)
      for g in 0..<reply { try x.feed((14 + g)..<(15 + g), into: c) }
      try x.feed((14 + reply)..<(16 + reply), into: c)
      return c
    }
    let target: Set<PatchKey> = [PatchKey(input: 1, image: 0, tile: 0, row: 0, col: 0)]
    let snap = SnapKVPolicy(window: 4, kernel: 1)
    let oracle = OraclePolicy(fill: snap, targets: target, source: "test")
    for p in [snap, oracle] as [any EvictionPolicy] {
      XCTAssertNoThrow(try run(p, reply: 1), "\(p): a one-token reply fits")
      XCTAssertThrowsError(try run(p, reply: 3), "\(p)") { e in
        XCTAssertTrue("\(e)".hasPrefix("budget of 13 tokens cannot hold the 14 entries"), "\(e)")
      }
    }
    // The oracle must keep what its fill must, whatever its targets.
    let c = try run(snap, reply: 1)
    let list = EntryList(
      layer: 0, kvHead: 0, budget: 13, meta: c.entries(layer: 0, head: 0),
      windowPositions: [12, 13, 14, 15])
    XCTAssertEqual(oracle.mustKeep(list), snap.mustKeep(list))
    XCTAssertNoThrow(try run(KNormPolicy(), reply: 3), "no window: the reply is evictable")
  }
}

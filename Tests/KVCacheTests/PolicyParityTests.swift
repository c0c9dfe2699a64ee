import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// kvlab's policies against kvpress 0.5.4's presses on the same Q/K/V
/// (fixtures: scripts/gen_policy_fixtures.py). Scores within 1e-5, identical selections.
///
/// Documented difference: kvpress pads SnapKV's window scores with one `max + 1` over every head
/// of the layer; kvlab uses each head's own max + 1. Both make the window mandatory, so only the
/// non-window scores are compared and the selections are identical.
final class PolicyParityTests: XCTestCase {
  struct Fixture: Decodable {
    struct Result: Decodable {
      let policy: String
      let options: [String: Int]
      let kept: Int
      let scores: [[Float]]
      let selected: [[Int]]
    }
    struct Blockwise: Decodable {
      let policy: String
      let kept: Int
      let block: Int
      let selected: [[Int]]
    }
    struct Case: Decodable {
      let seed: Int
      let heads: Int
      let kv_heads: Int
      let head_dim: Int
      let tokens: Int
      let queries: [Float]
      let keys: [Float]
      let values: [Float]
      let results: [Result]
      let blockwise: [Blockwise]
    }
    let cases: [Case]
  }

  static let fixture: Fixture = {
    let url = URL(fileURLWithPath: CachePaths.fixtures + "/policies/kvpress_presses.json")
    return try! JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
  }()

  static let tolerance: Float = 1e-5

  func policy(_ r: Fixture.Result) throws -> any EvictionPolicy {
    try PolicyCatalog.make(r.policy, options: r.options.mapValues { String($0) })
  }

  /// Commits the case's tokens to a one-layer cache in blocks of the given sizes.
  func feed(_ c: Fixture.Case, cache: BudgetedCache, blocks: [Int]) throws {
    let d = c.head_dim
    var start = 0
    for n in blocks {
      try c.queries.withUnsafeBufferPointer { q in
        try c.keys.withUnsafeBufferPointer { k in
          try c.values.withUnsafeBufferPointer { v in
            try cache.commit(
              layer: 0,
              block: KVBlock(
                keys: k.baseAddress! + start * c.kv_heads * d,
                values: v.baseAddress! + start * c.kv_heads * d,
                queries: q.baseAddress! + start * c.heads * d, ld: c.kv_heads * d,
                queryLD: c.heads * d,
                count: n, positions: Array(start..<start + n),
                origins: Array(repeating: TokenOrigin(modality: .text, input: 0), count: n)))
          }
        }
      }
      try cache.finishBlock()
      start += n
    }
  }

  func makeCache(
    _ c: Fixture.Case, _ policy: any EvictionPolicy, budget: Int, mode: PrefillMode, block: Int = 64
  ) throws -> BudgetedCache {
    try BudgetedCache(
      layers: 1, kvHeads: c.kv_heads, headDim: c.head_dim, queryHeads: c.heads, budget: budget,
      mode: mode, policy: policy, blockSize: block, meter: MemoryMeter())
  }

  func testScoresMatchKvpress() throws {
    var worst: [String: Float] = [:]
    for c in Self.fixture.cases {
      for r in c.results {
        let p = try policy(r)
        // Post mode: everything held, scored as a compression to `kept` would score it.
        let cache = try makeCache(c, p, budget: r.kept, mode: .post)
        try feed(c, cache: cache, blocks: [c.tokens])
        for h in 0..<c.kv_heads {
          let ours = cache.currentScores(layer: 0, head: h, budget: r.kept)
          let window = cache.mandatory(layer: 0, head: h, budget: r.kept)
          let tag = "seed \(c.seed) \(p) kept \(r.kept) head \(h)"
          if r.policy == "snapkv" {
            let w = r.options["window"]!
            XCTAssertEqual(window.filter { $0 }.count, w, tag)
            XCTAssertEqual(Array(window.suffix(w)), Array(repeating: true, count: w), tag)
            let body = 0..<(c.tokens - w)
            assertClose(Array(ours[body]), Array(r.scores[h][body]), tolerance: Self.tolerance, tag)
            worst[r.policy] = max(
              worst[r.policy] ?? 0, zip(ours[body], r.scores[h][body]).map { abs($0 - $1) }.max()!)
            // The window scores above every other (kvpress: global max + 1; here the head's).
            XCTAssertGreaterThan(ours[c.tokens - 1], ours[body].max()!, tag)
          } else {
            assertClose(ours, r.scores[h], tolerance: Self.tolerance, tag)
            worst[r.policy] = max(
              worst[r.policy] ?? 0, zip(ours, r.scores[h]).map { abs($0 - $1) }.max()!)
          }
        }
      }
    }
    print(
      "kvpress parity, max |Δscore| per policy:",
      worst.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
  }

  func testSelectionsMatchKvpressInEveryMode() throws {
    for c in Self.fixture.cases {
      for r in c.results {
        let p = try policy(r)
        // post: compress after the whole input (kvpress's practice).
        let post = try makeCache(c, p, budget: r.kept, mode: .post)
        try feed(c, cache: post, blocks: [c.tokens])
        try post.compress()
        // capped and sequential, one block: cache ∪ block scored at once.
        let capped = try makeCache(c, p, budget: r.kept, mode: .capped)
        try feed(c, cache: capped, blocks: [c.tokens])
        let sequential = try makeCache(c, p, budget: r.kept, mode: .sequential, block: c.tokens)
        try feed(c, cache: sequential, blocks: [c.tokens])
        for h in 0..<c.kv_heads {
          let tag = "seed \(c.seed) \(p) kept \(r.kept) head \(h)"
          XCTAssertEqual(post.positions(layer: 0, head: h), r.selected[h], "post " + tag)
          XCTAssertEqual(capped.positions(layer: 0, head: h), r.selected[h], "capped " + tag)
          XCTAssertEqual(
            sequential.positions(layer: 0, head: h), r.selected[h], "sequential " + tag)
        }
      }
    }
  }

  /// kvpress's BlockPress (the KeyDiff paper's block-wise loop): the first `kept` tokens in bulk,
  /// then blocks, keeping `kept` after each — kvlab's capped and sequential modes.
  func testBlockwiseSelectionsMatchKvpressBlockPress() throws {
    for c in Self.fixture.cases {
      for b in c.blockwise {
        let p = try PolicyCatalog.make(b.policy)
        var blocks = [b.kept]
        var start = b.kept
        while start < c.tokens {
          blocks.append(min(b.block, c.tokens - start))
          start += b.block
        }
        for mode in [PrefillMode.capped, .sequential] {
          let cache = try makeCache(c, p, budget: b.kept, mode: mode, block: max(b.kept, b.block))
          try feed(c, cache: cache, blocks: blocks)
          for h in 0..<c.kv_heads {
            XCTAssertEqual(
              cache.positions(layer: 0, head: h), b.selected[h],
              "\(mode) seed \(c.seed) \(p) kept \(b.kept) block \(b.block) head \(h)")
          }
        }
      }
    }
  }
}

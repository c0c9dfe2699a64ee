import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

final class BudgetedCacheTests: XCTestCase {
  func makeInput(
    seed: UInt64, count: Int, layers: Int = 2, kvHeads: Int = 2, group: Int = 2, headDim: Int = 8,
    origins: [TokenOrigin]? = nil
  ) -> SyntheticInput {
    var rng = SeededRNG(seed: seed)
    let o = origins ?? Array(repeating: TokenOrigin(modality: .text, input: 0), count: count)
    return SyntheticInput(
      layers: layers, kvHeads: kvHeads, queryHeads: kvHeads * group, headDim: headDim, origins: o,
      rng: &rng)
  }

  func cache(
    _ input: SyntheticInput, budget: Int, mode: PrefillMode = .capped, policy: any EvictionPolicy,
    options: RetentionOptions = RetentionOptions(), block: Int = 64,
    meter: MemoryMeter? = MemoryMeter()
  ) throws -> BudgetedCache {
    try BudgetedCache(
      layers: input.layers, kvHeads: input.kvHeads, headDim: input.headDim,
      queryHeads: input.queryHeads,
      budget: budget, mode: mode, policy: policy, options: options, blockSize: block, meter: meter)
  }

  func feed(_ input: SyntheticInput, _ c: KeyValueCache, block: Int) throws {
    var s = 0
    while s < input.count {
      try input.feed(s..<min(input.count, s + block), into: c)
      s += block
    }
  }

  // MARK: budgets

  func testBudgetParsing() throws {
    XCTAssertEqual(try KVBudget.parse("1024 tokens"), .tokens(1024))
    XCTAssertEqual(try KVBudget.parse("1024"), .tokens(1024))
    XCTAssertEqual(try KVBudget.parse("64tok"), .tokens(64))
    XCTAssertEqual(try KVBudget.parse("24MiB"), .bytes(24 << 20))
    XCTAssertEqual(try KVBudget.parse("16 MB"), .bytes(16_000_000))
    XCTAssertEqual(try KVBudget.parse("1.5GiB"), .bytes(3 << 29))
    XCTAssertEqual(try KVBudget.parse("512 KiB"), .bytes(512 << 10))
    XCTAssertEqual(KVBudget.bytes(24 << 20).description, "24MiB")
    // An exponent is part of the number; hexadecimal is refused as such.
    XCTAssertEqual(try KVBudget.parse("1e3 tokens"), .tokens(1000))
    XCTAssertEqual(try KVBudget.parse("2.5E+2"), .tokens(250))
    XCTAssertEqual(try KVBudget.parse("1e2MiB"), .bytes(100 << 20))
    for (text, message) in [
      ("1e30 tokens", "'1e30 tokens' is too large"),
      ("0x40 tokens", "'0x40 tokens' is not a budget: write the number in decimal"),
      ("1e400 tokens", "'1e400 tokens' is not a budget; expected e.g. '1024 tokens' or '24MiB'"),
    ] {
      XCTAssertThrowsError(try KVBudget.parse(text), text) {
        XCTAssertEqual("\($0)", message)
      }
    }
    for bad in [
      "0", "0 tokens", "-5 tokens", "12 parsecs", "1.5 tokens", "tokens", "", "abc", "-1MiB",
    ] {
      XCTAssertThrowsError(try KVBudget.parse(bad), bad) { e in
        guard case CacheError.invalidBudget(let m) = e else { return XCTFail("\(bad): \(e)") }
        XCTAssertFalse(m.isEmpty)
      }
    }
    XCTAssertTrue("\((try? KVBudget.parse("12 parsecs")) as Any)".contains("nil"))
    do { _ = try KVBudget.parse("12 parsecs") } catch {
      XCTAssertTrue("\(error)".contains("unknown unit 'parsecs'"))
    }
  }

  /// A byte budget converts with the model's KV bytes per token (SmolLM2-135M: 30 layers, 3 KV
  /// heads, head dim 64 → 46080 B/token), rounding down, and storage is exactly that.
  func testByteBudgetUsesKVBytesPerToken() throws {
    let config = DecoderConfig(
      architecture: "llama", hiddenSize: 576, intermediateSize: 1536, layers: 30, heads: 9,
      kvHeads: 3,
      headDim: 64, vocabularySize: 49152, ropeTheta: 1e5, rmsNormEps: 1e-5, contextLength: 8192,
      tiedEmbeddings: true, attentionBias: false)
    XCTAssertEqual(BudgetedCache.bytesPerToken(config), config.kvBytesPerToken)
    XCTAssertEqual(KVBudget.bytes(24 << 20).tokens(kvBytesPerToken: config.kvBytesPerToken), 546)
    let meter = MemoryMeter()
    let c = try BudgetedCache(
      config: config, budget: .bytes(24 << 20), mode: .capped, policy: KeyDiffPolicy(), meter: meter
    )
    XCTAssertEqual(c.budget, 546)
    XCTAssertEqual(meter.reading(.kv).highWater, 546 * 46080)
    XCTAssertLessThanOrEqual(meter.reading(.kv).highWater, 24 << 20)
    XCTAssertThrowsError(
      try BudgetedCache(
        config: config, budget: .bytes(40000), mode: .capped, policy: KeyDiffPolicy(), meter: nil))
  }

  func testBadConfigurationsAreClearErrors() throws {
    let input = makeInput(seed: 1, count: 10)
    XCTAssertThrowsError(try cache(input, budget: 0, policy: KNormPolicy())) { e in
      XCTAssertEqual("\(e)", "budget must be at least 1 token, got 0")
    }
    XCTAssertThrowsError(try cache(input, budget: -3, policy: KNormPolicy()))
    XCTAssertThrowsError(try cache(input, budget: 16, policy: SnapKVPolicy(window: 32))) { e in
      XCTAssertTrue("\(e)".contains("below what snapkv window=32 kernel=5 needs (32)"), "\(e)")
    }
    XCTAssertThrowsError(try cache(input, budget: 4, policy: StreamingLLMPolicy(sinks: 4)))
    XCTAssertThrowsError(
      try BudgetedCache(
        layers: 1, kvHeads: 1, headDim: 4, queryHeads: 1, budget: 8, mode: .full,
        policy: KNormPolicy(), meter: nil))
    // Policies by name.
    XCTAssertEqual(
      try PolicyCatalog.make("snapkv", options: ["window": "16", "kernel": "3"]).description,
      "snapkv window=16 kernel=3")
    XCTAssertEqual(
      try PolicyCatalog.make("infinipot").description, "infinipot alpha=0.5 recent=0.25")
    XCTAssertThrowsError(try PolicyCatalog.make("lru")) { e in
      XCTAssertTrue("\(e)".hasPrefix("unknown policy 'lru'; known: snapkv, keydiff"), "\(e)")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["windw": "3"])) { e in
      XCTAssertEqual("\(e)", "snapkv: unknown option 'windw'; options: window, kernel, pooling")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("keydiff", options: ["x": "1"])) { e in
      XCTAssertEqual("\(e)", "keydiff: unknown option 'x' (it takes none)")
    }
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["kernel": "4"]))
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["window": "-1"]))
    XCTAssertThrowsError(try PolicyCatalog.make("infinipot", options: ["alpha": "1.5"]))
    // Sequential mode refuses a block larger than its storage, before touching anything.
    let seq = try cache(input, budget: 4, mode: .sequential, policy: KNormPolicy(), block: 3)
    try input.feed(0..<3, into: seq)
    let before = seq.positions(layer: 0, head: 0)
    XCTAssertThrowsError(try input.feed(3..<8, into: seq)) { e in
      XCTAssertEqual("\(e)", "block of 5 tokens exceeds the sequential cache's block size 3")
    }
    XCTAssertEqual(seq.positions(layer: 0, head: 0), before)
    XCTAssertEqual(seq.positions(layer: 1, head: 1), before)
  }

  /// Protected tokens that no longer fit: the block is refused with a clear error and the
  /// cache is exactly as before (every layer).
  func testBudgetTooSmallForProtectedTokensLeavesCacheUntouched() throws {
    let origins = (0..<12).map { TokenOrigin(modality: $0 < 9 ? .text : .image, input: 0) }
    let input = makeInput(seed: 2, count: 12, origins: origins)
    let c = try cache(
      input, budget: 8, policy: KNormPolicy(), options: RetentionOptions(protectText: true))
    try input.feed(0..<6, into: c)
    let before = BudgetPropertyTests.snapshot(c)
    XCTAssertThrowsError(try input.feed(6..<12, into: c)) { e in
      XCTAssertTrue(
        "\(e)".hasPrefix(
          "budget of 8 tokens cannot hold the 9 entries that must stay (knorm, protected text)"),
        "\(e)")
    }
    XCTAssertEqual(BudgetPropertyTests.snapshot(c), before)
  }

  // MARK: storage

  /// Capped storage is allocated once at the budget; sequential at budget + block; post grows
  /// and is shrunk to the budget by `compress`.
  func testStorageSizesPerMode() throws {
    let input = makeInput(seed: 3, count: 200)
    let bpt = 2 * input.layers * input.kvHeads * input.headDim * 4
    for (mode, expected) in [(PrefillMode.capped, 40 * bpt), (.sequential, (40 + 16) * bpt)] {
      let meter = MemoryMeter()
      let c = try cache(
        input, budget: 40, mode: mode, policy: KeyDiffPolicy(), block: 16, meter: meter)
      XCTAssertEqual(meter.reading(.kv).current, expected)
      try feed(input, c, block: 16)
      XCTAssertEqual(meter.reading(.kv).highWater, expected, "\(mode)")
      XCTAssertEqual(c.bytesHeld, expected)
      XCTAssertEqual(c.count, 40)
    }
    let meter = MemoryMeter()
    let post = try cache(input, budget: 40, mode: .post, policy: KeyDiffPolicy(), meter: meter)
    try feed(input, post, block: 16)
    XCTAssertEqual(post.count, 200)
    XCTAssertGreaterThanOrEqual(meter.reading(.kv).highWater, 200 * bpt)
    try post.compress()
    XCTAssertEqual(post.count, 40)
    XCTAssertEqual(meter.reading(.kv).current, 40 * bpt)
  }

  /// With a budget that covers the input, every mode holds exactly what the dense cache holds.
  func testLargeBudgetHoldsEverythingInEveryMode() throws {
    let input = makeInput(seed: 4, count: 90)
    let dense = DenseKVCache(
      layers: input.layers, kvHeads: input.kvHeads, headDim: input.headDim, meter: nil)
    try feed(input, dense, block: 32)
    for mode in [PrefillMode.capped, .sequential, .post] {
      let c = try cache(input, budget: 100, mode: mode, policy: SnapKVPolicy(window: 8), block: 32)
      try feed(input, c, block: 32)
      for l in 0..<input.layers {
        let a = dense.cached(layer: l)
        let b = c.cached(layer: l)
        XCTAssertEqual(a.count, b.count)
        for h in 0..<input.kvHeads {
          for r in 0..<a.count {
            XCTAssertEqual(
              Array(
                UnsafeBufferPointer(
                  start: a.keys + h * a.headStride + r * a.rowStride, count: input.headDim)),
              Array(
                UnsafeBufferPointer(
                  start: b.keys + h * b.headStride + r * b.rowStride, count: input.headDim)))
          }
        }
      }
    }
  }

  // MARK: policies

  /// K-norm's scores are static, so block-wise greedy eviction keeps the global top-M per head,
  /// whatever the block sizes: a check of the capped merge against a brute-force answer.
  func testKNormCappedKeepsGlobalTopMPerHead() throws {
    let input = makeInput(seed: 5, count: 150)
    for block in [1, 7, 64, 150] {
      let c = try cache(input, budget: 37, policy: KNormPolicy())
      try feed(input, c, block: block)
      for l in 0..<input.layers {
        for h in 0..<input.kvHeads {
          let norms = (0..<150).map { p in
            input.key(layer: l, position: p, head: h).map { $0 * $0 }.reduce(0, +)
          }
          let expected = (0..<150).sorted { norms[$0] < norms[$1] }.prefix(37).sorted()
          XCTAssertEqual(
            c.positions(layer: l, head: h), Array(expected), "block \(block) layer \(l) head \(h)")
        }
      }
    }
  }

  /// Per-head selection: heads of one layer keep different positions (as kvpress does).
  func testHeadsSelectIndependently() throws {
    let input = makeInput(seed: 6, count: 80)
    let c = try cache(input, budget: 20, policy: KeyDiffPolicy())
    try feed(input, c, block: 16)
    XCTAssertNotEqual(c.positions(layer: 0, head: 0), c.positions(layer: 0, head: 1))
    XCTAssertEqual(c.positions(layer: 0, head: 0).count, c.positions(layer: 0, head: 1).count)
  }

  func testRandomPolicyIsSeededAndIndependentOfBlocks() throws {
    let input = makeInput(seed: 7, count: 120)
    var results: [[Int]] = []
    for block in [1, 13, 120] {
      let c = try cache(input, budget: 30, policy: RandomPolicy(seed: 9))
      try feed(input, c, block: block)
      results.append(c.positions(layer: 1, head: 1))
    }
    XCTAssertEqual(results[0], results[1])
    XCTAssertEqual(results[1], results[2])
    let other = try cache(input, budget: 30, policy: RandomPolicy(seed: 10))
    try feed(input, other, block: 13)
    XCTAssertNotEqual(other.positions(layer: 1, head: 1), results[0])
  }

  func testStreamingKeepsSinksAndRecent() throws {
    let input = makeInput(seed: 8, count: 100)
    let c = try cache(input, budget: 20, policy: StreamingLLMPolicy(sinks: 4))
    try feed(input, c, block: 9)
    XCTAssertEqual(c.positions(layer: 0, head: 0), Array(0..<4) + Array(84..<100))
    XCTAssertEqual(c.positions(layer: 1, head: 1), Array(0..<4) + Array(84..<100))
  }

  /// Decoding-like blocks of one token: the window (the last w queries seen) stays in the cache.
  func testSnapKVWindowSpansShortBlocks() throws {
    let input = makeInput(seed: 9, count: 60)
    let c = try cache(input, budget: 12, policy: SnapKVPolicy(window: 6, kernel: 3))
    try input.feed(0..<40, into: c)
    for t in 40..<60 {
      try input.feed(t..<t + 1, into: c)
      XCTAssertTrue(Set((t - 5)...t).isSubset(of: c.positions(layer: 1, head: 0)), "step \(t)")
    }
  }

  /// `evictEvery`: a decoded token that overflows the capped cache frees room for the next
  /// N − 1, so a decision (scoring, compaction) runs once every N tokens; the cache never holds
  /// more than the budget, the window stays, and blocks of N tokens or more fill it exactly.
  func testEvictEveryBatchesDecodedTokens() throws {
    let input = makeInput(seed: 9, count: 70)
    let c = try cache(input, budget: 16, policy: SnapKVPolicy(window: 4, kernel: 3))
    c.evictEvery = 4
    try input.feed(0..<40, into: c)
    XCTAssertEqual(c.count, 16, "a block of 40 fills the budget exactly")
    var counts: [Int] = []
    var decisions = 0
    for t in 40..<60 {
      let evicted = c.evictedEntries
      try input.feed(t..<t + 1, into: c)
      counts.append(c.count)
      if c.evictedEntries > evicted { decisions += 1 }
      XCTAssertTrue(Set((t - 3)...t).isSubset(of: c.positions(layer: 1, head: 1)), "step \(t)")
      XCTAssertLessThanOrEqual(c.capacityTokens, 16)
    }
    XCTAssertEqual(counts, Array(repeating: [13, 14, 15, 16], count: 5).flatMap { $0 })
    XCTAssertEqual(decisions, 5)
    try input.feed(60..<65, into: c)
    XCTAssertEqual(c.count, 16, "a block as large as the interval evicts to the budget itself")
    // One token at a time with the interval at 1 decides at every step, as before.
    let every = try cache(input, budget: 16, policy: SnapKVPolicy(window: 4, kernel: 3))
    try input.feed(0..<40, into: every)
    for t in 40..<44 {
      try input.feed(t..<t + 1, into: every)
      XCTAssertEqual(every.count, 16)
    }
  }

  /// Proxy queries (a question or template run after the block, never cached) come after every
  /// entry: SnapKV's scores from them are their softmax attention over all the entries,
  /// averaged over rows and the GQA group, computed here independently. (They once sat at
  /// negative positions that masked every entry, so every score was 0 and the ranking fell to
  /// recency.)
  func testSnapKVProxyQueriesSeeEveryEntry() throws {
    let input = makeInput(seed: 12, count: 24, layers: 1, kvHeads: 2, group: 2, headDim: 8)
    let proxy = makeInput(seed: 13, count: 5, layers: 1, kvHeads: 2, group: 2, headDim: 8)
    let c = try cache(input, budget: 64, policy: SnapKVPolicy(window: 4, kernel: 1))
    try input.feed(0..<16, into: c)
    let block = 16..<24
    try input.rows[0].withUnsafeBufferPointer { buf in
      try proxy.rows[0].withUnsafeBufferPointer { pbuf in
        let base = buf.baseAddress! + block.lowerBound * input.ld
        var b = KVBlock(
          keys: base + input.qDim, values: base + input.qDim + input.kvDim, queries: base,
          ld: input.ld, queryLD: input.ld, count: block.count, positions: Array(block),
          origins: Array(input.origins[block]))
        b.proxyQueries = pbuf.baseAddress!
        b.proxyCount = proxy.count
        try c.commit(layer: 0, block: b)
      }
    }
    try c.finishBlock()
    let d = input.headDim
    for g in 0..<input.kvHeads {
      let scores = c.currentScores(layer: 0, head: g)
      XCTAssertEqual(scores.count, 24)
      var expected = [Double](repeating: 0, count: 24)
      for h in (g * 2)..<(g * 2 + 2) {
        for r in (proxy.count - 4)..<proxy.count {  // the window: the last 4 proxy rows
          let q = proxy.rows[0][(r * proxy.ld + h * d)..<(r * proxy.ld + h * d + d)]
          let logits = (0..<24).map { j -> Double in
            let k = input.key(layer: 0, position: j, head: g)
            return zip(q, k).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } / Double(d).squareRoot()
          }
          let m = logits.max()!
          let e = logits.map { Foundation.exp($0 - m) }
          let sum = e.reduce(0, +)
          for j in 0..<24 { expected[j] += e[j] / sum / 4 / 2 }
        }
      }
      for j in 0..<24 {
        XCTAssertEqual(Double(scores[j]), expected[j], accuracy: 1e-5, "head \(g), entry \(j)")
      }
      XCTAssertGreaterThan(scores.max() ?? 0, 0)
    }
  }

  /// H2O's carried scores are the attention each entry received from every query so far
  /// (causal, averaged over the GQA group): checked against a brute-force attention matrix.
  func testH2OAccumulatesAttentionReceived() throws {
    let input = makeInput(seed: 10, count: 30, layers: 1, kvHeads: 1, group: 3, headDim: 8)
    let c = try cache(input, budget: 64, policy: H2OPolicy())
    try feed(input, c, block: 7)
    let d = input.headDim
    var expected = [Float](repeating: 0, count: 30)
    for h in 0..<3 {
      for i in 0..<30 {
        let q = Array(input.rows[0][(i * input.ld + h * d)..<(i * input.ld + h * d + d)])
        var logits = (0...i).map { j -> Float in
          zip(q, input.key(layer: 0, position: j, head: 0)).map { $0 * $1 }.reduce(0, +)
            / Float(d).squareRoot()
        }
        let m = logits.max()!
        logits = logits.map { Foundation.exp($0 - m) }
        let s = logits.reduce(0, +)
        for j in 0...i { expected[j] += logits[j] / s / 3 }
      }
    }
    assertClose(
      c.currentScores(layer: 0, head: 0), expected, tolerance: 1e-4, "H2O accumulated attention")
    // With eviction: the recent half is kept, the rest are the heaviest hitters.
    let small = try cache(input, budget: 10, policy: H2OPolicy(recent: 4))
    try feed(input, small, block: 7)
    let kept = small.positions(layer: 0, head: 0)
    XCTAssertEqual(kept.count, 10)
    XCTAssertTrue(Set(26..<30).isSubset(of: kept))
  }

  /// InfiniPot-V on synthetic frames: the system prompt and the most recent frame stay; of the
  /// past frames, α·slots tokens are chosen by TaR (least redundant with the same patch in the
  /// recent frame), VaN fills the rest.
  func testInfiniPotVOnSyntheticFrames() throws {
    let system = (0..<5).map { _ in TokenOrigin(modality: .text, input: 0, isSystem: true) }
    var origins = system
    for f in 0..<8 {
      for p in 0..<9 {
        origins.append(
          TokenOrigin(modality: .video, input: 1, image: 0, row: p / 3, col: p % 3, frame: f))
      }
    }
    var input = makeInput(
      seed: 11, count: origins.count, layers: 1, kvHeads: 1, group: 1, headDim: 4, origins: origins)
    // Keys: the newest frame's patch p is 2·e_(p mod 4); past even patches repeat it (TaR −1
    // exactly), odd ones are its negation (TaR +1). Values: norm (7 − f)·10 + p (older frames
    // larger).
    var rows = input.rows[0]
    let ld = input.ld
    for f in 0..<8 {
      for p in 0..<9 {
        let t = 5 + f * 9 + p
        let sign: Float = f == 7 || p % 2 == 0 ? 1 : -1
        for c in 0..<4 {
          rows[t * ld + 4 + c] = c == p % 4 ? 2 * sign : 0
          rows[t * ld + 8 + c] = c == 0 ? Float((7 - f) * 10 + p) : 0
        }
      }
    }
    input.rows = [rows]
    let policy = InfiniPotVPolicy(alpha: 0.5, recent: 0.45)
    let c = try cache(input, budget: 22, policy: policy)
    try input.feed(0..<input.count, into: c)
    let kept = c.positions(layer: 0, head: 0)
    func pos(_ f: Int, _ p: Int) -> Int { 5 + f * 9 + p }
    let expected =
      Array(0..<5) + [1, 3, 5, 7].map { pos(6, $0) } + [5, 6, 7, 8].map { pos(0, $0) }
      + (0..<9).map { pos(7, $0) }
    XCTAssertEqual(kept, expected.sorted())
    // Frame by frame, the invariants hold.
    let framed = try cache(input, budget: 22, policy: policy)
    try input.feed(0..<5, into: framed)
    for f in 0..<8 {
      try input.feed(pos(f, 0)..<pos(f, 9), into: framed)
      let k = framed.positions(layer: 0, head: 0)
      XCTAssertTrue(Set(0..<5).isSubset(of: k))
      XCTAssertTrue(Set(pos(f, 0)..<pos(f, 9)).isSubset(of: k))
      XCTAssertEqual(k.count, min(22, pos(f, 9)))
    }
  }

  /// Per-frame quota: every frame keeps at least its minimum even when the policy would drop it.
  func testFrameQuota() throws {
    var origins: [TokenOrigin] = []
    for f in 0..<6 {
      for p in 0..<4 {
        origins.append(TokenOrigin(modality: .video, input: 0, image: 0, row: 0, col: p, frame: f))
      }
    }
    var input = makeInput(
      seed: 12, count: 24, layers: 1, kvHeads: 1, group: 1, headDim: 4, origins: origins)
    var rows = input.rows[0]
    for t in 0..<8 { for c in 0..<4 { rows[t * input.ld + 4 + c] *= 100 } }  // frames 0, 1: huge keys
    input.rows = [rows]
    let plain = try cache(input, budget: 10, policy: KNormPolicy())
    try input.feed(0..<24, into: plain)
    XCTAssertTrue(
      plain.positions(layer: 0, head: 0).allSatisfy { $0 >= 8 }, "K-norm drops frames 0 and 1")
    let quota = try cache(
      input, budget: 10, policy: KNormPolicy(),
      options: RetentionOptions(quota: .init(unit: .frame, minimum: 1)))
    try feed(input, quota, block: 4)
    let frames = Set(quota.entries(layer: 0, head: 0).compactMap { $0.frameIndex })
    XCTAssertEqual(frames, Set(0..<6))
  }

  func testProtectTextKeepsTextAgainstThePolicy() throws {
    let origins = (0..<40).map { TokenOrigin(modality: $0 % 4 == 0 ? .text : .image, input: 0) }
    var input = makeInput(
      seed: 13, count: 40, layers: 1, kvHeads: 1, group: 1, headDim: 4, origins: origins)
    var rows = input.rows[0]
    for t in stride(from: 0, to: 40, by: 4) { for c in 0..<4 { rows[t * input.ld + 4 + c] *= 100 } }
    input.rows = [rows]
    let c = try cache(
      input, budget: 15, policy: KNormPolicy(), options: RetentionOptions(protectText: true))
    try feed(input, c, block: 8)
    XCTAssertTrue(Set(stride(from: 0, to: 40, by: 4)).isSubset(of: c.positions(layer: 0, head: 0)))
    XCTAssertEqual(c.countsByModality(layer: 0, head: 0), [.text: 10, .image: 5])
  }

  // MARK: changes mid-session

  func testBudgetChangesMidSession() throws {
    let input = makeInput(seed: 14, count: 160)
    let bpt = 2 * input.layers * input.kvHeads * input.headDim * 4
    let meter = MemoryMeter()
    let c = try cache(input, budget: 50, policy: KeyDiffPolicy(), meter: meter)
    try feed(input, c, block: 16)
    try input.feed(0..<0, into: c)
    let held = Set(c.positions(layer: 0, head: 0))
    // Shrink: compress now with the active policy; storage shrinks, one buffer (a layer's keys
    // or values) at a time.
    let oneBuffer = { (tokens: Int) in tokens * bpt / (2 * input.layers) }
    try c.setBudget(30)
    XCTAssertEqual(c.count, 30)
    XCTAssertTrue(Set(c.positions(layer: 0, head: 0)).isSubset(of: held))
    XCTAssertEqual(meter.reading(.kv).current, 30 * bpt)
    XCTAssertEqual(meter.reading(.kv).highWater, 50 * bpt + oneBuffer(30))
    try BudgetPropertyTests.checkIntegrity(c, input, fed: 160, tag: "after shrink")
    // Grow: larger storage, the held entries kept; the transient is one layer of the old.
    meter.resetHighWater()
    try c.setBudget(80)
    XCTAssertEqual(c.count, 30)
    XCTAssertEqual(meter.reading(.kv).current, 80 * bpt)
    XCTAssertLessThanOrEqual(meter.reading(.kv).highWater, 80 * bpt + oneBuffer(30))
    try BudgetPropertyTests.checkIntegrity(c, input, fed: 160, tag: "after grow")
    // A policy change applies to the next eviction.
    try c.setPolicy(StreamingLLMPolicy(sinks: 2))
    XCTAssertThrowsError(try c.setBudget(2))
    XCTAssertEqual(c.count, 30)
    XCTAssertThrowsError(try c.setPolicy(SnapKVPolicy(window: 100)))
    XCTAssertEqual(c.policy.name, "streaming")
  }

  func testEvictionLog() throws {
    let input = makeInput(seed: 15, count: 40)
    let bytesPerEntry = 2 * input.headDim * 4
    let c = try cache(input, budget: 16, policy: KNormPolicy())
    c.logEvictions = true
    try input.feed(0..<16, into: c)
    XCTAssertTrue(c.lastEvictions.allSatisfy { $0.evicted.isEmpty })
    try input.feed(16..<24, into: c)
    XCTAssertEqual(c.lastEvictions.count, input.layers * input.kvHeads)
    for r in c.lastEvictions {
      XCTAssertEqual(r.evicted.count, 8)
      XCTAssertTrue(
        Set(r.evicted.map(\.position)).isDisjoint(with: c.positions(layer: r.layer, head: r.kvHead))
      )
      XCTAssertTrue(r.evicted.allSatisfy { $0.score <= r.lowestKept! })
    }
    XCTAssertEqual(c.evictedEntries, 8 * input.layers * input.kvHeads)
    XCTAssertEqual(c.evictedBytes, c.evictedEntries * bytesPerEntry)
  }
}

/// Per-layer budget schedules.
final class BudgetScheduleTests: XCTestCase {
  func testPyramidSpreadsTheSameTotalLinearly() throws {
    XCTAssertEqual(BudgetSchedule.uniform.layerBudgets(mean: 100, layers: 4), [100, 100, 100, 100])
    // 1.5·M at layer 0, 0.5·M at the last, linear in between (PyramidKV's shape).
    XCTAssertEqual(
      BudgetSchedule.pyramid(slope: 0.5).layerBudgets(mean: 100, layers: 5),
      [150, 125, 100, 75, 50])
    XCTAssertEqual(BudgetSchedule.pyramid(slope: 0.5).layerBudgets(mean: 64, layers: 1), [64])
    XCTAssertEqual(BudgetSchedule.pyramid(slope: 0).layerBudgets(mean: 7, layers: 3), [7, 7, 7])
    var rng = SeededRNG(seed: 21)
    for _ in 0..<500 {
      let mean = Int.random(in: 1...5000, using: &rng)
      let layers = Int.random(in: 2...80, using: &rng)
      let slope = Double.random(in: 0..<1, using: &rng)
      let b = BudgetSchedule.pyramid(slope: slope).layerBudgets(mean: mean, layers: layers)
      let tag = "mean \(mean) layers \(layers) slope \(slope): \(b)"
      XCTAssertEqual(b.count, layers, tag)
      XCTAssertEqual(b.reduce(0, +), mean * layers, "the total is the uniform one: " + tag)
      XCTAssertTrue(zip(b, b.dropFirst()).allSatisfy { $0 >= $1 }, "non-increasing: " + tag)
      for (l, x) in b.enumerated() {
        let exact = Double(mean) * (1 + slope * (1 - 2 * Double(l) / Double(layers - 1)))
        XCTAssertLessThan(abs(Double(x) - exact), 1, "within rounding of the line: " + tag)
      }
    }
  }

  func testScheduleChangesInPlaceAndBadSchedulesLeaveTheCacheUntouched() throws {
    var rng = SeededRNG(seed: 22)
    let input = SyntheticInput(
      layers: 3, kvHeads: 2, queryHeads: 4, headDim: 8,
      origins: Array(repeating: TokenOrigin(modality: .text, input: 0), count: 140), rng: &rng)
    let bpt = 2 * input.layers * input.kvHeads * input.headDim * 4
    let meter = MemoryMeter()
    let c = try BudgetedCache(
      layers: 3, kvHeads: 2, headDim: 8, queryHeads: 4, budget: 40,
      schedule: .pyramid(slope: 0.5), mode: .capped, policy: KeyDiffPolicy(), meter: meter)
    XCTAssertEqual(c.layerBudgets, [60, 40, 20])
    XCTAssertEqual(meter.reading(.kv).current, 40 * bpt, "the same bytes as uniform")
    for s in stride(from: 0, to: 120, by: 16) { try input.feed(s..<min(120, s + 16), into: c) }
    XCTAssertEqual((0..<3).map { c.count(layer: $0) }, [60, 40, 20])
    XCTAssertEqual(meter.reading(.kv).highWater, 40 * bpt)
    try BudgetPropertyTests.checkIntegrity(c, input, fed: 120, tag: "pyramid")
    let before = BudgetPropertyTests.snapshot(c)

    // A slope out of range, or a layer share below the policy's minimum: refused, untouched.
    XCTAssertThrowsError(try c.setBudget(40, schedule: .pyramid(slope: 1))) { e in
      XCTAssertTrue("\(e)".contains("slope must be"), "\(e)")
    }
    try c.setPolicy(SnapKVPolicy(window: 16))
    XCTAssertThrowsError(try c.setBudget(40, schedule: .pyramid(slope: 0.9))) { e in
      XCTAssertTrue("\(e)".contains("gives layer 2 only 4, below"), "\(e)")
    }
    XCTAssertEqual(BudgetPropertyTests.snapshot(c), before)
    XCTAssertEqual(c.schedule, .pyramid(slope: 0.5))

    // Back to uniform: layer 0 compresses to 40 now, layer 2 keeps its 20 and gains room.
    try c.setPolicy(KeyDiffPolicy())
    try c.setBudget(40, schedule: .uniform)
    XCTAssertEqual(c.layerBudgets, [40, 40, 40])
    XCTAssertEqual((0..<3).map { c.count(layer: $0) }, [40, 40, 20])
    XCTAssertTrue(Set(c.positions(layer: 0, head: 0)).isSubset(of: before.positions[0][0]))
    XCTAssertEqual(c.positions(layer: 2, head: 1), before.positions[2][1])
    XCTAssertEqual(meter.reading(.kv).current, 40 * bpt)
    try BudgetPropertyTests.checkIntegrity(c, input, fed: 120, tag: "uniform again")
    // The next block fills every layer to its budget.
    try input.feed(120..<140, into: c)
    XCTAssertEqual((0..<3).map { c.count(layer: $0) }, [40, 40, 40])
    try BudgetPropertyTests.checkIntegrity(c, input, fed: 140, tag: "after the next block")
  }
}

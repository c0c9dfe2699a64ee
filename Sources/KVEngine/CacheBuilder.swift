import Foundation
import KVCache
import KVModels
import KVTensor

/// The session's K/V storage: the full cache, or a budgeted one while a budget and a
/// compressing mode are set.
enum SessionCache {
  case full(DenseKVCache)
  case budgeted(BudgetedCache)

  /// What prefill and generation feed.
  var active: KeyValueCache {
    switch self {
    case .full(let cache): return cache
    case .budgeted(let cache): return cache
    }
  }

  var budgeted: BudgetedCache? {
    if case .budgeted(let cache) = self { return cache }
    return nil
  }

  /// Tokens held, tokens of room, bytes allocated.
  var summary: (tokens: Int, capacity: Int, bytes: Int) {
    switch self {
    case .full(let c): return (c.count, c.capacityTokens, c.bytesHeld)
    case .budgeted(let b): return (b.count, b.capacityTokens, b.bytesHeld)
    }
  }
}

/// Makes the session's cache for its settings — the one place either kind is built — and
/// says beforehand what that storage takes and whether it fits.
struct CacheBuilder {
  let config: DecoderConfig
  /// `EngineOptions.prefillChunk`: the token block when no other is configured.
  let prefillChunk: Int
  let meter: MemoryMeter?
  /// Bytes that may be allocated (nil: unknown, never refused).
  let available: Int?

  /// Tokens per prefill block in `settings` (structure-aligned blocks: the text chunk).
  static func tokenBlock(_ settings: CacheSettings, prefillChunk: Int) -> Int {
    if settings.isBudgeted, case .tokens(let b)? = settings.block { return b }
    return prefillChunk
  }

  /// The sequential cache's first block room: the token block, or for tile/frame blocks one
  /// token — `reserveBlock` sizes it to the first blocks laid out (while the cache is empty, so
  /// without a transient), not to the text chunk a frame block never reaches.
  static func initialBlockRoom(_ settings: CacheSettings, prefillChunk: Int) -> Int {
    if case .units? = settings.block { return 1 }
    return tokenBlock(settings, prefillChunk: prefillChunk)
  }

  /// An empty full cache (its storage grows with its first block).
  func full() -> DenseKVCache {
    DenseKVCache(
      layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, meter: meter)
  }

  /// The cache `settings` describe, empty: budgeted when a budget and a compressing mode are
  /// set, else full.
  func make(_ settings: CacheSettings) throws -> SessionCache {
    guard settings.isBudgeted, let budget = settings.budget else { return .full(full()) }
    try checkFits(settings, reclaimable: 0)
    let made = try BudgetedCache(
      config: config, budget: budget, schedule: settings.schedule, mode: settings.mode,
      policy: settings.policy, options: settings.retention,
      blockSize: Self.initialBlockRoom(settings, prefillChunk: prefillChunk), meter: meter)
    // The log of the last block's evictions (`cache log`): a few records per layer and head.
    made.logEvictions = true
    made.evictEvery = settings.evictEvery ?? BudgetedCache.defaultEvictEvery(budget: made.budget)
    return .budgeted(made)
  }

  /// Refuses a budget whose K/V storage (the budget, plus the block room in `sequential` mode)
  /// is more than the memory available (plus `reclaimable`, what the storage replaces), before
  /// any of it is allocated.
  func checkFits(_ settings: CacheSettings, reclaimable: Int) throws {
    guard settings.isBudgeted, let budget = settings.budget, let available else { return }
    let perToken = BudgetedCache.bytesPerToken(config)
    let tokens = budget.tokens(kvBytesPerToken: perToken)
    let block =
      settings.mode == .sequential ? Self.initialBlockRoom(settings, prefillChunk: prefillChunk) : 0
    let needed = Double(tokens + block) * Double(perToken)
    let room = available + reclaimable
    guard needed > Double(room) else { return }
    var what = "\(tokens) tokens"
    if case .bytes = budget { what += " (\(budget))" }
    if block > 0 { what += " and a \(block)-token block" }
    throw EngineError.invalid(
      "the K/V storage for \(what) needs \(SystemMemory.describe(needed)) (\(perToken) B per token), "
        + "\(SystemMemory.describe(room)) available")
  }
}

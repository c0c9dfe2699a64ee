import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
  /// The budgeted cache, for inspection (occupancy, entries, eviction log); nil without a budget.
  public var budgetedCache: BudgetedCache? { budgeted }

  /// Tokens per prefill block in `settings` (structure-aligned blocks: the text chunk).
  func tokenBlock(_ settings: CacheSettings) -> Int {
    CacheBuilder.tokenBlock(settings, prefillChunk: options.prefillChunk)
  }

  /// Builds this session's caches for a model of `config` (see `CacheBuilder`).
  func cacheBuilder(_ config: DecoderConfig) -> CacheBuilder {
    CacheBuilder(
      config: config, prefillChunk: options.prefillChunk, meter: meter,
      available: availableMemory())
  }

  /// How input is cut into prefill blocks: the configured block and bulk while a budget is on.
  var scheduler: BlockScheduler {
    let s = cacheSettings
    guard s.isBudgeted, let model else { return BlockScheduler(blockSize: options.prefillChunk) }
    let bulk =
      s.bulk ? s.budget?.tokens(kvBytesPerToken: BudgetedCache.bytesPerToken(model.config)) : nil
    return BlockScheduler(
      size: s.block ?? .tokens(options.prefillChunk), textChunk: tokenBlock(s), bulk: bulk)
  }

  /// Refuses a byte budget larger than the memory available (before a model is loaded; with a
  /// model, `CacheBuilder.checkFits` counts the storage exactly).
  func checkBytesFit(_ budget: KVBudget?) throws {
    guard case .bytes(let b)? = budget, let available = availableMemory(), b > available else {
      return
    }
    throw EngineError.invalid(
      "\(budget!) of K/V is more than the \(SystemMemory.describe(available)) available")
  }

  /// `budget 1024 tokens` / `budget 16MiB` / `budget off` (nil). Setting a budget while the mode
  /// is `full` switches to `capped`. With a budgeted cache already in use, shrinking compresses
  /// now with the active policy and growing adds capacity; otherwise the cache is rebuilt from
  /// the context (see `apply`). On error the session is unchanged.
  /// A schedule (nil: keep the current one) sets how the budget is spread over the layers.
  public func configureBudget(_ budget: KVBudget?, schedule: BudgetSchedule? = nil) throws {
    var s = cacheSettings
    s.budget = budget
    s.share = nil
    if let schedule { s.schedule = schedule }
    if budget != nil, s.mode == .full { s.mode = .capped }
    if budget == nil { s.mode = .full }
    try apply(s)
  }

  /// `policy snapkv window=32 kernel=5` (build the policy with `PolicyCatalog.make`).
  public func configurePolicy(_ policy: any EvictionPolicy) throws {
    var s = cacheSettings
    s.policy = policy
    try apply(s)
  }

  /// `prefill mode=capped block=256`. `full` drops to the uncompressed cache (the budget is kept
  /// for when a compressing mode is chosen again); a compressing mode needs a budget.
  public func configurePrefill(mode: PrefillMode, block: Int? = nil) throws {
    if let block, block < 1 {
      throw EngineError.invalid("block must be at least 1 token, got \(block)")
    }
    try configurePrefill(mode: mode, blockSize: block.map { .tokens($0) })
  }

  /// `prefill mode=capped block=frame bulk=on`: blocks of N tokens or N visual units, and
  /// whether the first budget's worth of tokens goes in one forward.
  public func configurePrefill(mode: PrefillMode, blockSize: BlockSize?, bulk: Bool? = nil) throws {
    if case .tokens(let b)? = blockSize, b < 1 {
      throw EngineError.invalid("block must be at least 1 token, got \(b)")
    }
    if mode != .full, cacheSettings.budget == nil, cacheSettings.share == nil {
      throw EngineError.invalid("mode=\(mode) needs a budget first (e.g. 'budget 1024 tokens')")
    }
    var s = cacheSettings
    s.mode = mode
    if let blockSize { s.block = blockSize }
    if let bulk { s.bulk = bulk }
    try apply(s)
  }

  /// `prefill evict_every=N` (nil: the default for the budget).
  public func configureEvictEvery(_ n: Int?) throws {
    if let n, n < 1 { throw EngineError.invalid("evict_every must be at least 1 token, got \(n)") }
    var s = cacheSettings
    s.evictEvery = n
    try apply(s)
  }

  /// `prefill proxy=template` / `proxy="the question"` / `proxy=block`.
  public func configureProxy(_ proxy: QueryProxy) throws {
    if case .question(let q) = proxy, q.trimmingCharacters(in: .whitespaces).isEmpty {
      throw EngineError.invalid("proxy question is empty")
    }
    var s = cacheSettings
    s.proxy = proxy
    try apply(s)
  }

  /// Protect text / system tokens, per-frame or per-tile quotas.
  public func configureRetention(_ retention: RetentionOptions) throws {
    var s = cacheSettings
    s.retention = retention
    try apply(s)
  }

  /// Compresses the budgeted cache to its budget now (post mode does so after each input).
  public func compressCache() throws {
    guard let budgeted else { throw EngineError.invalid("no budget set; nothing to compress") }
    try mapCacheError { try budgeted.compress() }
  }

  func mapCacheError(_ body: () throws -> Void) throws {
    do { try body() } catch let e as CacheError { throw EngineError.invalid(e.description) }
  }

  /// Makes `settings` current. A budgeted cache of the same mode and block size is changed in
  /// place (policy, options, budget); a full cache that stays full is kept; any other change
  /// builds the new cache and re-prefills the context into it (exact: same tokens, origins and
  /// positions), so what is held always follows the settings. The old cache goes before the
  /// new one is built, so configuring never holds two caches' storage, whatever was fed: K/V
  /// stays within the budget from `budget` on. On error the old settings' cache is built again
  /// and the context re-prefilled into it (`rebuildAfterRefusal`).
  func apply(_ settings: CacheSettings) throws {
    if case .tokens(let b)? = settings.block, b < 1 {
      throw EngineError.invalid("block must be at least 1 token, got \(b)")
    }
    guard let model else {
      // No model yet: what can be checked without one (a byte budget needs the model's size).
      if settings.isBudgeted { try checkBytesFit(settings.budget) }
      if settings.isBudgeted, case .tokens(let n)? = settings.budget {
        do {
          try BudgetedCache.validate(budget: n, policy: settings.policy)
          try settings.schedule.validate()
        } catch let e as CacheError {
          throw EngineError.invalid(e.description)
        }
      }
      cacheSettings = settings
      return
    }
    let c = model.config
    if settings.isBudgeted, let budget = settings.budget {
      let tokens = budget.tokens(kvBytesPerToken: BudgetedCache.bytesPerToken(c))
      do {
        _ = try BudgetedCache.layerBudgets(
          budget: tokens, schedule: settings.schedule, layers: c.layers, policy: settings.policy)
      } catch let e as CacheError {
        throw EngineError.invalid(
          e.description
            + (tokens == 0
              ? " (\(budget) is less than one token of \(BudgetedCache.bytesPerToken(c)) bytes)"
              : ""))
      }
    }
    let builder = cacheBuilder(c)
    if settings.isBudgeted {
      // The storage this budget takes replaces the current cache's (released first).
      try builder.checkFits(settings, reclaimable: kv?.summary.bytes ?? 0)
    }
    if let current = budgeted, settings.isBudgeted, settings.mode == current.mode,
      tokenBlock(settings) == tokenBlock(cacheSettings)
    {
      let tokens = settings.budget!.tokens(kvBytesPerToken: BudgetedCache.bytesPerToken(c))
      try mapCacheError {
        if tokens != current.budget || settings.schedule != current.schedule {
          try current.setBudget(tokens, schedule: settings.schedule)
        }
        if settings.policy.description != current.policy.description {
          try current.setPolicy(settings.policy)
        }
      }
      current.options = settings.retention
      current.evictEvery =
        settings.evictEvery ?? BudgetedCache.defaultEvictEvery(budget: current.budget)
      cacheSettings = settings
      return
    }
    if !settings.isBudgeted, case .full? = kv {
      // Full before and after: the cache holds every token either way.
      cacheSettings = settings
      return
    }
    // Rebuild: a new kind of cache (full ↔ budgeted, or another mode / block size). The old
    // cache is released before the new one is built, so the two never coexist and K/V never
    // passes the larger of their storages; on error the old settings' cache is built again
    // and the recorded input prefilled into it once more.
    let saved = (settings: cacheSettings, segments: segments)
    kv = nil
    cacheSettings = settings
    do {
      kv = try builder.make(settings)
      try refill(saved.segments)
    } catch {
      kv = nil
      cacheSettings = saved.settings
      try rebuildAfterRefusal(saved.segments, builder: builder, refusal: error)
      if let e = error as? CacheError { throw EngineError.invalid(e.description) }
      throw error
    }
  }

  /// After a rebuild failed: the current settings' cache again (an empty full one, and the
  /// settings saying so, when a budget set before loading cannot be honoured) with `fed`
  /// prefilled into it — not cancellable, since it puts the session back as it was. Should
  /// the input itself fail now (a file removed since it was fed), the context is emptied and
  /// the error says so.
  func rebuildAfterRefusal(_ fed: SegmentLog, builder: CacheBuilder, refusal: Error) throws {
    do {
      kv = try builder.make(cacheSettings)
    } catch {
      if cacheSettings.isBudgeted { cacheSettings.mode = .full }
      kv = .full(builder.full())
    }
    do {
      try refill(fed, cancellable: false)
    } catch {
      reset()
      throw EngineError.invalid(
        "\(refusal); the context could not be prefilled again under the previous settings (\(error)) and was emptied"
      )
    }
  }

  /// Prefills the recorded segments (same tokens, origins, positions and pixels) into the
  /// (fresh) active cache, as one input: images and clips are laid out again as the blocks
  /// reach them, and recorded as one record each again.
  func refill(_ saved: SegmentLog, cancellable: Bool = true) throws {
    contextCount = 0
    segments = SegmentLog(refilling: saved)
    lastLogits = nil
    let rope = nextRopePosition
    let fed = PromptParts(saved)
    try prefill(fed, counts: try fed.count(scheduler), cancellable: cancellable)
    nextRopePosition = rope
  }
}

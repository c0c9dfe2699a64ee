import KVModels
import KVTensor

/// A KV cache that holds at most a fixed budget of entries per layer and KV head, evicting with
/// an `EvictionPolicy`. Storage is allocated once, charged to the meter as
/// `.kv`: exactly `budget` rows in `capped` mode, `budget + block` in `sequential`, growable in
/// `post` (compressed to the budget by `compress()`). Each entry keeps its original position and
/// origin; eviction compacts in place, preserving order. Full (uncompressed) caching is
/// `DenseKVCache` (see `makeCache`).
public final class BudgetedCache: KeyValueCache {
  public let layers: Int
  public let kvHeads: Int
  public let headDim: Int
  /// Query heads (a multiple of `kvHeads`); the block's queries have `queryHeads·headDim` columns.
  public let queryHeads: Int
  public let mode: PrefillMode
  /// The budget M: entries per layer and KV head once a block is committed, on average over
  /// the layers (exactly, in every layer, with the uniform schedule).
  public private(set) var budget: Int
  /// How M is spread over the layers.
  public private(set) var schedule: BudgetSchedule
  /// Each layer's budget under `schedule`; they sum to `layers · budget`.
  public private(set) var layerBudgets: [Int]
  /// The largest block `sequential` mode accepts (its storage is budget + block).
  public private(set) var blockCapacity: Int
  public private(set) var policy: any EvictionPolicy
  public var options: RetentionOptions
  /// Whether to keep the eviction log of the last block (`lastEvictions`).
  public var logEvictions = false
  /// Capped mode: a block of fewer than this many tokens (a decoded token) that does not fit
  /// evicts down to leave room for this many, so while decoding, a scoring and compaction runs
  /// once every `evictEvery` tokens rather than for each one (kvpress's decoding compression
  /// interval, under the same hard cap). 1 (the default): every token decides alone.
  public var evictEvery = 1
  /// The interval a session uses unless asked otherwise: 1/32 of the budget, 1 to 16 tokens,
  /// so the entries given up for the amortisation are at most 3% of the budget.
  public static func defaultEvictEvery(budget: Int) -> Int { min(16, max(1, budget / 32)) }

  private let meter: MemoryMeter?
  var stores: [LayerStore]
  var windows: [QueryWindow]

  /// Entries evicted so far, summed over layers and KV heads.
  public private(set) var evictedEntries = 0
  /// Blocks committed so far (`finishBlock` calls).
  public private(set) var blocks = 0
  public private(set) var lastEvictions: [EvictionRecord] = []
  private var pendingEvictions: [EvictionRecord] = []
  /// What the last evictions came from (`lastEvictions` holds their log when `logEvictions`).
  public private(set) var lastEvent: EvictionEvent?
  private var pendingBlock: ClosedRange<Int>?
  /// `blocks` when the policy was set: a policy that scores with attention has nothing to rank
  /// with until a block comes after it (see `scoringGap`).
  private var policySetAtBlock = 0

  /// - Parameters:
  ///   - budget: entries per layer and KV head (tokens), on average over the layers.
  ///   - schedule: how the budget is spread over the layers (the same in each by default).
  ///   - blockSize: the largest block `sequential` mode will be handed (storage budget + block);
  ///     ignored by the other modes.
  public init(
    layers: Int, kvHeads: Int, headDim: Int, queryHeads: Int, budget: Int,
    schedule: BudgetSchedule = .uniform, mode: PrefillMode,
    policy: any EvictionPolicy, options: RetentionOptions = RetentionOptions(),
    blockSize: Int = 256,
    meter: MemoryMeter?
  ) throws {
    guard mode != .full else {
      throw CacheError.invalidState("full mode keeps everything: use DenseKVCache (makeCache)")
    }
    guard layers > 0, kvHeads > 0, headDim > 0, queryHeads > 0, queryHeads % kvHeads == 0 else {
      throw CacheError.invalidState(
        "bad cache shape: \(layers) layers, \(kvHeads) KV heads, \(queryHeads) query heads, head dim \(headDim)"
      )
    }
    let layerBudgets = try Self.layerBudgets(
      budget: budget, schedule: schedule, layers: layers, policy: policy)
    if mode == .sequential, blockSize < 1 {
      throw CacheError.invalidBudget("sequential mode needs a block size ≥ 1, got \(blockSize)")
    }
    self.layers = layers
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.queryHeads = queryHeads
    self.mode = mode
    self.budget = budget
    self.schedule = schedule
    self.layerBudgets = layerBudgets
    self.blockCapacity = mode == .sequential ? blockSize : 0
    self.policy = policy
    self.options = options
    self.meter = meter
    stores = layerBudgets.map { m in
      let cap: Int
      switch mode {
      case .capped: cap = m
      case .sequential: cap = m + blockSize
      case .post, .full: cap = min(m, 256)
      }
      return LayerStore(kvHeads: kvHeads, capacity: cap, headDim: headDim, meter: meter)
    }
    windows = []
    windows = makeWindows(for: policy)
  }

  /// A cache for a decoder: budget in tokens or bytes (bytes convert with the model's KV bytes
  /// per token, rounding down).
  public convenience init(
    config: DecoderConfig, budget: KVBudget, schedule: BudgetSchedule = .uniform,
    mode: PrefillMode, policy: any EvictionPolicy,
    options: RetentionOptions = RetentionOptions(), blockSize: Int = 256, meter: MemoryMeter?
  ) throws {
    try self.init(
      layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim,
      queryHeads: config.heads, budget: budget.tokens(kvBytesPerToken: Self.bytesPerToken(config)),
      schedule: schedule, mode: mode, policy: policy, options: options, blockSize: blockSize,
      meter: meter)
  }

  /// K and V bytes per token over all layers and KV heads (float32).
  public static func bytesPerToken(_ c: DecoderConfig) -> Int {
    2 * c.layers * c.kvHeads * c.headDim * 4
  }
  public var bytesPerToken: Int { 2 * layers * kvHeads * headDim * 4 }

  /// Throws unless `budget` tokens is a budget `policy` can work with.
  public static func validate(budget: Int, policy: any EvictionPolicy) throws {
    guard budget >= 1 else {
      throw CacheError.invalidBudget("budget must be at least 1 token, got \(budget)")
    }
    guard budget >= policy.minimumBudget else {
      throw CacheError.budgetTooSmall(
        "budget of \(budget) tokens is below what \(policy) needs (\(policy.minimumBudget))")
    }
  }

  /// The per-layer budgets of `schedule` for a mean of `budget` tokens, or an error naming the
  /// smallest share when `policy` cannot work with it.
  public static func layerBudgets(
    budget: Int, schedule: BudgetSchedule, layers: Int, policy: any EvictionPolicy
  ) throws -> [Int] {
    try validate(budget: budget, policy: policy)
    try schedule.validate()
    let budgets = schedule.layerBudgets(mean: budget, layers: layers)
    let needed = max(1, policy.minimumBudget)
    if let l = budgets.indices.min(by: { budgets[$0] < budgets[$1] }), budgets[l] < needed {
      throw CacheError.budgetTooSmall(
        "the \(schedule) schedule of \(budget) tokens gives layer \(l) only \(budgets[l]), below what \(policy) needs (\(needed))"
      )
    }
    return budgets
  }

  private func makeWindows(for policy: any EvictionPolicy) -> [QueryWindow] {
    let w = policy.queryWindow
    guard w > 0 else { return [] }
    return (0..<layers).map { l in
      let win = QueryWindow(size: w, width: queryHeads * headDim, meter: meter)
      // Keep what the old window had seen, as far as it goes.
      if l < windows.count {
        let old = windows[l]
        let k = min(w, old.positions.count)
        let first = old.positions.count - k
        win.rows.pointer.update(from: old.rows.pointer + first * old.width, count: k * old.width)
        win.positions = Array(old.positions.suffix(k))
      }
      return win
    }
  }

  func view(
    _ list: EntryList, store: LayerStore, head g: Int, block: KVBlock?, window: QueryRows?,
    blockQueries: QueryRows?
  ) -> CandidateView {
    CandidateView(
      entries: list, headDim: headDim, groupSize: queryHeads / kvHeads,
      storedKeys: store.keys.pointer + g * store.capacity * headDim,
      storedValues: store.values.pointer + g * store.capacity * headDim, storedCount: store.count,
      blockKeys: block.map { $0.keys + g * headDim },
      blockValues: block.map { $0.values + g * headDim },
      blockLD: block?.ld ?? 0, window: window,
      blockQueries: policy.needsBlockQueries ? blockQueries : nil, meter: meter)
  }

  // MARK: KeyValueCache

  public func cached(layer: Int) -> CachedKV {
    CachedKV(
      keys: stores[layer].keys.pointer, values: stores[layer].values.pointer,
      count: stores[layer].count, headStride: stores[layer].capacity * headDim, rowStride: headDim)
  }

  public func commit(layer: Int, block: KVBlock) throws {
    guard block.positions.count == block.count, block.origins.count == block.count else {
      throw CacheError.invalidState(
        "block of \(block.count) rows has \(block.positions.count) positions and \(block.origins.count) origins"
      )
    }
    if layer == 0 {
      try preflight(block)
      pendingEvictions = []
      pendingBlock = block.positions.first.map { $0...block.positions.last! }
    }
    guard block.count > 0 else { return }
    if !windows.isEmpty { windows[layer].append(block) }
    let store = stores[layer]
    let blockMeta = zip(block.positions, block.origins).map { EntryMeta(position: $0, origin: $1) }
    switch mode {
    case .capped:
      // The block stays where the model put it; survivors of cache ∪ block are written in place.
      // A small block that overflows frees room for the next few too (`evictEvery`).
      let reserve = block.count < evictEvery ? evictEvery - block.count : 0
      decide(
        layer: layer, block: block, blockMeta: blockMeta, keep: layerBudgets[layer],
        reserve: min(reserve, layerBudgets[layer] - 1))
    case .sequential:
      // The paper's order: append (storage is budget + block), then evict the excess.
      append(block, blockMeta, to: store)
      decide(layer: layer, block: nil, blockMeta: [], keep: layerBudgets[layer], queries: block)
    case .post, .full:
      if store.count + block.count > store.capacity {
        reallocate(store, to: max(store.count + block.count, store.capacity + store.capacity / 2))
      }
      append(block, blockMeta, to: store)
      if policy.carriesScores {
        decide(layer: layer, block: nil, blockMeta: [], keep: Int.max, queries: block)
      }
    }
  }

  public func finishBlock() throws {
    blocks += 1
    if logEvictions { lastEvictions = pendingEvictions }
    pendingEvictions = []
    if let pendingBlock { lastEvent = .block(index: blocks, positions: pendingBlock) }
    pendingBlock = nil
  }

  /// Why the active policy cannot rank the held entries now, or nil when it can. A policy that
  /// scores with attention needs queries seen since it was set: SnapKV's observation window
  /// starts empty when the previous policy kept none, and H2O's accumulated attention restarts
  /// from zero; both fill with the next block. A compression (`compress`, a smaller budget)
  /// refuses to run on such a gap rather than ranking by nothing.
  public var scoringGap: String? {
    guard count > 0 else { return nil }
    let w = policy.queryWindow
    if w > 0, windows.contains(where: { $0.positions.isEmpty }) {
      return
        "\(policy) ranks by the attention of the last \(w) queries, and none has been seen since it was set (feed text first)"
    }
    if policy.needsBlockQueries, policy.carriesScores, blocks == policySetAtBlock {
      return
        "\(policy) ranks by the attention entries received since it was set, and no block has come since (feed text first)"
    }
    return nil
  }

  // MARK: budget and policy changes

  /// Compresses every layer to the budget now (post mode's step after the input; any mode on
  /// request). Throws, touching nothing, if the mandatory entries do not fit.
  public func compress() throws {
    try compress(to: layerBudgets)
    if mode == .post {
      for (store, m) in zip(stores, layerBudgets) where store.capacity > m {
        reallocate(store, to: max(m, store.count))
      }
    }
  }

  /// Changes the budget. Shrinking compresses now with the active policy, then shrinks storage;
  /// growing reallocates larger storage. Either way storage moves one buffer at a time: the
  /// transient above max(old, new) is one layer's keys (or values) at the new size. A new
  /// schedule (nil: keep the current one) re-spreads the budget over the layers the same way.
  /// Throws, touching nothing, on a budget the policy or the mandatory entries cannot live with.
  public func setBudget(_ newBudget: Int, schedule newSchedule: BudgetSchedule? = nil) throws {
    let newSchedule = newSchedule ?? schedule
    let targets = try Self.layerBudgets(
      budget: newBudget, schedule: newSchedule, layers: layers, policy: policy)
    try compress(to: targets)
    budget = newBudget
    schedule = newSchedule
    layerBudgets = targets
    for (store, m) in zip(stores, targets) {
      switch mode {
      case .capped: reallocate(store, to: m)
      case .sequential: reallocate(store, to: m + blockCapacity)
      case .post, .full: if store.capacity > m, store.count <= m { reallocate(store, to: m) }
      }
    }
  }

  /// Sequential mode: room for blocks of up to `tokens` (storage budget + block; the transient
  /// the paper's loop has). Blocks that follow the input's structure (a tile, a frame) are only
  /// known in tokens once laid out.
  public func reserveBlock(_ tokens: Int) {
    guard mode == .sequential, tokens > blockCapacity else { return }
    blockCapacity = tokens
    for (store, m) in zip(stores, layerBudgets) { reallocate(store, to: m + tokens) }
  }

  /// Switches policy; carried scores restart from 0, the query window keeps what it has seen.
  public func setPolicy(_ newPolicy: any EvictionPolicy) throws {
    _ = try Self.layerBudgets(budget: budget, schedule: schedule, layers: layers, policy: newPolicy)
    windows = makeWindows(for: newPolicy)
    policy = newPolicy
    policySetAtBlock = blocks
    for s in stores {
      for h in 0..<kvHeads { for i in s.meta[h].indices { s.meta[h][i].carried = 0 } }
    }
  }

  /// Compresses layer `l` to `targets[l]` entries, every layer that holds more.
  private func compress(to targets: [Int]) throws {
    let over = (0..<layers).filter { stores[$0].count > targets[$0] }
    guard !over.isEmpty else { return }
    if let gap = scoringGap { throw CacheError.invalidState(gap) }
    for l in over {
      for h in 0..<kvHeads {
        try checkMandatory(
          entries(
            l, h, blockMeta: [], window: windows.isEmpty ? [] : windows[l].positions,
            budget: targets[l]))
      }
    }
    pendingEvictions = []
    for l in over {
      decide(layer: l, block: nil, blockMeta: [], keep: targets[l])
    }
    if logEvictions { lastEvictions = pendingEvictions }
    pendingEvictions = []
    lastEvent = .compression(budget: targets.reduce(0, +) / layers)
  }

  // MARK: internals

  func entries(
    _ layer: Int, _ head: Int, blockMeta: [EntryMeta], window: [Int], budget: Int
  ) -> EntryList {
    EntryList(
      layer: layer, kvHead: head, budget: budget, meta: stores[layer].meta[head] + blockMeta,
      windowPositions: window)
  }

  private func checkMandatory(_ list: EntryList) throws {
    guard list.count > list.budget else { return }
    let must = Selection.mandatory(policy, list, options).lazy.filter { $0 }.count
    if must > list.budget {
      var why: [String] = []
      if options.protectText { why.append("protected text") }
      if options.protectSystem { why.append("protected system prompt") }
      throw CacheError.budgetTooSmall(
        "budget of \(list.budget) tokens cannot hold the \(must) entries that must stay (\(([policy.description] + why).joined(separator: ", "))) at layer \(list.layer), KV head \(list.kvHead)"
      )
    }
  }

  /// Checks, before any layer is touched, that the block can be taken.
  private func preflight(_ block: KVBlock) throws {
    if mode == .sequential, block.count > blockCapacity {
      throw CacheError.blockTooLarge(
        "block of \(block.count) tokens exceeds the sequential cache's block size \(blockCapacity)")
    }
    guard mode == .capped || mode == .sequential else { return }
    let over = (0..<layers).filter { stores[$0].count + block.count > layerBudgets[$0] }
    guard !over.isEmpty else { return }
    let blockMeta = zip(block.positions, block.origins).map { EntryMeta(position: $0, origin: $1) }
    for l in over {
      let window =
        windows.isEmpty
        ? []
        : QueryWindow.prospective(
          windows[l].positions,
          block.proxyCount > 0 ? QueryWindow.proxyPositions(block.proxyCount) : block.positions,
          size: policy.queryWindow)
      for h in 0..<kvHeads {
        try checkMandatory(
          entries(l, h, blockMeta: blockMeta, window: window, budget: layerBudgets[l]))
      }
    }
  }

  private func append(_ block: KVBlock, _ blockMeta: [EntryMeta], to store: LayerStore) {
    let base = store.count
    for g in 0..<kvHeads {
      let kDst = store.keys.pointer + (g * store.capacity + base) * headDim
      let vDst = store.values.pointer + (g * store.capacity + base) * headDim
      for i in 0..<block.count {
        (kDst + i * headDim).update(from: block.keys + i * block.ld + g * headDim, count: headDim)
        (vDst + i * headDim).update(from: block.values + i * block.ld + g * headDim, count: headDim)
      }
      store.meta[g] += blockMeta
    }
    store.count += block.count
  }

  /// One eviction decision for every KV head of `layer`: candidates are the stored rows plus,
  /// in capped mode, the block's rows (still in the model's activations). Keeps `keep` of them
  /// per head, compacting in place; stores carried scores. `queries` is the block whose queries
  /// attention-accumulating policies read (the block itself in capped mode). When more than
  /// `keep` would stay, `reserve` more are evicted, never a mandatory one.
  private func decide(
    layer: Int, block: KVBlock?, blockMeta: [EntryMeta], keep: Int, reserve: Int = 0,
    queries: KVBlock? = nil
  ) {
    let store = stores[layer]
    let stored = store.count
    let total = stored + (block?.count ?? 0)
    let evicting = total > keep
    guard evicting || policy.carriesScores else {
      if let block { append(block, blockMeta, to: store) }
      return
    }
    let qBlock = queries ?? block
    let blockQueries = qBlock.map {
      QueryRows(pointer: $0.queries, ld: $0.queryLD, count: $0.count, positions: $0.positions)
    }
    let window = windows.isEmpty ? nil : windows[layer].queryRows
    // One head after another: heads deciding on several threads at once would make the
    // activations' peak (their scoring scratch overlapping) depend on timing.
    var newCount = total
    for g in 0..<kvHeads {
      newCount = decideHead(
        g, layer: layer, store: store, block: block, blockMeta: blockMeta, keep: keep,
        reserve: reserve, evicting: evicting, window: window, blockQueries: blockQueries)
    }
    store.count = newCount
  }

  /// `decide` for KV head `g`: scores, selects and compacts that head's rows and entries in
  /// place (the store's count is the caller's to set once every head has decided), logs what
  /// it evicted, and returns how many entries the head keeps.
  private func decideHead(
    _ g: Int, layer: Int, store: LayerStore, block: KVBlock?, blockMeta: [EntryMeta], keep: Int,
    reserve: Int, evicting: Bool, window: QueryRows?, blockQueries: QueryRows?
  ) -> Int {
    let stored = store.count
    let total = stored + (block?.count ?? 0)
    let list = entries(
      layer, g, blockMeta: blockMeta, window: window?.positions ?? [], budget: keep)
    let view = view(
      list, store: store, head: g, block: block, window: window, blockQueries: blockQueries)
    let scores = policy.score(view)
    var keepMask = [Bool](repeating: true, count: total)
    var mandatory: [Bool] = []
    if evicting {
      mandatory = Selection.mandatory(policy, list, options)
      let mandatoryCount = mandatory.lazy.filter { $0 }.count
      let target = max(keep - reserve, min(keep, mandatoryCount))
      let slots = max(0, target - mandatoryCount)
      let order = policy.preference(view, scores: scores, slots: slots)
      let groups = options.quota.map { Selection.groups(list.meta, $0.unit) }
      keepMask = Selection.select(
        budget: target, mandatory: mandatory, preference: order, groups: groups,
        quota: options.quota?.minimum ?? 0)
    }
    // Compact: stored survivors move down (destination ≤ source), block survivors follow.
    var meta = list.meta
    if policy.carriesScores { for i in 0..<total { meta[i].carried = scores[i] } }
    let kBase = store.keys.pointer + g * store.capacity * headDim
    let vBase = store.values.pointer + g * store.capacity * headDim
    var w = 0
    var newMeta: [EntryMeta] = []
    newMeta.reserveCapacity(min(total, keep))
    var record: EvictionRecord? =
      logEvictions ? EvictionRecord(layer: layer, kvHead: g, evicted: [], lowestKept: nil) : nil
    // Stored survivors move in runs (one move per run of kept rows, not one per row).
    var run: (from: Int, to: Int, rows: Int)? = nil
    func flush() {
      guard let r = run else { return }
      if r.from != r.to {
        (kBase + r.to * headDim).update(from: kBase + r.from * headDim, count: r.rows * headDim)
        (vBase + r.to * headDim).update(from: vBase + r.from * headDim, count: r.rows * headDim)
      }
      run = nil
    }
    for i in 0..<total {
      guard keepMask[i] else {
        flush()
        record?.evicted.append((Int(meta[i].position), scores[i]))
        continue
      }
      if record != nil, !mandatory.isEmpty, !mandatory[i] {
        record!.lowestKept = min(record!.lowestKept ?? scores[i], scores[i])
      }
      if i < stored {
        if run == nil { run = (i, w, 0) }
        run!.rows += 1
      } else {
        flush()
        let r = i - stored
        (kBase + w * headDim).update(
          from: block!.keys + r * block!.ld + g * headDim, count: headDim)
        (vBase + w * headDim).update(
          from: block!.values + r * block!.ld + g * headDim, count: headDim)
      }
      newMeta.append(meta[i])
      w += 1
    }
    flush()
    store.meta[g] = newMeta
    evictedEntries += total - w
    if let record { pendingEvictions.append(record) }
    return w
  }

  /// New storage of `newCapacity` rows per head for one layer, one buffer at a time (its keys,
  /// then its values; each old buffer is released before the next new one is allocated), so
  /// the transient above max(old, new) storage is one layer's keys or values at the new size.
  private func reallocate(_ store: LayerStore, to newCapacity: Int) {
    guard newCapacity != store.capacity else { return }
    precondition(newCapacity >= store.count)
    if store.count == 0 {
      // Nothing to move (a budget or block change before anything is fed): the old storage
      // goes before the new is allocated, so the two never coexist.
      store.keys = FloatBuffer(count: 0, category: .kv, meter: meter)
      store.values = FloatBuffer(count: 0, category: .kv, meter: meter)
    }
    func moved(_ old: FloatBuffer) -> FloatBuffer {
      let fresh = FloatBuffer(count: kvHeads * newCapacity * headDim, category: .kv, meter: meter)
      for g in 0..<kvHeads {
        (fresh.pointer + g * newCapacity * headDim).update(
          from: old.pointer + g * store.capacity * headDim, count: store.count * headDim)
      }
      return fresh
    }
    store.keys = moved(store.keys)
    store.values = moved(store.values)
    store.capacity = newCapacity
  }
}

/// The cache for a prefill mode: `full` is the uncompressed `DenseKVCache`; the others are a
/// `BudgetedCache`.
public func makeCache(
  config: DecoderConfig, budget: KVBudget?, schedule: BudgetSchedule = .uniform,
  mode: PrefillMode, policy: any EvictionPolicy,
  options: RetentionOptions = RetentionOptions(), blockSize: Int = 256, meter: MemoryMeter?
) throws -> KeyValueCache {
  guard mode != .full, let budget else {
    return DenseKVCache(
      layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, meter: meter)
  }
  return try BudgetedCache(
    config: config, budget: budget, schedule: schedule, mode: mode, policy: policy,
    options: options, blockSize: blockSize, meter: meter)
}

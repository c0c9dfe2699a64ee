import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
  /// Prefills `new` block by block (see `BlockScheduler`), checking for cancellation between
  /// blocks; each block's visual units are encoded when the block runs. While `stepping`, the
  /// blocks are queued instead, for `prefillStep`.
  /// Not `cancellable`: Ctrl-C does not stop it (putting a cache back after a failed rebuild).
  func prefill(_ new: [PromptSegment], proxy: Bool = true, cancellable: Bool = true) throws {
    let parts = PromptParts(new)
    try prefill(parts, counts: try parts.count(scheduler), proxy: proxy, cancellable: cancellable)
  }

  /// The same for input made part by part: blocks are cut and run as its parts are made.
  func prefill(
    _ new: PromptParts, counts: PromptParts.Counts, proxy: Bool = true, cancellable: Bool = true
  ) throws {
    guard let model, activeCache != nil else { throw EngineError.noModel }
    // The context limit is checked for the whole input before any block runs or is queued (each
    // block's forward checks it again), so a refused input leaves the context as it was rather
    // than the blocks that fitted. Proxy rows, when there are, follow the last block.
    let total = counts.tokens
    let waiting = pendingBlocks.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } }
    let proxyRows = proxy && total > 0 ? proxyTokens(after: counts.last).count : 0
    let end = contextCount + waiting + total + proxyRows
    if end > model.config.contextLength {
      throw EngineError.invalid(
        "context would hold \(end) tokens; the model's limit is \(model.config.contextLength)")
    }
    budgeted?.reserveBlock(counts.largestBlock)
    if stepping {
      try new.blocks(scheduler) { pendingBlocks.append($0) }
      return
    }
    try requireNothingPending()
    // An image or clip is recorded as one record, its parts, not a record per frame.
    if new.visual { segments.openVisual(new) }
    defer { segments.closeVisual() }
    var done = 0
    try new.blocks(scheduler) { block in
      if cancellable, cancellation.isSet {
        throw EngineError.cancelled("prefill stopped after \(done) of \(total) tokens")
      }
      try runBlock(block, proxy: proxy)
      done += block.reduce(0) { $0 + $1.count }
      if counts.blocks > 1 { onPrefillProgress?(done, total) }
    }
    // Post-prefill compression (the baseline): once the whole input is in.
    if let budgeted, budgeted.mode == .post { try mapCacheError { try budgeted.compress() } }
  }

  /// Prefills one block at the end of the context and records it.
  func runBlock(_ block: [PromptSegment], proxy: Bool = true) throws {
    guard let model, let cache = activeCache else { throw EngineError.noModel }
    _ = meter.takeWindowPeaks()
    // The last row's logits (one row: cheap) are kept after every block, so that a
    // cancelled prefill still leaves logits that match the cache.
    try mapCacheError {
      lastLogits = try run(
        block, model: model, cache: cache, logits: .last,
        proxy: proxy ? proxyTokens(after: block) : [])
    }
    for segment in block { append(segment) }
    let peaks = meter.takeWindowPeaks()
    memoryTrace.appendBounded(
      MemorySample(
        contextTokens: contextCount, kv: meter.reading(.kv).current, kvPeak: peaks[.kv] ?? 0,
        activationsPeak: peaks[.activations] ?? 0, visionPeak: peaks[.vision] ?? 0,
        rss: ProcessMemory.currentRSS()))
  }

  func requireNothingPending() throws {
    guard pendingBlocks.isEmpty else {
      throw EngineError.invalid(
        "\(pendingBlocks.count) prefill block\(pendingBlocks.count == 1 ? " is" : "s are") waiting; run 'prefill step' or 'prefill run' first"
      )
    }
  }

  // MARK: step-through

  /// What one `prefillStep` did: the block that entered (its tokens' origins) and, with a
  /// budget, what each layer and KV head evicted and the scores that decided it.
  public struct StepReport {
    /// 1-based index of the block among those run and waiting since stepping began.
    public var index: Int
    public var total: Int
    public var origins: [TokenOrigin]
    public var contextTokens: Int
    /// Tokens held per layer after the block (layer 0's; every layer holds the same count).
    public var cacheTokens: Int
    public var capacity: Int
    /// Per layer and KV head: positions evicted with their scores, and the lowest kept score.
    public var evictions: [EvictionRecord]
  }


  /// `prefill step=on|off`: turning it off first runs what is waiting.
  public func setStepping(_ on: Bool) throws {
    if !on {
      stepping = false
      try runPendingBlocks()
    } else {
      stepping = true
      stepsRun = 0
    }
  }

  /// Runs the next waiting block; nil when nothing waits.
  public func prefillStep() throws -> StepReport? {
    guard !pendingBlocks.isEmpty else { return nil }
    let block = pendingBlocks[0]
    try runBlock(block)
    pendingBlocks.removeFirst()
    stepsRun += 1
    if pendingBlocks.isEmpty, let budgeted, budgeted.mode == .post {
      try mapCacheError { try budgeted.compress() }
    }
    let summary = cacheSummary
    return StepReport(
      index: stepsRun, total: stepsRun + pendingBlocks.count, origins: block.flatMap(\.origins),
      contextTokens: contextCount, cacheTokens: summary?.tokens ?? contextCount,
      capacity: summary?.capacity ?? contextCount,
      evictions: budgeted?.lastEvictions ?? [])
  }

  /// Runs every waiting block.
  public func runPendingBlocks() throws {
    var done = 0
    let total = pendingBlocks.count
    while !pendingBlocks.isEmpty {
      if cancellation.isSet {
        throw EngineError.cancelled("prefill stopped after \(done) of \(total) blocks")
      }
      _ = try prefillStep()
      done += 1
    }
  }

  /// One forward over a block of segments at the end of the context: text rows embedded,
  /// visual rows encoded by the vision tower.
  func run(
    _ block: [PromptSegment], model: LlamaModel, cache: KeyValueCache, logits: LogitRows,
    at first: Int? = nil, proxy: [Int] = []
  ) throws -> Matrix? {
    let c = model.config
    let real = block.reduce(0) { $0 + $1.count }
    let n = real + proxy.count
    let start = first ?? contextCount
    if start + n > c.contextLength {
      throw EngineError.invalid(
        "context would hold \(start + n) tokens; the model's limit is \(c.contextLength)")
    }
    let x = Matrix(uninitializedRows: n, cols: c.hiddenSize, category: .activations, meter: meter)
    model.embed(proxy, into: x, at: real)
    var row = 0
    for segment in block {
      if let unit = segment.visual, let vision {
        let t0 = Date()
        let pixels = try unit.pixels()
        let t1 = Date()
        let features = try vision.encode(pixels, meter: meter)
        visualTiming.pixels += t1.timeIntervalSince(t0)
        visualTiming.vision += Date().timeIntervalSince(t1)
        guard features.rows == segment.count, features.cols == c.hiddenSize else {
          throw EngineError.invalid(
            "the vision tower made \(features.rows) tokens for \(segment.count) places")
        }
        x.row(row).update(from: features.pointer, count: features.rows * features.cols)
      } else {
        if let bad = segment.tokens.first(where: { $0 < 0 || $0 >= c.vocabularySize }) {
          throw EngineError.invalid(
            "token id \(bad) is outside the vocabulary (0..<\(c.vocabularySize))")
        }
        model.embed(segment.tokens, into: x, at: row)
      }
      row += segment.count
    }
    var axes: [[Int]]? =
      c.mropeSection == nil
      ? nil : (0..<3).map { a in block.flatMap { $0.ropeAxes?[a] ?? $0.positions } }
    if let a = axes, !proxy.isEmpty {
      // Proxy rows follow the block's largest rotary position.
      let next = (a.flatMap { $0 }.max() ?? -1) + 1
      axes = a.map { $0 + Array(next..<(next + proxy.count)) }
    }
    return try model.forward(
      x, positions: Array(start..<(start + n)), ropeAxes: axes,
      origins: block.flatMap(\.origins), cache: cache, logits: logits, proxyRows: proxy.count,
      meter: meter)
  }

  /// The proxy rows for a fed block: none unless a budgeted cache with a query-aware policy
  /// is on and the proxy is not the block itself. A question is framed as `ask` will put it
  /// after this block: the separator after what the turn holds, the question, the turn's end
  /// and the answer's opening.
  func proxyTokens(after block: [PromptSegment]) -> [Int] {
    guard let budgeted, budgeted.policy.queryWindow > 0, let tokenizer else { return [] }
    switch cacheSettings.proxy {
    case .block: return []
    case .template: return tokenizer.encode(chat.turnEnd + chat.assistantPrefix)
    case .question(let q):
      let separator = block.last?.visual != nil ? chat.afterVisual : "\n"
      return tokenizer.encode(separator + q + chat.turnEnd + chat.assistantPrefix)
    }
  }

  /// Records a prefilled segment (`SegmentLog.append`).
  func append(_ segment: PromptSegment) {
    contextCount += segment.count
    segments.append(segment)
  }
}

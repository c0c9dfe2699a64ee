import Foundation
import KVCache
import KVModels
import KVTensor

public struct EngineOptions: Sendable {
  /// Threads for BLAS and the engine's own loops.
  public var threads: Int
  /// Tokens per prefill forward: bounds activation memory; results do not depend on it
  /// beyond float rounding.
  public var prefillChunk: Int
  /// Folders searched for the default model, in order.
  public var modelDirectories: [String]

  public init(threads: Int = 2, prefillChunk: Int = 512, modelDirectories: [String] = ["models"]) {
    self.threads = threads
    self.prefillChunk = prefillChunk
    self.modelDirectories = modelDirectories
  }

  /// The model `load` uses when given no path.
  public static let defaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf"
}

public struct LoadReport: Sendable {
  public var path: String
  public var name: String
  public var architecture: String
  public var parameters: Int
  public var layers: Int
  public var vocabulary: Int
  public var kvBytesPerToken: Int
  public var weightBytes: Int
  public var seconds: Double
}

public struct FeedReport: Sendable {
  public var tokens: Int
  public var contextTokens: Int
  public var seconds: Double
}

public struct GenerationReport: Sendable {
  public var text: String
  public var tokens: [Int]
  public var stoppedOnEOS: Bool
  public var prefillTokens: Int
  public var prefillSeconds: Double
  public var decodeSeconds: Double
}

/// The state behind a REPL: one model, its tokenizer, the cache, the tokens fed so far, and the
/// meter all allocations are charged to. Commands are methods; every one either completes or
/// leaves the session as it was before the last whole block (cancellation is checked between
/// blocks and tokens only).
public final class Session {
  public let options: EngineOptions
  public let meter = MemoryMeter()
  public let cancellation = CancellationFlag()

  public private(set) var model: LlamaModel?
  public private(set) var tokenizer: BPETokenizer?
  public private(set) var modelPath: String?
  private var cache: DenseKVCache?
  /// The budgeted cache, when a budget and a compressing mode are configured (then `cache` is nil).
  private var budgeted: BudgetedCache?
  /// What prefill and generation feed: the budgeted cache when there is one, else the dense one.
  private var activeCache: KeyValueCache? { budgeted ?? cache }
  /// Budget, policy and prefill mode (`configureBudget`, `configurePolicy`, `configurePrefill`).
  public private(set) var cacheSettings = CacheSettings()
  /// Origin of every token of `context`, by position (to rebuild the cache when its kind
  /// changes, and for views of what the cache kept).
  public private(set) var contextOrigins: [TokenOrigin] = []
  /// Every token in the cache, in order, with its origin.
  public private(set) var context: [Int] = []
  private var feeds = 0
  /// Whether a chat user turn is open (text fed, question not yet asked).
  private var userTurnOpen = false
  /// The chat format of the loaded model (its GGUF's template when that is ChatML).
  private var template = ChatTemplate.chatML
  /// Logits after the last fed token (what the next token is drawn from).
  private var lastLogits: Matrix?

  public init(options: EngineOptions = EngineOptions()) {
    self.options = options
    BLAS.setThreads(options.threads)
  }

  // MARK: load

  /// Resolves the default model: the first `modelDirectories` entry holding it.
  public func defaultModelPath() -> String? {
    options.modelDirectories.map { ($0 as NSString).appendingPathComponent(EngineOptions.defaultModelFile) }
      .first { FileManager.default.fileExists(atPath: $0) }
  }

  public func load(_ path: String?) throws -> LoadReport {
    if path?.isEmpty == true { throw EngineError.invalid("empty model path") }
    guard let path = path ?? defaultModelPath() else {
      throw EngineError.invalid(
        "default model \(EngineOptions.defaultModelFile) not found in \(options.modelDirectories.joined(separator: ", ")) (run scripts/setup.sh)"
      )
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw EngineError.file(path: path, message: "no such file")
    }
    if isDirectory.boolValue {
      throw EngineError.file(path: path, message: "is a folder; expected a .gguf file")
    }
    let start = Date()
    // Drop the old model first so its memory is not held twice.
    unload()
    let gguf = try GGUFFile(path: path)
    // Cheapest checks first: an unsupported architecture is reported before the tokenizer or
    // any weight is read.
    _ = try DecoderConfig(gguf: gguf)
    let tokenizer = try BPETokenizer(gguf: gguf)
    let model = try LlamaModel.load(gguf: gguf, meter: meter)
    guard tokenizer.vocabularySize <= model.config.vocabularySize else {
      throw ModelError(
        path: path,
        message: "tokenizer has \(tokenizer.vocabularySize) tokens, model only \(model.config.vocabularySize)")
    }
    self.model = model
    self.tokenizer = tokenizer
    self.modelPath = path
    template = ChatTemplate(gguf: gguf) ?? .chatML
    reset()
    let c = model.config
    return LoadReport(
      path: path,
      name: gguf.metadata["general.name"]?.string ?? (path as NSString).lastPathComponent,
      architecture: c.architecture, parameters: model.parameterCount, layers: c.layers,
      vocabulary: c.vocabularySize, kvBytesPerToken: c.kvBytesPerToken,
      weightBytes: meter.reading(.weights).current, seconds: Date().timeIntervalSince(start))
  }

  public func unload() {
    cache = nil
    budgeted = nil
    contextOrigins = []
    model = nil
    tokenizer = nil
    modelPath = nil
    context = []
    userTurnOpen = false
    lastLogits = nil
  }

  /// Empties the cache and the context; the model stays loaded.
  public func reset() {
    context = []
    feeds = 0
    userTurnOpen = false
    lastLogits = nil
    contextOrigins = []
    // Release the old cache before allocating the new one, so the two never coexist.
    cache = nil
    budgeted = nil
    if let model {
      do {
        budgeted = try makeBudgetedCache(for: model.config)
      } catch {
        // A budget set before loading that this model cannot honour (e.g. bytes below one
        // token): the full cache, and the settings say so.
        cacheSettings.mode = .full
      }
    }
    if budgeted == nil {
      cache = model.map {
        DenseKVCache(
          layers: $0.config.layers, kvHeads: $0.config.kvHeads, headDim: $0.config.headDim,
          meter: meter)
      }
    }
  }

  // MARK: feeding

  public func tokenize(_ text: String) throws -> [Int] {
    guard let tokenizer else { throw EngineError.noModel }
    return tokenizer.encode(text)
  }

  /// Feeds text. Not raw: the text goes into the chat's open user turn (opened, with the
  /// template's default system prompt, when needed). Raw: the text is appended as is.
  @discardableResult
  public func feedText(_ text: String, raw: Bool) throws -> FeedReport {
    guard let tokenizer else { throw EngineError.noModel }
    var piece = ""
    if !raw && !userTurnOpen {
      piece += context.isEmpty ? template.systemPrefix : ""
      piece += template.userPrefix
      userTurnOpen = true
    } else if !raw {
      piece += "\n"
    }
    piece += text
    let start = Date()
    let tokens = tokenizer.encode(piece)
    try prefill(tokens, modality: .text)
    return FeedReport(tokens: tokens.count, contextTokens: context.count, seconds: Date().timeIntervalSince(start))
  }

  /// Prefills `tokens` in chunks, checking for cancellation between chunks.
  private func prefill(_ tokens: [Int], modality: TokenOrigin.Modality) throws {
    guard let model, let cache = activeCache else { throw EngineError.noModel }
    let input = feeds
    feeds += 1
    var done = 0
    let chunkSize = prefillBlockSize
    while done < tokens.count {
      if cancellation.isSet {
        throw EngineError.cancelled("prefill stopped after \(done) of \(tokens.count) tokens")
      }
      let chunk = Array(tokens[done..<min(tokens.count, done + chunkSize)])
      try validate(chunk, model: model)
      let positions = Array(context.count..<(context.count + chunk.count))
      let x = model.embed(chunk, meter: meter)
      // The last row's logits (one row: cheap) are kept after every chunk, so that a
      // cancelled prefill still leaves logits that match the cache.
      try mapCacheError {
        lastLogits = try model.forward(
          x, positions: positions,
          origins: Array(repeating: TokenOrigin(modality: modality, input: input), count: chunk.count),
          cache: cache, logits: .last, meter: meter)
      }
      context += chunk
      contextOrigins += Array(repeating: TokenOrigin(modality: modality, input: input), count: chunk.count)
      done += chunk.count
    }
    // Post-prefill compression (the baseline): once the whole input is in.
    if let budgeted, budgeted.mode == .post { try mapCacheError { try budgeted.compress() } }
  }

  private func validate(_ tokens: [Int], model: LlamaModel) throws {
    if let bad = tokens.first(where: { $0 < 0 || $0 >= model.config.vocabularySize }) {
      throw EngineError.invalid("token id \(bad) is outside the vocabulary (0..<\(model.config.vocabularySize))")
    }
    if context.count + tokens.count > model.config.contextLength {
      throw EngineError.invalid(
        "context would hold \(context.count + tokens.count) tokens; the model's limit is \(model.config.contextLength)")
    }
  }

  // MARK: generation

  /// Asks a question in the chat: closes the user turn (opening one if none is open), opens the
  /// assistant turn, generates, and closes the assistant turn so another question can follow.
  public func ask(
    _ question: String, options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard tokenizer != nil else { throw EngineError.noModel }
    let start = Date()
    var piece = ""
    if !userTurnOpen {
      piece += context.isEmpty ? template.systemPrefix : ""
      piece += template.userPrefix + question
    } else {
      piece += "\n" + question
    }
    piece += template.turnEnd + template.assistantPrefix
    userTurnOpen = false
    let promptTokens = try tokenize(piece)
    try prefill(promptTokens, modality: .text)
    let prefillSeconds = Date().timeIntervalSince(start)
    var report = try generate(options: options, onText: onText)
    // Close the assistant turn; the EOS the model produced is not in the cache yet.
    try prefill(try tokenize(template.turnEnd), modality: .text)
    report.prefillTokens = promptTokens.count
    report.prefillSeconds = prefillSeconds
    return report
  }

  /// Continues the context: each chosen token is fed back, until EOS or `maxTokens`.
  /// The EOS token itself is not fed (`ask` closes the turn).
  public func generate(
    options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard let model, let tokenizer, let cache = activeCache else { throw EngineError.noModel }
    guard var logits = lastLogits else {
      throw EngineError.invalid("nothing fed yet; feed text first")
    }
    let start = Date()
    var sampler = Sampler(options: options)
    var decoder = tokenizer.makeStreamingDecoder()
    var produced: [Int] = []
    var text = ""
    var stoppedOnEOS = false
    while produced.count < options.maxTokens {
      if cancellation.isSet {
        throw EngineError.cancelled("generation stopped after \(produced.count) tokens")
      }
      let next = sampler.sample(UnsafeBufferPointer(logits.storage.buffer))
      if next == tokenizer.eosID {
        stoppedOnEOS = true
        break
      }
      try validate([next], model: model)
      let x = model.embed([next], meter: meter)
      let position = context.count
      guard
        let out = try model.forward(
          x, positions: [position],
          origins: [TokenOrigin(modality: .generated, input: feeds)], cache: cache,
          logits: .last, meter: meter)
      else { break }
      context.append(next)
      contextOrigins.append(TokenOrigin(modality: .generated, input: feeds))
      logits = out
      lastLogits = out
      produced.append(next)
      let piece = decoder.append(next)
      text += piece
      onText(piece)
    }
    text += decoder.finish()
    return GenerationReport(
      text: text, tokens: produced, stoppedOnEOS: stoppedOnEOS, prefillTokens: 0,
      prefillSeconds: 0, decodeSeconds: Date().timeIntervalSince(start))
  }

  // MARK: inspection

  /// Writes the logits of every position of the context to a float32 .npy (`tokens × vocab`),
  /// recomputed in prefill-sized chunks over a scratch cache so the session's own cache is
  /// untouched and the table never sits in memory whole.
  public func writeLogits(to path: String) throws -> (rows: Int, cols: Int) {
    guard let model else { throw EngineError.noModel }
    guard !context.isEmpty else { throw EngineError.invalid("nothing fed yet; feed text first") }
    let c = model.config
    let scratch = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
    var writer: NPYWriter
    do {
      writer = try NPYWriter(path: path, shape: [context.count, c.vocabularySize])
    } catch let failure as NPYWriter.Failure {
      throw EngineError.invalid(failure.description)
    }
    var done = 0
    while done < context.count {
      if cancellation.isSet { throw EngineError.cancelled("logits stopped after \(done) positions") }
      let chunk = Array(context[done..<min(context.count, done + options.prefillChunk)])
      let x = model.embed(chunk, meter: meter)
      guard
        let out = try model.forward(
          x, positions: Array(done..<(done + chunk.count)),
          origins: Array(repeating: TokenOrigin(modality: .text, input: 0), count: chunk.count),
          cache: scratch, logits: .all, meter: meter)
      else { break }
      try writer.append(UnsafeBufferPointer(out.storage.buffer))
      done += chunk.count
    }
    try writer.close()
    return (context.count, c.vocabularySize)
  }

  /// What the cache holds now: tokens and bytes.
  public var cacheSummary: (tokens: Int, capacity: Int, bytes: Int)? {
    if let budgeted { return (budgeted.count, budgeted.capacityTokens, budgeted.bytesHeld) }
    return cache.map { ($0.count, $0.capacityTokens, $0.bytesHeld) }
  }
}

// MARK: budgeted cache (issue 4)

/// The session's cache configuration: what `budget`, `policy` and `prefill mode=` set.
public struct CacheSettings: CustomStringConvertible {
  /// nil: no budget (`budget off`), the full cache.
  public var budget: KVBudget?
  public var policy: any EvictionPolicy
  public var mode: PrefillMode
  /// Tokens per prefill block while a budget is on (nil: `EngineOptions.prefillChunk`).
  public var block: Int?
  public var retention: RetentionOptions

  public init(
    budget: KVBudget? = nil, policy: any EvictionPolicy = SnapKVPolicy(), mode: PrefillMode = .full,
    block: Int? = nil, retention: RetentionOptions = RetentionOptions()
  ) {
    self.budget = budget
    self.policy = policy
    self.mode = mode
    self.block = block
    self.retention = retention
  }

  /// Whether the cache is a `BudgetedCache` (a budget and a compressing mode).
  public var isBudgeted: Bool { budget != nil && mode != .full }

  public var description: String {
    "budget \(budget.map { "\($0)" } ?? "off"), policy \(policy), mode \(mode)"
      + (block.map { ", block \($0)" } ?? "")
  }
}

extension Session {
  /// The budgeted cache, for inspection (occupancy, entries, eviction log); nil without a budget.
  public var budgetedCache: BudgetedCache? { budgeted }

  /// Tokens per prefill forward: the configured block while a budget is on.
  var prefillBlockSize: Int {
    cacheSettings.isBudgeted ? (cacheSettings.block ?? options.prefillChunk) : options.prefillChunk
  }

  fileprivate func makeBudgetedCache(for config: DecoderConfig) throws -> BudgetedCache? {
    try makeBudgetedCache(for: config, settings: cacheSettings)
  }

  fileprivate func makeBudgetedCache(for config: DecoderConfig, settings: CacheSettings) throws -> BudgetedCache? {
    guard settings.isBudgeted, let budget = settings.budget else { return nil }
    let made = try BudgetedCache(
      config: config, budget: budget, mode: settings.mode, policy: settings.policy,
      options: settings.retention, blockSize: settings.block ?? options.prefillChunk, meter: meter)
    // The log of the last block's evictions (`cache log`): a few records per layer and head.
    made.logEvictions = true
    return made
  }

  /// `budget 1024 tokens` / `budget 16MiB` / `budget off` (nil). Setting a budget while the mode
  /// is `full` switches to `capped`. With a budgeted cache already in use, shrinking compresses
  /// now with the active policy and growing adds capacity; otherwise the cache is rebuilt from
  /// the context (see `apply`). On error the session is unchanged.
  public func configureBudget(_ budget: KVBudget?) throws {
    var s = cacheSettings
    s.budget = budget
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
    if let block, block < 1 { throw EngineError.invalid("block must be at least 1 token, got \(block)") }
    if mode != .full, cacheSettings.budget == nil {
      throw EngineError.invalid("mode=\(mode) needs a budget first (e.g. 'budget 1024 tokens')")
    }
    var s = cacheSettings
    s.mode = mode
    if let block { s.block = block }
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
  /// place (policy, options, budget); any other change builds the new cache and re-prefills the
  /// context into it (exact: same tokens, origins and positions), so what is held always follows
  /// the settings. The old cache is kept until the new one is complete: on error it is restored.
  func apply(_ settings: CacheSettings) throws {
    if let block = settings.block, block < 1 {
      throw EngineError.invalid("block must be at least 1 token, got \(block)")
    }
    guard let model else {
      // No model yet: what can be checked without one (a byte budget needs the model's size).
      if settings.isBudgeted, case .tokens(let n)? = settings.budget {
        do { try BudgetedCache.validate(budget: n, policy: settings.policy) } catch let e as CacheError {
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
        try BudgetedCache.validate(budget: tokens, policy: settings.policy)
      } catch let e as CacheError {
        throw EngineError.invalid(
          e.description + (tokens == 0 ? " (\(budget) is less than one token of \(BudgetedCache.bytesPerToken(c)) bytes)" : ""))
      }
    }
    if let current = budgeted, settings.isBudgeted, settings.mode == current.mode,
      (settings.block ?? options.prefillChunk) == (cacheSettings.block ?? options.prefillChunk)
    {
      let tokens = settings.budget!.tokens(kvBytesPerToken: BudgetedCache.bytesPerToken(c))
      try mapCacheError {
        if tokens != current.budget { try current.setBudget(tokens) }
        if settings.policy.description != current.policy.description { try current.setPolicy(settings.policy) }
      }
      current.options = settings.retention
      cacheSettings = settings
      return
    }
    // Rebuild: a new kind of cache (dense ↔ budgeted, or another mode / block size).
    let saved = (cache, budgeted, cacheSettings, lastLogits)
    let tokens = context
    let origins = contextOrigins
    cache = nil
    budgeted = nil
    cacheSettings = settings
    do {
      if let made = try makeBudgetedCache(for: c) {
        budgeted = made
      } else {
        cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
      }
      try refill(tokens, origins: origins)
    } catch {
      (cache, budgeted, cacheSettings, lastLogits) = saved
      context = tokens
      contextOrigins = origins
      if let e = error as? CacheError { throw EngineError.invalid(e.description) }
      throw error
    }
  }

  /// Prefills `tokens` with their recorded origins into the (fresh) active cache.
  private func refill(_ tokens: [Int], origins: [TokenOrigin]) throws {
    guard let model, let cache = activeCache else { throw EngineError.noModel }
    context = []
    contextOrigins = []
    lastLogits = nil
    var done = 0
    let chunkSize = prefillBlockSize
    while done < tokens.count {
      let end = min(tokens.count, done + chunkSize)
      let chunk = Array(tokens[done..<end])
      let x = model.embed(chunk, meter: meter)
      lastLogits = try model.forward(
        x, positions: Array(done..<end), origins: Array(origins[done..<end]), cache: cache,
        logits: .last, meter: meter)
      context += chunk
      contextOrigins += origins[done..<end]
      done = end
    }
    if let budgeted, budgeted.mode == .post { try budgeted.compress() }
  }
}

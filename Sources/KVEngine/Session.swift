import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

/// The state behind a REPL: one model, its tokenizer, the cache, the tokens fed so far, and the
/// meter all allocations are charged to. Commands are methods; every one either completes or
/// leaves the session as it was before the last whole block (cancellation is checked between
/// blocks and tokens only).
public final class Session {
  public let options: EngineOptions
  public let meter = MemoryMeter()
  public let cancellation: CancellationFlag

  /// The decoder (of the vision-language model, when one is loaded).
  public internal(set) var model: LlamaModel?
  /// The vision-language model, when the loaded model has a vision tower.
  public internal(set) var vision: (any VisionLanguageModel)?
  public internal(set) var tokenizer: BPETokenizer?
  /// The loaded model's family (`ModelRegistry`): what its visual unit is called, its options.
  public internal(set) var family: ModelFamily?
  public internal(set) var modelPath: String?
  /// The K/V storage (nil without a model), made by `CacheBuilder` for `cacheSettings`.
  var kv: SessionCache?
  /// The budgeted cache, when a budget and a compressing mode are configured.
  var budgeted: BudgetedCache? { kv?.budgeted }
  /// What prefill and generation feed: the budgeted cache when there is one, else the full one.
  var activeCache: KeyValueCache? { kv?.active }
  /// Budget, policy and prefill mode (`configureBudget`, `configurePolicy`, `configurePrefill`).
  public internal(set) var cacheSettings = CacheSettings()
  /// What was fed, as laid out: runs of text, and each image or clip as one record that lays
  /// its frames out again when needed. Rebuilding the cache re-prefills these (visual units
  /// re-read their pixels from the files). This is the only record of the context: its
  /// per-token views (`context`, `contextOrigins`) are made from it on demand, so what the
  /// session keeps grows per feed, not per frame or token.
  public internal(set) var segments: SegmentLog = []
  /// Tokens in the context (`contextCount`, without making the list).
  public internal(set) var contextCount = 0
  /// Every token in the cache, in order (visual tokens as their placeholder id).
  public var context: [Int] {
    var out: [Int] = []
    out.reserveCapacity(contextCount)
    for segment in segments { out += segment.tokens }
    return out
  }
  /// Origin of every token of `context`, by position (for views of what the cache kept).
  public var contextOrigins: [TokenOrigin] {
    var out: [TokenOrigin] = []
    out.reserveCapacity(contextCount)
    for segment in segments { out += segment.origins }
    return out
  }
  /// The rotary position the next token takes (differs from `contextCount` under M-RoPE).
  var nextRopePosition = 0
  var feeds = 0
  /// Images and clips fed so far (the `image` of their tokens' origins).
  var visualInputs = 0
  /// Whether a chat user turn is open (text fed, question not yet asked).
  var userTurnOpen = false
  /// Whether the last thing fed into the open turn was an image or clip.
  var lastFedVisual = false
  /// The chat format of the loaded model (its GGUF's template when that is ChatML).
  var chat = ChatLayout(ChatTemplate.chatML)
  /// Tokens that end generation: the chat's end of turn and the tokenizer's EOS.
  var stopIDs: Set<Int> = []
  /// Logits after the last fed token (what the next token is drawn from).
  var lastLogits: Matrix?
  /// The last question asked and the context it was asked in (what `compare` re-runs).
  public internal(set) var lastAsk: AskPoint?
  /// Called after each block of a prefill of several blocks with (tokens done, total): the
  /// REPL's progress line.
  public var onPrefillProgress: ((Int, Int) -> Void)?
  /// Seconds spent getting visual units' pixels and in the vision tower, over the session.
  var visualTiming = (pixels: 0.0, vision: 0.0)
  /// One sample per prefill block since the model was loaded or `clearMemoryTrace`.
  public internal(set) var memoryTrace: [MemorySample] = []

  /// Bytes the session keeps as its record of what was fed (`SegmentLog.recordBytes`: per
  /// text run and per image or clip, never per frame or visual token), plus the memory trace
  /// (one sample per prefill block, at most 4,096), counted by capacity. Not counted: the cache
  /// (bounded by the budget) and what a clip keeps to lay its frames out again.
  public var recordBytes: Int {
    segments.recordBytes + memoryTrace.capacity * MemoryLayout<MemorySample>.stride
  }

  /// Starts a new memory trace (`mem reset`).
  public func clearMemoryTrace() { memoryTrace = [] }

  /// A copy of the logits the next token is drawn from (nil before anything is fed).
  public var nextTokenLogits: [Float]? { lastLogits.map { Array($0.storage.buffer) } }

  /// - Parameter cancellation: the flag Ctrl-C sets (a session re-run for `compare` shares its
  ///   parent's, so that Ctrl-C stops the re-run).
  public init(
    options: EngineOptions = EngineOptions(), cancellation: CancellationFlag = CancellationFlag()
  ) {
    self.options = options
    self.cancellation = cancellation
    BLAS.setThreads(options.threads)
  }

  // MARK: step-through state

  /// While on, feeds lay out their blocks and queue them; `prefillStep` runs one at a time.
  public internal(set) var stepping = false
  /// Blocks laid out and not yet prefilled, in order.
  public internal(set) var pendingBlocks: [[PromptSegment]] = []
  var stepsRun = 0
}

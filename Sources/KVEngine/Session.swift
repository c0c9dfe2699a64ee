import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

public struct EngineOptions: Sendable {
  /// Threads for BLAS and the engine's own loops.
  public var threads: Int
  /// Tokens per prefill forward: bounds activation memory; results do not depend on it
  /// beyond float rounding.
  public var prefillChunk: Int
  /// Folders searched for the default model, in order.
  public var modelDirectories: [String]
  /// What `load` with no path loads: a file or model folder name looked up in
  /// `modelDirectories`.
  public var defaultModel: String
  /// Bytes `load` and `budget` may allocate: nil (the default) asks the system at each check
  /// (`SystemMemory.available()`, MemAvailable); a number pretends, so that tests can provoke
  /// the refusals without a machine too small for the model.
  public var availableMemory: Int?

  public init(
    threads: Int = 2, prefillChunk: Int = 512,
    modelDirectories: [String] = EngineOptions.modelFolders,
    defaultModel: String = EngineOptions.embeddedModel, availableMemory: Int? = nil
  ) {
    self.threads = threads
    self.prefillChunk = prefillChunk
    self.modelDirectories = modelDirectories
    self.defaultModel = defaultModel
    self.availableMemory = availableMemory
  }

  /// The model `load` uses when given no path: kvlab's own vision-language model, trained on the
  /// synthetic tasks and committed under `weights/` (weights/kvlab-shapes/MODEL_CARD.md).
  public static let embeddedModel = "kvlab-shapes"
  /// The folders models live in, relative to the repository (or the working folder): the
  /// committed embedded model in `weights/`, what `scripts/setup.sh` fetches in `models/`.
  public static let modelFolders = ["weights", "models"]
  /// The environment variable naming one more folder to look in first (read by the `kvlab`
  /// executable; named here so that the error of a failed look-up can say it).
  public static let modelsVariable = "KVLAB_MODELS"
  /// The text model `scripts/setup.sh` fetches into `models/`.
  public static let textModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf"
}

public struct LoadReport: Sendable {
  public var path: String
  public var name: String
  public var architecture: String
  public var parameters: Int
  public var layers: Int
  public var vocabulary: Int
  public var kvBytesPerToken: Int
  /// Weights resident on the heap, and read in place from the model file's mapping.
  public var weightBytes: Int
  public var mappedWeightBytes: Int
  /// The matrices' stored formats ("Q4_1+Q8_0", "F32").
  public var weightFormat: String
  public var seconds: Double
}

public struct FeedReport: Sendable {
  public var tokens: Int
  public var contextTokens: Int
  public var seconds: Double
  /// For an image or clip: how many visual units (tiles, images, frame pairs) and visual tokens.
  public var visualUnits = 0
  public var visualTokens = 0
  /// Prefill blocks waiting (stepping on): the fed tokens are not in the context yet.
  public var waitingBlocks = 0
  /// Of `seconds`: getting visual units' pixels (decoding, resizing, tiling) and the vision
  /// tower with its connector; the rest is the decoder (and the cache).
  public var pixelSeconds = 0.0
  public var visionSeconds = 0.0
}

/// Memory after one prefill block (`mem plot`): what the cache holds, the meter's peaks while
/// the block ran, and the process's resident set after it.
public struct MemorySample: Equatable, Sendable {
  /// Tokens in the context after the block.
  public var contextTokens: Int
  /// K/V bytes held after the block, and the most held while it ran.
  public var kv: Int
  public var kvPeak: Int
  public var activationsPeak: Int
  public var visionPeak: Int
  /// VmRSS after the block (nil where /proc is not readable).
  public var rss: Int?
  /// Blocks this sample stands for (more than 1 once a long trace merged; MemoryTrace.swift).
  public var blocks = 1
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
  public let cancellation: CancellationFlag

  /// The decoder (of the vision-language model, when one is loaded).
  public private(set) var model: LlamaModel?
  /// The vision-language model, when the loaded model has a vision tower.
  public private(set) var vision: (any VisionLanguageModel)?
  public private(set) var tokenizer: BPETokenizer?
  public private(set) var modelPath: String?
  private var cache: DenseKVCache?
  /// The budgeted cache, when a budget and a compressing mode are configured (then `cache` is nil).
  private var budgeted: BudgetedCache?
  /// What prefill and generation feed: the budgeted cache when there is one, else the dense one.
  private var activeCache: KeyValueCache? { budgeted ?? cache }
  /// Budget, policy and prefill mode (`configureBudget`, `configurePolicy`, `configurePrefill`).
  public private(set) var cacheSettings = CacheSettings()
  /// What was fed, as laid out: runs of text and visual units, in order. Rebuilding the cache
  /// re-prefills these (visual units re-read their pixels from the files). This is the only
  /// record of the context: its per-token views (`context`, `contextOrigins`) are made from it
  /// on demand, so what the session keeps grows per segment (a run-length record per tile or
  /// frame), not per token.
  public private(set) var segments: [PromptSegment] = []
  /// Tokens in the context (`contextCount`, without making the list).
  public private(set) var contextCount = 0
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
  private var nextRopePosition = 0
  private var feeds = 0
  /// Images and clips fed so far (the `image` of their tokens' origins).
  private var visualInputs = 0
  /// Whether a chat user turn is open (text fed, question not yet asked).
  private var userTurnOpen = false
  /// Whether the last thing fed into the open turn was an image or clip.
  private var lastFedVisual = false
  /// The chat format of the loaded model (its GGUF's template when that is ChatML).
  private var chat = ChatLayout(ChatTemplate.chatML)
  /// Tokens that end generation: the chat's end of turn and the tokenizer's EOS.
  private var stopIDs: Set<Int> = []
  /// Logits after the last fed token (what the next token is drawn from).
  private var lastLogits: Matrix?
  /// The last question asked and the context it was asked in (what `compare` re-runs).
  public private(set) var lastAsk: AskPoint?
  /// Called after each block of a prefill of several blocks with (tokens done, total): the
  /// REPL's progress line.
  public var onPrefillProgress: ((Int, Int) -> Void)?
  /// Seconds spent getting visual units' pixels and in the vision tower, over the session.
  private var visualTiming = (pixels: 0.0, vision: 0.0)
  /// One sample per prefill block since the model was loaded or `clearMemoryTrace`.
  public private(set) var memoryTrace: [MemorySample] = []

  /// Bytes the session keeps as its record of what was fed: the segment list and each
  /// segment's ids, origin runs and position runs, plus one memory sample per prefill block,
  /// counted by capacity. It grows per segment and per block (a frame adds a few hundred bytes
  /// however many tokens it has), never per visual token. Not counted: the cache (bounded by
  /// the budget) and the closures that fetch a unit's pixels again.
  public var recordBytes: Int {
    segments.capacity * MemoryLayout<PromptSegment>.stride
      + segments.reduce(0) { $0 + $1.recordBytes }
      + memoryTrace.capacity * MemoryLayout<MemorySample>.stride
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

  // MARK: load

  /// Resolves the default model: the first `modelDirectories` entry holding it.
  public func defaultModelPath() -> String? {
    options.modelDirectories.map {
      ($0 as NSString).appendingPathComponent(options.defaultModel)
    }
    .first { FileManager.default.fileExists(atPath: $0) }
  }

  /// Loads a GGUF decoder, or a Hugging Face folder (config.json + safetensors): a
  /// vision-language model (Idefics3/SmolVLM, LLaVA, Qwen2-VL) or a llama/qwen2 decoder.
  /// `precision` applies to GGUF files: `.f32` dequantizes every matrix (the reference path).
  public func load(_ path: String?, precision: WeightPrecision = .stored) throws -> LoadReport {
    if path?.isEmpty == true { throw EngineError.invalid("empty model path") }
    guard let path = path ?? defaultModelPath() else {
      throw EngineError.invalid(
        "default model \(options.defaultModel) not found in \(options.modelDirectories.joined(separator: ", ")); "
          + "set \(EngineOptions.modelsVariable) to the folder that holds it, or give its path (load PATH)"
      )
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw EngineError.file(
        path: path, message: BoundedFile.missing(path, notThere: "no such file"))
    }
    let start = Date()
    // Drop the old model first so its memory is not held twice.
    unload()
    let name: String
    var visionParameters = 0
    if isDirectory.boolValue {
      guard
        FileManager.default.fileExists(
          atPath: (path as NSString).appendingPathComponent("config.json"))
      else {
        throw EngineError.file(
          path: path,
          message:
            "is a folder without config.json; expected a .gguf file or a Hugging Face model folder")
      }
      let folder = try HFModelFolder(path: path)
      // Every tensor becomes float32 (the shapes are checked before each allocation, so the
      // weights take no more than this).
      try checkFits(
        path: path,
        bytes: folder.files.reduce(0.0) { total, file in
          file.tensorInfos.reduce(total) { $0 + 4 * Double($1.elementCount) }
        })
      try folder.requireFiniteWeights()  // as GGUF weights are scanned below
      if let type = folder.modelType, ["llama", "qwen2"].contains(type) {
        let config = try folder.decodeConfig(DecoderConfig.self)
        let tokenizer = try BPETokenizer(
          tokenizerJSON: (path as NSString).appendingPathComponent("tokenizer.json"))
        install(
          model: try LlamaModel.load(
            folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: config,
            meter: meter),
          tokenizer: tokenizer, chat: ChatLayout(.chatML))
      } else {
        let vlm = try VisionLanguageModels.load(folder: folder, meter: meter)
        install(model: vlm.decoder, tokenizer: vlm.tokenizer, chat: vlm.chat)
        vision = vlm
        visionParameters = vlm.visionParameterCount
      }
      name = (path as NSString).lastPathComponent
    } else {
      let gguf = try GGUFFile(path: path)
      // Cheapest checks first: an unsupported architecture is reported before the tokenizer or
      // any weight is read.
      let config = try DecoderConfig(gguf: gguf)
      // As stored, the weights take the file's bytes per element (mapped pages are resident
      // memory too); float32 takes 4. A file without tensors is counted as float32.
      let elements = gguf.tensors.values.reduce(0.0) { $0 + Double($1.elementCount) }
      let stored = gguf.tensors.values.reduce(0.0) { $0 + Double($1.byteCount) }
      let perElement = precision == .f32 || elements == 0 ? 4 : stored / elements
      try checkFits(
        path: path, bytes: perElement * config.weightElementCount,
        form: precision == .f32 ? "float32" : "as stored")
      // Every float the weights hold must be finite (a NaN scale makes every logit NaN): one
      // pass over the mapped bytes, on by default (its cost is measured in the README).
      if let (tensor, index, kind) = try gguf.firstNonFinite() {
        throw EngineError.file(
          path: path,
          message: "tensor \(tensor): \(kind) \(index) is not a finite number (NaN or infinity)")
      }
      let tokenizer = try BPETokenizer(gguf: gguf)
      install(
        model: try LlamaModel.load(gguf: gguf, precision: precision, meter: meter),
        tokenizer: tokenizer,
        chat: ChatLayout(ChatTemplate(gguf: gguf) ?? .chatML))
      name = gguf.metadata["general.name"]?.string ?? (path as NSString).lastPathComponent
    }
    guard let model, let tokenizer else { throw EngineError.noModel }
    guard tokenizer.vocabularySize <= model.config.vocabularySize else {
      let size = tokenizer.vocabularySize
      unload()
      throw ModelError(
        path: path,
        message: "tokenizer has \(size) tokens, model only \(model.config.vocabularySize)")
    }
    modelPath = path
    reset()
    let c = model.config
    return LoadReport(
      path: path, name: name,
      architecture: vision?.family ?? c.architecture,
      parameters: model.parameterCount + visionParameters, layers: c.layers,
      vocabulary: c.vocabularySize, kvBytesPerToken: c.kvBytesPerToken,
      weightBytes: meter.reading(.weights).current,
      mappedWeightBytes: meter.reading(.mapped).current, weightFormat: model.weightFormat,
      seconds: Date().timeIntervalSince(start))
  }

  /// Measures the loaded GGUF model (matrices at their stored precision) against its float32
  /// reference: the same file loaded again dequantized for the measurement (not charged to
  /// the session's meter), then dropped. The session itself is unchanged.
  public func fidelity(steps: Int) throws -> FidelityReport {
    guard let model, let tokenizer, let path = modelPath else { throw EngineError.noModel }
    var isDirectory: ObjCBool = false
    guard vision == nil, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory),
      !isDirectory.boolValue
    else {
      throw EngineError.invalid(
        "fidelity compares a GGUF model with its float32 reference; this model is float32 already")
    }
    guard model.weightFormat != "F32" else {
      throw EngineError.invalid(
        "the loaded model is float32 already (precision=f32): load it with precision=stored")
    }
    let gguf = try GGUFFile(path: path)
    try checkFits(path: path, bytes: 4 * model.config.weightElementCount)
    let reference = try LlamaModel.load(gguf: gguf, precision: .f32, meter: nil)
    return try Fidelity.measure(
      fast: model, reference: reference, tokenizer: tokenizer, steps: steps,
      cancellation: cancellation)
  }

  /// Bytes that may be allocated now (`EngineOptions.availableMemory`, else the system's).
  func availableMemory() -> Int? { options.availableMemory ?? SystemMemory.available() }

  /// Refuses a model whose weights would not fit in the memory available, before any is read.
  private func checkFits(path: String, bytes: Double, form: String = "float32") throws {
    guard let available = availableMemory(), bytes > Double(available) else { return }
    throw EngineError.file(
      path: path,
      message:
        "needs \(SystemMemory.describe(bytes)) of memory for its weights (\(form)), "
        + "\(SystemMemory.describe(available)) available")
  }

  private func install(model: LlamaModel, tokenizer: BPETokenizer, chat: ChatLayout) {
    self.model = model
    self.tokenizer = tokenizer
    self.chat = chat
    stopIDs = Set(chat.stopTokens.compactMap { tokenizer.id(of: $0) })
    if let eos = tokenizer.eosID { stopIDs.insert(eos) }
  }

  public func unload() {
    memoryTrace = []
    lastAsk = nil
    cache = nil
    budgeted = nil
    model = nil
    vision = nil
    pendingBlocks = []
    tokenizer = nil
    modelPath = nil
    contextCount = 0
    segments = []
    nextRopePosition = 0
    userTurnOpen = false
    lastFedVisual = false
    lastLogits = nil
  }

  /// Empties the cache and the context; the model stays loaded.
  public func reset() {
    lastAsk = nil
    pendingBlocks = []
    stepsRun = 0
    contextCount = 0
    segments = []
    nextRopePosition = 0
    feeds = 0
    visualInputs = 0
    userTurnOpen = false
    lastFedVisual = false
    lastLogits = nil
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
    guard tokenizer != nil else { throw EngineError.noModel }
    let start = Date()
    let input = feeds
    let was = turnState
    var piece = raw ? "" : openUserTurn()
    piece += text
    let segment = try textSegment(piece, input: input)
    try restoringTurnOnRefusal(was) { try prefill([segment]) }
    feeds += 1
    lastFedVisual = false
    return FeedReport(
      tokens: segment.count, contextTokens: contextCount, seconds: Date().timeIntervalSince(start),
      waitingBlocks: pendingBlocks.count)
  }

  /// The chat's turn state and the next rotary position: what laying out input changes before
  /// anything is prefilled.
  private var turnState: (userTurnOpen: Bool, lastFedVisual: Bool, nextRopePosition: Int) {
    (userTurnOpen, lastFedVisual, nextRopePosition)
  }

  /// Runs a prefill; when it fails with nothing of it prefilled or queued (a refusal: the
  /// context limit, a budget that cannot hold what must stay), the turn state goes back to
  /// `was`, so the session is as it was before the input was laid out.
  private func restoringTurnOnRefusal(
    _ was: (userTurnOpen: Bool, lastFedVisual: Bool, nextRopePosition: Int),
    _ body: () throws -> Void
  ) throws {
    let fed = contextCount
    let waiting = pendingBlocks.count
    do { try body() } catch {
      if contextCount == fed && pendingBlocks.count == waiting {
        (userTurnOpen, lastFedVisual, nextRopePosition) = was
      }
      throw error
    }
  }

  /// What goes before fed content in the user turn: the turn's opening (with the system
  /// prompt first in an empty context), or the separator after what the turn already holds.
  private func openUserTurn() -> String {
    defer { userTurnOpen = true }
    if !userTurnOpen { return (contextCount == 0 ? chat.systemPrefix : "") + chat.userPrefix }
    return lastFedVisual ? chat.afterVisual : "\n"
  }

  /// `text` tokenized as the next run of the context, from input `input`.
  private func textSegment(_ text: String, input: Int) throws -> PromptSegment {
    guard let tokenizer else { throw EngineError.noModel }
    return try tokenSegment(tokenizer.encode(text), input: input, modality: .text)
  }

  /// Token ids as the next run of the context (rotary positions from `nextRopePosition`, which
  /// moves past them: positions are given when input is laid out, so queued blocks agree).
  private func tokenSegment(_ ids: [Int], input: Int, modality: TokenOrigin.Modality) throws
    -> PromptSegment
  {
    guard let model else { throw EngineError.noModel }
    let positions = Array(nextRopePosition..<(nextRopePosition + ids.count))
    nextRopePosition += ids.count
    return PromptSegment(
      tokens: ids,
      origins: Array(repeating: TokenOrigin(modality: modality, input: input), count: ids.count),
      positions: positions,
      ropeAxes: model.config.mropeSection != nil ? [positions, positions, positions] : nil)
  }

  /// Feeds an image into the chat's user turn, laid out by the loaded vision-language model
  /// (tiles, markers, one visual unit per tile or image).
  /// `split` turns Idefics3's tiling on or off for this image (nil: the model's setting).
  @discardableResult
  public func feedImage(_ path: String, split: Bool? = nil) throws -> FeedReport {
    do {
      return try feedImage(source: { try ImageSource(path: path) }, split: split)
    } catch let e as ImageError where e.path != path {
      // The model's size checks name the image by its size ("4000×3000 image"): add the file.
      throw EngineError.file(path: path, message: e.description)
    }
  }

  /// Feeds an image already in memory (a generated one), as `feedImage(_:split:)` feeds a file.
  @discardableResult
  public func feedImage(_ image: RGBImage, split: Bool? = nil) throws -> FeedReport {
    try feedImage(source: { ImageSource(image) }, split: split)
  }

  /// `source` is made inside the feed, so that a file that fails to decode leaves the session
  /// as it was.
  private func feedImage(source: () throws -> ImageSource, split: Bool?) throws -> FeedReport {
    if let split {
      guard let idefics = vision as? Idefics3Model else {
        throw EngineError.invalid("split= applies to Idefics3 / SmolVLM models only")
      }
      let saved = idefics.splitter.splitting
      idefics.splitter.splitting = split
      defer { idefics.splitter.splitting = saved }
      return try feedImage(source: source, split: nil)
    }
    return try feedVisual { vlm, index, start in
      try vlm.layout(image: source(), at: index, start: start)
    }
  }

  /// Feeds the frames of a clip (image files, in order) into the user turn.
  @discardableResult
  public func feedFrames(_ paths: [String]) throws -> FeedReport {
    guard !paths.isEmpty else { throw EngineError.invalid("no frames to feed") }
    return try feedVisual { vlm, index, start in
      try vlm.layout(frames: ImageSource.files(paths), at: index, start: start)
    }
  }

  /// Feeds the planned frames of a video, each decoded by ffmpeg when the prefill reaches it
  /// (`VideoClip`); with `times`, in the family's timed layout (SmolVLM states each frame's
  /// time). The clip's stream is closed when the feed ends, however it ends; a later pass
  /// (a cache rebuilt, a logits dump) decodes the frames again. A decoding failure part way
  /// leaves the frames fed before it in the context, as a cancelled feed does.
  @discardableResult
  public func feedVideo(_ clip: VideoClip, times: Bool = true) throws -> FeedReport {
    defer { clip.close() }
    let sources = clip.sources
    let clipTimes = ClipTimes(seconds: clip.plan.promptTimes, duration: clip.plan.duration)
    return try feedVisual { vlm, index, start in
      times
        ? try vlm.layout(frames: sources, times: clipTimes, at: index, start: start)
        : try vlm.layout(frames: sources, at: index, start: start)
    }
  }

  /// Feeds the frames of a clip already in memory. They are written once to a temporary
  /// folder and decoded again from there when needed (`FrameSpool`), so a clip fed this way
  /// costs disk, not memory, for the session's life, as a folder of frames does.
  @discardableResult
  public func feedFrames(_ frames: [RGBImage]) throws -> FeedReport {
    guard !frames.isEmpty else { throw EngineError.invalid("no frames to feed") }
    let spool = try FrameSpool(frames)
    return try feedVisual { vlm, index, start in
      try vlm.layout(frames: spool.sources(frames), at: index, start: start)
    }
  }

  /// The input and image indices the next feed's tokens will carry (the oracle's targets are
  /// computed for them before the feed).
  public var nextVisualInput: VisualInputIndex {
    VisualInputIndex(input: feeds, image: visualInputs)
  }

  /// Feeds a generated sample's image or clip (not its question: that is the caller's).
  @discardableResult
  public func feed(_ sample: SyntheticSample) throws -> FeedReport {
    if sample.task.isClip { return try feedFrames(sample.images) }
    let split: Bool? = sample.task.isSingleTile && vision is Idefics3Model ? false : nil
    return try feedImage(sample.images[0], split: split)
  }

  private func feedVisual(
    _ layout: (any VisionLanguageModel, VisualInputIndex, Int) throws -> PromptLayout
  ) throws -> FeedReport {
    guard model != nil else { throw EngineError.noModel }
    guard let vision else {
      throw EngineError.invalid(
        "the loaded model has no vision tower (load a vision-language model folder: \(VisionLanguageModels.families.joined(separator: ", ")))"
      )
    }
    let start = Date()
    let timing = visualTiming
    let input = feeds
    let was = (userTurnOpen, lastFedVisual, nextRopePosition)
    let laid: PromptLayout
    let opening: PromptSegment
    do {
      opening = try textSegment(openUserTurn(), input: input)
      laid = try layout(
        vision, VisualInputIndex(input: input, image: visualInputs), nextRopePosition)
    } catch {
      (userTurnOpen, lastFedVisual, nextRopePosition) = was
      throw error
    }
    nextRopePosition = laid.nextPosition
    let all = (opening.count > 0 ? [opening] : []) + laid.segments
    let visual = laid.segments.filter { $0.visual != nil }.reduce(0) { $0 + $1.count }
    try restoringTurnOnRefusal(was) { try withBudgetShare(adding: visual) { try prefill(all) } }
    feeds += 1
    visualInputs += 1
    lastFedVisual = true
    let units = laid.segments.filter { $0.visual != nil }
    return FeedReport(
      tokens: all.reduce(0) { $0 + $1.count }, contextTokens: contextCount,
      seconds: Date().timeIntervalSince(start), visualUnits: units.count,
      visualTokens: units.reduce(0) { $0 + $1.count }, waitingBlocks: pendingBlocks.count,
      pixelSeconds: visualTiming.pixels - timing.pixels,
      visionSeconds: visualTiming.vision - timing.vision)
  }

  /// Prefills `new` block by block (see `BlockScheduler`), checking for cancellation between
  /// blocks; each block's visual units are encoded when the block runs. While `stepping`, the
  /// blocks are queued instead, for `prefillStep`.
  private func prefill(_ new: [PromptSegment], proxy: Bool = true) throws {
    guard let model, activeCache != nil else { throw EngineError.noModel }
    // The context limit is checked for the whole input before any block runs or is queued (each
    // block's forward checks it again), so a refused input leaves the context as it was rather
    // than the blocks that fitted. Proxy rows, when there are, follow the last block.
    let total = new.reduce(0) { $0 + $1.count }
    let waiting = pendingBlocks.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } }
    let proxyRows = proxy && total > 0 ? proxyTokens(after: new).count : 0
    let end = contextCount + waiting + total + proxyRows
    if end > model.config.contextLength {
      throw EngineError.invalid(
        "context would hold \(end) tokens; the model's limit is \(model.config.contextLength)")
    }
    let blocks = scheduler.blocks(new)
    budgeted?.reserveBlock(blocks.map { $0.reduce(0) { $0 + $1.count } }.max() ?? 0)
    if stepping {
      pendingBlocks += blocks
      return
    }
    try requireNothingPending()
    var done = 0
    for block in blocks {
      if cancellation.isSet {
        throw EngineError.cancelled("prefill stopped after \(done) of \(total) tokens")
      }
      try runBlock(block, proxy: proxy)
      done += block.reduce(0) { $0 + $1.count }
      if blocks.count > 1 { onPrefillProgress?(done, total) }
    }
    // Post-prefill compression (the baseline): once the whole input is in.
    if let budgeted, budgeted.mode == .post { try mapCacheError { try budgeted.compress() } }
  }

  /// Prefills one block at the end of the context and records it.
  private func runBlock(_ block: [PromptSegment], proxy: Bool = true) throws {
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

  private func requireNothingPending() throws {
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

  /// While on, feeds lay out their blocks and queue them; `prefillStep` runs one at a time.
  public private(set) var stepping = false
  /// Blocks laid out and not yet prefilled, in order.
  public private(set) var pendingBlocks: [[PromptSegment]] = []
  private var stepsRun = 0

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
  private func run(
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
  private func proxyTokens(after block: [PromptSegment]) -> [Int] {
    guard let budgeted, budgeted.policy.queryWindow > 0, let tokenizer else { return [] }
    switch cacheSettings.proxy {
    case .block: return []
    case .template: return tokenizer.encode(chat.turnEnd + chat.assistantPrefix)
    case .question(let q):
      let separator = block.last?.visual != nil ? chat.afterVisual : "\n"
      return tokenizer.encode(separator + q + chat.turnEnd + chat.assistantPrefix)
    }
  }

  /// Records a prefilled segment; consecutive text runs merge (generation appends one token at
  /// a time).
  private func append(_ segment: PromptSegment) {
    contextCount += segment.count
    if let last = segments.last, last.visual == nil, segment.visual == nil {
      segments[segments.count - 1].append(segment)
    } else {
      // Nothing merges into the last segment any more: it keeps no spare room.
      if !segments.isEmpty { segments[segments.count - 1].trimCapacity() }
      var kept = segment
      kept.trimCapacity()
      segments.append(kept)
    }
  }

  // MARK: generation

  /// Asks a question in the chat: closes the user turn (opening one if none is open), opens the
  /// assistant turn, generates, and closes the assistant turn so another question can follow.
  public func ask(
    _ question: String, options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard tokenizer != nil else { throw EngineError.noModel }
    try requireNothingPending()
    // The question and the answer are not stepped through: the answer needs them prefilled.
    let wasStepping = stepping
    stepping = false
    defer { stepping = wasStepping }
    let was = turnState
    let wasAsk = lastAsk
    let fed = contextCount
    lastAsk = AskPoint(
      question: question, options: options, segments: segments,
      nextRopePosition: nextRopePosition, feeds: feeds, visualInputs: visualInputs,
      userTurnOpen: userTurnOpen, lastFedVisual: lastFedVisual)
    let start = Date()
    let input = feeds
    let piece = openUserTurn() + question + chat.turnEnd + chat.assistantPrefix
    userTurnOpen = false
    lastFedVisual = false
    let prompt = try textSegment(piece, input: input)
    do {
      // The question itself is the query now.
      try restoringTurnOnRefusal(was) { try prefill([prompt], proxy: false) }
    } catch {
      if contextCount == fed { lastAsk = wasAsk }
      throw error
    }
    feeds += 1
    let prefillSeconds = Date().timeIntervalSince(start)
    var report = try generate(options: options, onText: onText)
    // Close the assistant turn; the stop token the model produced is not in the cache yet.
    try prefill([try textSegment(chat.turnEnd, input: input)], proxy: false)
    report.prefillTokens = prompt.count
    report.prefillSeconds = prefillSeconds
    return report
  }

  /// Continues the context: each chosen token is fed back, until a stop token (the chat's end
  /// of turn, EOS) or `maxTokens`. The stop token itself is not fed (`ask` closes the turn).
  public func generate(
    options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard let model, let tokenizer, let cache = activeCache else { throw EngineError.noModel }
    try requireNothingPending()
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
      if stopIDs.contains(next) {
        stoppedOnEOS = true
        break
      }
      let segment = try tokenSegment([next], input: feeds, modality: .generated)
      var out: Matrix?
      try mapCacheError { out = try run([segment], model: model, cache: cache, logits: .last) }
      guard let out else { break }
      append(segment)
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
    try requireNothingPending()
    guard contextCount > 0 else { throw EngineError.invalid("nothing fed yet; feed text first") }
    let c = model.config
    let scratch = DenseKVCache(
      layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
    // The writer fills a temporary file and renames it into place at the end: on any error
    // (a write refused, the file size limit, Ctrl-C) it is removed and `path` is untouched.
    let writer: NPYWriter
    do {
      writer = try NPYWriter(path: path, shape: [contextCount, c.vocabularySize])
    } catch let failure as NPYWriter.Failure {
      throw EngineError.invalid(failure.description)
    }
    defer { writer.abandon() }
    do {
      var done = 0
      for block in BlockScheduler(blockSize: options.prefillChunk).blocks(segments) {
        if cancellation.isSet {
          throw EngineError.cancelled("logits stopped after \(done) positions")
        }
        guard let out = try run(block, model: model, cache: scratch, logits: .all, at: done) else {
          break
        }
        try writer.append(UnsafeBufferPointer(out.storage.buffer))
        done += out.rows
      }
      try writer.close()
    } catch let failure as NPYWriter.Failure {
      throw EngineError.invalid(failure.description)
    }
    return (contextCount, c.vocabularySize)
  }

  /// What the cache holds now: tokens and bytes.
  public var cacheSummary: (tokens: Int, capacity: Int, bytes: Int)? {
    if let budgeted { return (budgeted.count, budgeted.capacityTokens, budgeted.bytesHeld) }
    return cache.map { ($0.count, $0.capacityTokens, $0.bytesHeld) }
  }
}

// MARK: budgeted cache

/// The queries SnapKV scores a fed block with: the block's own last queries (the paper's
/// default), the chat template that precedes an answer, or a question known in advance —
/// run after the block as extra rows that attend to the cache and the block but are never
/// cached (`LlamaModel.forward(proxyRows:)`).
public enum QueryProxy: Equatable, Sendable, CustomStringConvertible {
  case block
  case template
  case question(String)

  public var description: String {
    switch self {
    case .block: return "block"
    case .template: return "template"
    case .question(let q): return "question \"\(q)\""
    }
  }
}

/// The session's cache configuration: what `budget`, `policy` and `prefill mode=` set.
public struct CacheSettings: CustomStringConvertible {
  /// nil: no budget (`budget off`), the full cache.
  public var budget: KVBudget?
  /// `budget 10%`: the budget is this share of the visual tokens fed, resolved into `budget`
  /// when they are known (`configureBudgetShare`); nil: the budget is as given.
  public var share: Double?
  /// How the budget is spread over the layers (the paper's static budget by default).
  public var schedule = BudgetSchedule.uniform
  public var policy: any EvictionPolicy
  public var mode: PrefillMode
  /// Prefill blocks while a budget is on: N tokens, or N visual units (tiles, frames) with their
  /// text (nil: `EngineOptions.prefillChunk` tokens).
  public var block: BlockSize?
  /// Whether the first `budget` tokens go in one forward (the paper's bulk first step).
  public var bulk = false
  /// What a query-aware policy (SnapKV) looks with while input is fed, before the question.
  public var proxy = QueryProxy.block
  /// Capped mode: decoded tokens evict once every N (`BudgetedCache.evictEvery`); nil: the
  /// cache's default for the budget.
  public var evictEvery: Int?
  public var retention: RetentionOptions

  public init(
    budget: KVBudget? = nil, policy: any EvictionPolicy = SnapKVPolicy(), mode: PrefillMode = .full,
    block: BlockSize? = nil, retention: RetentionOptions = RetentionOptions()
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
    "budget \(budget.map { "\($0)" } ?? "off")"
      + (share.map { " (\(Session.shareText($0)) of visual tokens)" } ?? "")
      + (schedule == .uniform ? "" : " (\(schedule))") + ", policy \(policy), mode \(mode)"
      + (block.map { ", block \($0)" } ?? "") + (bulk ? ", bulk" : "")
      + (proxy == .block ? "" : ", proxy \(proxy)")
      + (evictEvery.map { ", evict every \($0)" } ?? "")
  }
}

extension Session {
  /// The budgeted cache, for inspection (occupancy, entries, eviction log); nil without a budget.
  public var budgetedCache: BudgetedCache? { budgeted }

  /// Tokens per prefill block in `settings` (structure-aligned blocks: the text chunk).
  func tokenBlock(_ settings: CacheSettings) -> Int {
    if settings.isBudgeted, case .tokens(let b)? = settings.block { return b }
    return options.prefillChunk
  }

  /// The sequential cache's first block room: the token block, or for tile/frame blocks one
  /// token — `reserveBlock` sizes it to the first blocks laid out (while the cache is empty, so
  /// without a transient), not to the text chunk a frame block never reaches.
  func initialBlockRoom(_ settings: CacheSettings) -> Int {
    if case .units? = settings.block { return 1 }
    return tokenBlock(settings)
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

  fileprivate func makeBudgetedCache(for config: DecoderConfig) throws -> BudgetedCache? {
    try makeBudgetedCache(for: config, settings: cacheSettings)
  }

  fileprivate func makeBudgetedCache(for config: DecoderConfig, settings: CacheSettings) throws
    -> BudgetedCache?
  {
    guard settings.isBudgeted, let budget = settings.budget else { return nil }
    try checkKVFits(settings, config: config, reclaimable: 0)
    let made = try BudgetedCache(
      config: config, budget: budget, schedule: settings.schedule, mode: settings.mode,
      policy: settings.policy, options: settings.retention,
      blockSize: initialBlockRoom(settings), meter: meter)
    // The log of the last block's evictions (`cache log`): a few records per layer and head.
    made.logEvictions = true
    made.evictEvery = settings.evictEvery ?? BudgetedCache.defaultEvictEvery(budget: made.budget)
    return made
  }

  /// Refuses a budget whose K/V storage (the budget, plus the block room in `sequential` mode)
  /// is more than the memory available (plus `reclaimable`, what the storage replaces), before
  /// any of it is allocated.
  fileprivate func checkKVFits(_ settings: CacheSettings, config: DecoderConfig, reclaimable: Int)
    throws
  {
    guard settings.isBudgeted, let budget = settings.budget, let available = availableMemory()
    else { return }
    let perToken = BudgetedCache.bytesPerToken(config)
    let tokens = budget.tokens(kvBytesPerToken: perToken)
    let block = settings.mode == .sequential ? initialBlockRoom(settings) : 0
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

  /// Refuses a byte budget larger than the memory available (before a model is loaded; with a
  /// model, `checkKVFits` counts the storage exactly).
  fileprivate func checkBytesFit(_ budget: KVBudget?) throws {
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
  /// place (policy, options, budget); any other change builds the new cache and re-prefills the
  /// context into it (exact: same tokens, origins and positions), so what is held always follows
  /// the settings. With a context to re-prefill, the old cache is kept until the new one is
  /// complete: on error it is restored. With nothing fed, the old cache goes before the new one
  /// is built, so configuring never holds two caches' storage (on error an empty cache of the
  /// old settings is made again).
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
    if settings.isBudgeted {
      // The storage this budget takes replaces the current budgeted cache's.
      try checkKVFits(settings, config: c, reclaimable: budgeted?.bytesHeld ?? 0)
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
    // Rebuild: a new kind of cache (dense ↔ budgeted, or another mode / block size).
    let nothingFed = contextCount == 0 && segments.isEmpty
    // Only a cache with something in it is kept for a restore; an empty one is released now.
    let savedCaches = nothingFed ? nil : (cache, budgeted)
    let savedSettings = cacheSettings
    let savedLogits = lastLogits
    let fedCount = contextCount
    let fed = segments
    cache = nil
    budgeted = nil
    cacheSettings = settings
    do {
      if let made = try makeBudgetedCache(for: c) {
        budgeted = made
      } else {
        cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
      }
      try refill(fed)
    } catch {
      cache = nil
      budgeted = nil
      cacheSettings = savedSettings
      lastLogits = savedLogits
      if let savedCaches {
        (cache, budgeted) = savedCaches
      } else {
        // The old cache was empty: an empty one of the old settings replaces it.
        budgeted = try? makeBudgetedCache(for: c)
        if budgeted == nil {
          if cacheSettings.isBudgeted { cacheSettings.mode = .full }
          cache = DenseKVCache(
            layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
        }
      }
      contextCount = fedCount
      segments = fed
      if let e = error as? CacheError { throw EngineError.invalid(e.description) }
      throw error
    }
  }

  /// Prefills the recorded segments (same tokens, origins, positions and pixels) into the
  /// (fresh) active cache.
  private func refill(_ saved: [PromptSegment]) throws {
    contextCount = 0
    segments = []
    lastLogits = nil
    let rope = nextRopePosition
    try prefill(saved)
    nextRopePosition = rope
  }
}

// MARK: re-running under other settings (compare)

/// Where a question was asked: the context as laid out before it, and the chat's turn state.
public struct AskPoint {
  public let question: String
  public let options: GenerationOptions
  let segments: [PromptSegment]
  let nextRopePosition: Int
  let feeds: Int
  let visualInputs: Int
  let userTurnOpen: Bool
  let lastFedVisual: Bool
}

extension Session {
  /// A new session over the same model (weights shared, not copied or charged again), with
  /// its own meter and a cache made for `settings`, into which the context of `point` (or the
  /// current context) is prefilled again from its segments: images re-read and re-encoded.
  /// This session is not touched.
  func fork(settings: CacheSettings, from point: AskPoint?) throws -> Session {
    guard let model, let tokenizer else { throw EngineError.noModel }
    try requireNothingPending()
    let child = Session(options: options, cancellation: cancellation)
    child.model = model
    child.vision = vision
    child.tokenizer = tokenizer
    child.modelPath = modelPath
    child.chat = chat
    child.stopIDs = stopIDs
    child.cacheSettings = settings
    try mapCacheError { child.budgeted = try child.makeBudgetedCache(for: model.config) }
    if child.budgeted == nil {
      child.cache = DenseKVCache(
        layers: model.config.layers, kvHeads: model.config.kvHeads, headDim: model.config.headDim,
        meter: child.meter)
    }
    let fed = point?.segments ?? segments
    child.nextRopePosition = point?.nextRopePosition ?? nextRopePosition
    child.feeds = point?.feeds ?? feeds
    child.visualInputs = point?.visualInputs ?? visualInputs
    child.userTurnOpen = point?.userTurnOpen ?? userTurnOpen
    child.lastFedVisual = point?.lastFedVisual ?? lastFedVisual
    try child.refill(fed)
    return child
  }
}

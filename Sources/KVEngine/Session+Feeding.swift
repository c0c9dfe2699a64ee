import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
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
  var turnState: (userTurnOpen: Bool, lastFedVisual: Bool, nextRopePosition: Int) {
    (userTurnOpen, lastFedVisual, nextRopePosition)
  }

  /// Runs a prefill; when it fails with nothing of it prefilled or queued (a refusal: the
  /// context limit, a budget that cannot hold what must stay), the turn state goes back to
  /// `was`, so the session is as it was before the input was laid out.
  func restoringTurnOnRefusal(
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
  func openUserTurn() -> String {
    defer { userTurnOpen = true }
    if !userTurnOpen { return (contextCount == 0 ? chat.systemPrefix : "") + chat.userPrefix }
    return lastFedVisual ? chat.afterVisual : "\n"
  }

  /// `text` tokenized as the next run of the context, from input `input`.
  func textSegment(_ text: String, input: Int) throws -> PromptSegment {
    guard let tokenizer else { throw EngineError.noModel }
    return try tokenSegment(tokenizer.encode(text), input: input, modality: .text)
  }

  /// Token ids as the next run of the context (rotary positions from `nextRopePosition`, which
  /// moves past them: positions are given when input is laid out, so queued blocks agree).
  func tokenSegment(_ ids: [Int], input: Int, modality: TokenOrigin.Modality) throws
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
  func feedImage(source: () throws -> ImageSource, split: Bool?) throws -> FeedReport {
    if let split {
      guard let vision, let saved = vision.splitting else {
        let tiling = ModelRegistry.families.filter { $0.feedOptions.contains("split") }
        throw EngineError.invalid(
          "split= applies to models that tile images (\(tiling.flatMap(\.modelTypes).joined(separator: ", ")))"
        )
      }
      vision.splitting = split
      defer { vision.splitting = saved }
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
    return try feedFrames(FolderNames(paths) ?? FolderNames(prefix: "", names: paths))
  }

  /// Feeds the image files `files` names, in order, laid out a frame at a time as the prefill
  /// reaches each (a first pass decodes every frame for its size, so that a file that fails
  /// leaves the session as it was). The clip is recorded as its names, not per frame.
  @discardableResult
  public func feedFrames(_ files: FolderNames) throws -> FeedReport {
    guard !files.names.isEmpty else { throw EngineError.invalid("no frames to feed") }
    return try feedVisualParts { vlm, index, start in
      try vlm.streamedLayout(
        frames: files.names.count, source: { try ImageSource(path: files.path($0)) }, times: nil,
        at: index, start: start)
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
    let clipTimes = ClipTimes(seconds: clip.plan.promptTimes, duration: clip.plan.duration)
    return try feedVisualParts { vlm, index, start in
      try vlm.streamedLayout(
        frames: clip.plan.frameCount, source: { clip.source($0) }, times: times ? clipTimes : nil,
        at: index, start: start)
    }
  }

  /// Feeds the frames of a clip already in memory. They are written once to a temporary
  /// folder and decoded again from there when needed (`FrameSpool`), so a clip fed this way
  /// costs disk, not memory, for the session's life, as a folder of frames does.
  @discardableResult
  public func feedFrames(_ frames: [RGBImage]) throws -> FeedReport {
    guard !frames.isEmpty else { throw EngineError.invalid("no frames to feed") }
    let spool = try FrameSpool(frames)
    return try feedVisualParts { vlm, index, start in
      try vlm.streamedLayout(
        frames: frames.count, source: spool.source, times: nil, at: index, start: start)
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
    let split: Bool? = sample.task.isSingleTile && vision?.splitting != nil ? false : nil
    return try feedImage(sample.images[0], split: split)
  }

  func feedVisual(
    _ layout: (any VisionLanguageModel, VisualInputIndex, Int) throws -> PromptLayout
  ) throws -> FeedReport {
    try feedVisualParts { StreamedLayout(whole: try layout($0, $1, $2)) }
  }

  /// Lays out and prefills an image or clip; a clip laid out part by part is fed as its parts
  /// are made (`PromptParts`), never held whole.
  func feedVisualParts(
    _ layout: (any VisionLanguageModel, VisualInputIndex, Int) throws -> StreamedLayout
  ) throws -> FeedReport {
    guard model != nil else { throw EngineError.noModel }
    guard let vision else {
      throw EngineError.invalid(
        "the loaded model has no vision tower (load a vision-language model folder: \(ModelRegistry.visionFamilies.joined(separator: ", ")))"
      )
    }
    let start = Date()
    let timing = visualTiming
    let input = feeds
    let was = (userTurnOpen, lastFedVisual, nextRopePosition)
    let parts: PromptParts
    let counts: PromptParts.Counts
    do {
      let opening = try textSegment(openUserTurn(), input: input)
      let laid = try layout(
        vision, VisualInputIndex(input: input, image: visualInputs), nextRopePosition)
      parts = PromptParts(
        opening: opening.count > 0 ? [opening] : [], layout: laid, start: nextRopePosition)
      counts = try parts.count(scheduler)
    } catch {
      (userTurnOpen, lastFedVisual, nextRopePosition) = was
      throw error
    }
    nextRopePosition = counts.nextPosition ?? nextRopePosition
    try restoringTurnOnRefusal(was) {
      try withBudgetShare(adding: counts.visualTokens) { try prefill(parts, counts: counts) }
    }
    feeds += 1
    visualInputs += 1
    lastFedVisual = true
    return FeedReport(
      tokens: counts.tokens, contextTokens: contextCount,
      seconds: Date().timeIntervalSince(start), visualUnits: counts.visualUnits,
      visualTokens: counts.visualTokens, waitingBlocks: pendingBlocks.count,
      pixelSeconds: visualTiming.pixels - timing.pixels,
      visionSeconds: visualTiming.vision - timing.vision)
  }
}

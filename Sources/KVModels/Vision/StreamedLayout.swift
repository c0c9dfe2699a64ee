/// A clip's layout made a part at a time (its opening text, each frame with its markers, its
/// closing text), so that a long clip is laid out as the prefill reaches each frame and no
/// part of the layout is held for frames not yet reached or already fed. Parts are asked for
/// in order, each at the position the one before it ended at; a pass may be made again (a
/// first pass counts the tokens, the second feeds them).
public struct StreamedLayout: Sendable {
  /// How many parts a pass gives.
  public let parts: Int
  /// Part `index` laid out at rotary position `start`: its segments and the position after.
  public let part: @Sendable (_ index: Int, _ start: Int) throws -> PromptLayout

  public init(
    parts: Int, part: @escaping @Sendable (_ index: Int, _ start: Int) throws -> PromptLayout
  ) {
    self.parts = parts
    self.part = part
  }

  /// A layout made whole (an image, a family that lays a clip out at once): one part.
  public init(whole: PromptLayout) {
    self.init(parts: 1) { _, _ in whole }
  }

  /// Every part, laid out from `start`, as one layout.
  public func collect(start: Int) throws -> PromptLayout {
    var segments: [PromptSegment] = []
    var position = start
    for i in 0..<parts {
      let l = try part(i, position)
      segments += l.segments
      position = l.nextPosition
    }
    return PromptLayout(segments: segments, nextPosition: position)
  }
}

extension VisionLanguageModel {
  /// A family that lays a clip out at once: one part, the whole clip.
  public func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource, times: ClipTimes?,
    at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout {
    let frames = try (0..<count).map(source)
    return StreamedLayout(
      whole: try times.map { try layout(frames: frames, times: $0, at: index, start: start) }
        ?? layout(frames: frames, at: index, start: start))
  }
}

/// A family that lays a clip out part by part (Idefics3, LLaVA, Qwen2-VL): it writes
/// `streamedLayout` itself, and a whole clip, timed or not, is its parts collected.
public protocol StreamedClipFamily: VisionLanguageModel {}

extension StreamedClipFamily {
  public func layout(frames: [ImageSource], at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    try streamedLayout(
      frames: frames.count, source: { frames[$0] }, times: nil, at: index, start: start
    ).collect(start: start)
  }

  public func layout(
    frames: [ImageSource], times: ClipTimes, at index: VisualInputIndex, start: Int
  ) throws -> PromptLayout {
    try streamedLayout(
      frames: frames.count, source: { frames[$0] }, times: times, at: index, start: start
    ).collect(start: start)
  }
}

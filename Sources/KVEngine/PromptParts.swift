import KVCache
import KVModels
import KVTensor

/// Input to a prefill, made a segment at a time when a pass reaches it: a clip laid out frame
/// by frame (`StreamedLayout`) after the turn's opening text, a session's records of what it
/// was fed (`SegmentLog`, its clips laid out again), or segments already made. A first pass
/// counts it (the context limit, the budget share and the largest block are checked before
/// anything runs); the second cuts it into blocks as it goes, so that what is held is the part
/// and the block being fed, whatever the clip's length.
final class PromptParts {
  /// Whether the input is made as a pass goes (a clip, a log): the heap's free pages go back
  /// to the system between its blocks.
  let streamed: Bool
  /// Whether it is an image or clip (recorded as one record by the session).
  let visual: Bool
  /// Gives every segment, in order, to its argument.
  private let produce: (_ body: (PromptSegment) throws -> Void) throws -> Void
  /// For a laid-out clip: the rotary position after its last part (set by a whole pass).
  private let end: Position
  private final class Position { var value: Int? }

  init(_ segments: [PromptSegment]) {
    streamed = false
    visual = false
    end = Position()
    produce = { body in for segment in segments { try body(segment) } }
  }

  /// `start`: the rotary position of the clip's first part (after the opening's text).
  init(opening: [PromptSegment], layout: StreamedLayout, start: Int) {
    streamed = true
    visual = true
    let end = Position()
    self.end = end
    produce = { body in
      for segment in opening { try body(segment) }
      var position = start
      for i in 0..<layout.parts {
        let l = try layout.part(i, position)
        for segment in l.segments { try body(segment) }
        position = l.nextPosition
      }
      end.value = position
    }
  }

  /// A session's records, clips laid out again part by part.
  init(_ log: SegmentLog) {
    streamed = true
    visual = false
    end = Position()
    produce = { body in try log.forEach(body) }
  }

  private struct Stop: Error {}

  /// Every segment of a pass, in order, up to `limit` tokens: a text segment the limit falls
  /// inside is cut there (a feed stops between blocks, and blocks never cut a visual unit).
  func forEach(upTo limit: Int = .max, _ body: (PromptSegment) throws -> Void) throws {
    guard limit > 0 else { return }
    var left = limit
    do {
      try produce { segment in
        let kept = segment.count <= left ? segment : segment.slice(0..<left)
        left -= kept.count
        try body(kept)
        // Nothing past the limit is laid out (its frames may be gone).
        if left == 0 { throw Stop() }
      }
    } catch is Stop {}
  }

  /// What a first pass finds.
  struct Counts {
    var tokens = 0
    var visualTokens = 0
    var visualUnits = 0
    var blocks = 0
    var largestBlock = 0
    /// The last segment (what the proxy rows follow), as a list of none or one.
    var last: [PromptSegment] = []
    /// For a laid-out clip, the rotary position after it.
    var nextPosition: Int?
  }

  /// Counts a pass, cutting it as `scheduler` would.
  func count(_ scheduler: BlockScheduler) throws -> Counts {
    var c = Counts()
    try pass(scheduler, releasingFreePages: false) { block in
      c.blocks += 1
      c.largestBlock = max(c.largestBlock, block.reduce(0) { $0 + $1.count })
    } each: { segment in
      c.tokens += segment.count
      if segment.visual != nil {
        c.visualTokens += segment.count
        c.visualUnits += 1
      }
      c.last = [segment]
    }
    c.nextPosition = end.value
    return c
  }

  /// A pass, giving `body` each block as soon as its last segment is made.
  func blocks(_ scheduler: BlockScheduler, _ body: ([PromptSegment]) throws -> Void) throws {
    try pass(scheduler, releasingFreePages: streamed, body)
  }

  private func pass(
    _ scheduler: BlockScheduler, releasingFreePages: Bool,
    _ body: ([PromptSegment]) throws -> Void, each: (PromptSegment) -> Void = { _ in }
  ) throws {
    var cutter = BlockCutter(scheduler)
    try forEach { segment in
      each(segment)
      for block in cutter.push(segment) {
        try body(block)
        // A clip fed part by part can be an hour long: the pages its blocks freed go back
        // to the system as it goes, not only those at the heap's top.
        if releasingFreePages { ProcessMemory.releaseFreeHeapPages() }
      }
    }
    for block in cutter.finish() { try body(block) }
  }
}

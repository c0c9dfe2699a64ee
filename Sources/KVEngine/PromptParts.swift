import KVCache
import KVModels
import KVTensor

/// Input to a prefill, made a part at a time when a pass reaches it: a clip laid out frame by
/// frame (`StreamedLayout`) after the turn's opening text, or segments already made. A first
/// pass counts it (the context limit, the budget share and the largest block are checked
/// before anything runs); the second cuts it into blocks as it goes, so that what is held is
/// the part and the block being fed, whatever the clip's length.
final class PromptParts {
  let count: Int
  /// Part i; parts are asked for in order from 0 on each pass.
  private let part: (Int) throws -> [PromptSegment]
  /// For a laid-out clip: the rotary position after the last part made.
  private let end : Position
  private final class Position { var value: Int? }

  init(_ segments: [PromptSegment]) {
    count = 1
    part = { _ in segments }
    end = Position()
  }

  init(opening: [PromptSegment], layout: StreamedLayout, start: Int) {
    count = layout.parts + 1
    // The clip's first part starts after the opening's text.
    let first = start + opening.reduce(0) { $0 + $1.count }
    let end = Position()
    self.end = end
    part = { i in
      if i == 0 {
        end.value = first
        return opening
      }
      let l = try layout.part(i - 1, end.value!)
      end.value = l.nextPosition
      return l.segments
    }
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
    try pass(scheduler, releasingFreePages: count > 1, body)
  }

  private func pass(
    _ scheduler: BlockScheduler, releasingFreePages: Bool,
    _ body: ([PromptSegment]) throws -> Void, each: (PromptSegment) -> Void = { _ in }
  ) throws {
    var cutter = BlockCutter(scheduler)
    for i in 0..<count {
      for segment in try part(i) {
        each(segment)
        for block in cutter.push(segment) {
          try body(block)
          // A clip fed part by part can be an hour long: the pages its blocks freed go back
          // to the system as it goes, not only those at the heap's top.
          if releasingFreePages { ProcessMemory.releaseFreeHeapPages() }
        }
      }
    }
    for block in cutter.finish() { try body(block) }
  }
}

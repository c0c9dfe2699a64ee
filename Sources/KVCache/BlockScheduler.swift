import KVModels

/// How long a prefill block is: a fixed number of tokens, or a number of visual units (tiles,
/// images, frame pairs) with the text around them — `block=256`, `block=tile`, `block=4frames`.
public enum BlockSize: Hashable, Sendable, CustomStringConvertible {
  case tokens(Int)
  /// N visual units. `word` is how they were written (tile, frame, unit): what a unit is comes
  /// from the model's layout, so the word only serves to echo the setting as typed, and blocks
  /// of the same count are equal whatever their word.
  case units(Int, word: String = "tile")

  /// "256", "tile", "frame", "4frames", "4tiles".
  public init?(_ text: String) {
    let t = text.lowercased()
    if let n = Int(t), n > 0 {
      self = .tokens(n)
      return
    }
    for word in ["tiles", "frames", "units", "tile", "frame", "unit"] where t.hasSuffix(word) {
      let count = t.dropLast(word.count)
      let singular = word.hasSuffix("s") ? String(word.dropLast()) : word
      if count.isEmpty, !word.hasSuffix("s") {
        self = .units(1, word: singular)
        return
      }
      if let n = Int(count), n > 0, word.hasSuffix("s") || n == 1 {
        self = .units(n, word: singular)
        return
      }
    }
    return nil
  }

  public static func == (a: BlockSize, b: BlockSize) -> Bool {
    switch (a, b) {
    case (.tokens(let x), .tokens(let y)): return x == y
    case (.units(let x, _), .units(let y, _)): return x == y
    default: return false
    }
  }

  public func hash(into hasher: inout Hasher) {
    switch self {
    case .tokens(let n):
      hasher.combine(0)
      hasher.combine(n)
    case .units(let n, _):
      hasher.combine(1)
      hasher.combine(n)
    }
  }

  public var description: String {
    switch self {
    case .tokens(let n): return String(n)
    case .units(1, let word): return word
    case .units(let n, let word): return "\(n)\(word)s"
    }
  }
}

/// Cuts a laid-out input into prefill blocks that follow its structure. A visual unit (tile,
/// image, frame pair) is never split — it is encoded whole. With `.tokens(b)`, blocks hold about
/// b tokens: a unit that would not fit starts a new block, text fills blocks and is split where
/// needed. With `.units(n)`, a block closes after its n-th unit (text before a unit rides with
/// it; long text without units is cut every `textChunk` tokens). `bulk` puts the first `bulk`
/// tokens in one forward (the paper's first step), rounded up to the end of a unit.
public struct BlockScheduler: Sendable {
  public var size: BlockSize
  public var textChunk: Int
  public var bulk: Int?

  public init(size: BlockSize, textChunk: Int, bulk: Int? = nil) {
    if case .tokens(let b) = size { precondition(b > 0, "block size must be positive") }
    precondition(textChunk > 0, "text chunk must be positive")
    self.size = size
    self.textChunk = textChunk
    self.bulk = bulk
  }

  public init(blockSize: Int) { self.init(size: .tokens(blockSize), textChunk: blockSize) }

  public func blocks(_ segments: [PromptSegment]) -> [[PromptSegment]] {
    var cutter = BlockCutter(self)
    var blocks: [[PromptSegment]] = []
    for segment in segments { blocks += cutter.push(segment) }
    return blocks + cutter.finish()
  }
}

/// `BlockScheduler`'s cutting done as the segments arrive: `push` gives the blocks a segment
/// closes, `finish` the last one. A long input laid out part by part (a clip's frames) is cut
/// into the same blocks as when laid out whole, without being held whole.
public struct BlockCutter: Sendable {
  public let scheduler: BlockScheduler
  private var current: [PromptSegment] = []
  private var filled = 0
  private var units = 0
  private var inBulk: Bool

  public init(_ scheduler: BlockScheduler) {
    self.scheduler = scheduler
    inBulk = (scheduler.bulk ?? 0) > 0
  }

  private mutating func close(into blocks: inout [[PromptSegment]]) {
    if !current.isEmpty { blocks.append(current) }
    current = []
    filled = 0
    units = 0
  }

  /// The most text tokens the current block takes now.
  private func room() -> Int {
    if inBulk { return scheduler.bulk! - filled }
    switch scheduler.size {
    case .tokens(let b): return b - filled
    case .units: return scheduler.textChunk - filled
    }
  }

  /// Adds `segment`; returns the blocks it closed, in order.
  public mutating func push(_ segment: PromptSegment) -> [[PromptSegment]] {
    var blocks: [[PromptSegment]] = []
    guard segment.count > 0 else { return blocks }
    if segment.visual != nil {
      if !inBulk, case .tokens(let b) = scheduler.size, filled + segment.count > b {
        close(into: &blocks)
      }
      current.append(segment)
      filled += segment.count
      units += 1
      if inBulk {
        if filled >= scheduler.bulk! {
          inBulk = false
          close(into: &blocks)
        }
      } else {
        switch scheduler.size {
        case .tokens(let b): if filled >= b { close(into: &blocks) }
        case .units(let n, _): if units >= n { close(into: &blocks) }
        }
      }
      return blocks
    }
    var offset = 0
    while offset < segment.count {
      if room() <= 0 {
        inBulk = false
        close(into: &blocks)
      }
      let take = min(segment.count - offset, room())
      current.append(take == segment.count ? segment : segment.slice(offset..<(offset + take)))
      filled += take
      offset += take
    }
    return blocks
  }

  /// The block still open, if any.
  public mutating func finish() -> [[PromptSegment]] {
    var blocks: [[PromptSegment]] = []
    close(into: &blocks)
    return blocks
  }
}

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
    var blocks: [[PromptSegment]] = []
    var current: [PromptSegment] = []
    var filled = 0
    var units = 0
    var inBulk = (bulk ?? 0) > 0
    func close() {
      if !current.isEmpty { blocks.append(current) }
      current = []
      filled = 0
      units = 0
    }
    /// The most text tokens the current block takes now.
    func room() -> Int {
      if inBulk { return bulk! - filled }
      switch size {
      case .tokens(let b): return b - filled
      case .units: return textChunk - filled
      }
    }
    for segment in segments where segment.count > 0 {
      if segment.visual != nil {
        if !inBulk, case .tokens(let b) = size, filled + segment.count > b { close() }
        current.append(segment)
        filled += segment.count
        units += 1
        if inBulk {
          if filled >= bulk! {
            inBulk = false
            close()
          }
        } else {
          switch size {
          case .tokens(let b): if filled >= b { close() }
          case .units(let n, _): if units >= n { close() }
          }
        }
        continue
      }
      var offset = 0
      while offset < segment.count {
        if room() <= 0 {
          inBulk = false
          close()
        }
        let take = min(segment.count - offset, room())
        current.append(take == segment.count ? segment : segment.slice(offset..<(offset + take)))
        filled += take
        offset += take
      }
    }
    close()
    return blocks
  }
}

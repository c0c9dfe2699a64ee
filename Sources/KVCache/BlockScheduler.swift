import KVModels

/// Cuts a laid-out input into prefill blocks of about `blockSize` tokens that follow its
/// structure: a visual unit (tile, image, frame pair) is never split — it is encoded whole —
/// and starts a new block when it would not fit in the current one; text fills blocks up to
/// the size and is split where needed.
public struct BlockScheduler: Sendable {
  public var blockSize: Int

  public init(blockSize: Int) {
    precondition(blockSize > 0, "block size must be positive")
    self.blockSize = blockSize
  }

  public func blocks(_ segments: [PromptSegment]) -> [[PromptSegment]] {
    var blocks: [[PromptSegment]] = []
    var current: [PromptSegment] = []
    var filled = 0
    func close() {
      if !current.isEmpty { blocks.append(current) }
      current = []
      filled = 0
    }
    for segment in segments where segment.count > 0 {
      if segment.visual != nil {
        if filled + segment.count > blockSize { close() }
        current.append(segment)
        filled += segment.count
        if filled >= blockSize { close() }
        continue
      }
      var offset = 0
      while offset < segment.count {
        let take = min(segment.count - offset, blockSize - filled)
        current.append(
          take == segment.count ? segment : segment.slice(offset..<(offset + take)))
        filled += take
        offset += take
        if filled >= blockSize { close() }
      }
    }
    close()
    return blocks
  }
}

/// A session's memory trace (`mem plot`) is one sample per prefill block, and a feed of hours
/// of frames runs a block per frame: the trace keeps at most `MemorySample.traceLimit`
/// samples, so that it does not grow with the frames fed. When it is full, neighbouring
/// samples merge in pairs (the later one's context and K/V, the larger of their peaks): the
/// plot keeps its envelope at a coarser step along the context.
extension MemorySample {
  public static let traceLimit = 4096

  /// This sample and the one after it, as one: where the later ended, the peaks of both.
  func merged(with later: MemorySample) -> MemorySample {
    MemorySample(
      contextTokens: later.contextTokens, kv: later.kv, kvPeak: Swift.max(kvPeak, later.kvPeak),
      activationsPeak: Swift.max(activationsPeak, later.activationsPeak),
      visionPeak: Swift.max(visionPeak, later.visionPeak),
      rss: later.rss.map { Swift.max($0, rss ?? $0) } ?? rss, blocks: blocks + later.blocks)
  }
}

extension Array where Element == MemorySample {
  /// Appends a block's sample, first merging the trace's samples in pairs when it holds
  /// `MemorySample.traceLimit` (its storage, reserved once, never grows past that).
  mutating func appendBounded(_ sample: MemorySample) {
    if isEmpty { reserveCapacity(MemorySample.traceLimit) }
    if count >= MemorySample.traceLimit {
      let pairs = count / 2
      for i in 0..<pairs { self[i] = self[2 * i].merged(with: self[2 * i + 1]) }
      let odd = count % 2 == 1 ? self[count - 1] : nil
      removeLast(count - pairs)
      if let odd { append(odd) }
    }
    append(sample)
  }
}

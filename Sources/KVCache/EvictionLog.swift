// What the cache's evictions record: the last event and the per-head eviction log.

/// Where the last evictions happened: a block going through the layers (its index, counting
/// from 1, and its positions), or a compression of the whole cache to a budget (`post` mode
/// after an input, `compress`, a smaller budget).
public enum EvictionEvent: Equatable, Sendable {
  case block(index: Int, positions: ClosedRange<Int>)
  case compression(budget: Int)
}

/// What one eviction decision removed, for the eviction log.
public struct EvictionRecord: Sendable {
  public var layer: Int
  public var kvHead: Int
  public var evicted: [(position: Int, score: Float)]
  /// The lowest score among the survivors that were not mandatory (nil: none).
  public var lowestKept: Float?
}

// BudgetedCache's read-only views: counts, entries, rows, scores and mandatory entries.
import KVModels

extension BudgetedCache {
  /// The most entries any layer holds per KV head (every head of a layer holds the same number;
  /// with the uniform schedule, between blocks, every layer does too).
  public var count: Int { stores.map(\.count).max()! }
  /// The most rows any layer has room for per KV head.
  public var capacityTokens: Int { stores.map(\.capacity).max()! }
  public func capacity(layer: Int) -> Int { stores[layer].capacity }
  /// Bytes of K/V storage allocated (what the meter charges as `.kv`).
  public var bytesHeld: Int { 2 * kvHeads * headDim * 4 * stores.reduce(0) { $0 + $1.capacity } }
  /// Bytes of the budget: `budget` tokens of K and V for every layer and KV head (the layer
  /// budgets of any schedule sum to the same).
  public var budgetBytes: Int { budget * bytesPerToken }
  public var evictedBytes: Int { evictedEntries * 2 * headDim * 4 }

  public func count(layer: Int) -> Int { stores[layer].count }
  public func entries(layer: Int, head: Int) -> [EntryMeta] { stores[layer].meta[head] }
  public func positions(layer: Int, head: Int) -> [Int] {
    stores[layer].meta[head].map { Int($0.position) }
  }
  /// Held entries by modality for one layer and KV head.
  public func countsByModality(layer: Int, head: Int) -> [TokenOrigin.Modality: Int] {
    var c: [TokenOrigin.Modality: Int] = [:]
    for m in stores[layer].meta[head] { c[m.originModality, default: 0] += 1 }
    return c
  }
  /// Row `row` of KV head `head`'s keys / values at `layer`.
  public func key(layer: Int, head: Int, row: Int) -> UnsafePointer<Float> {
    UnsafePointer(stores[layer].keys.pointer + (head * stores[layer].capacity + row) * headDim)
  }
  public func value(layer: Int, head: Int, row: Int) -> UnsafePointer<Float> {
    UnsafePointer(stores[layer].values.pointer + (head * stores[layer].capacity + row) * headDim)
  }

  /// The active policy's scores of the entries held for one layer and KV head, as a compression
  /// to `budget` (default: the layer's) would compute them now: no new block; the observation
  /// window is the last queries seen; carried scores as stored.
  public func currentScores(layer: Int, head: Int, budget: Int? = nil) -> [Float] {
    let store = stores[layer]
    let window = windows.isEmpty ? nil : windows[layer].queryRows
    let list = entries(
      layer, head, blockMeta: [], window: window?.positions ?? [],
      budget: budget ?? layerBudgets[layer])
    return policy.score(
      view(list, store: store, head: head, block: nil, window: window, blockQueries: nil))
  }

  /// Which held entries of one layer and KV head the policy and options make mandatory now.
  public func mandatory(layer: Int, head: Int, budget: Int? = nil) -> [Bool] {
    let window = windows.isEmpty ? [] : windows[layer].positions
    return Selection.mandatory(
      policy,
      entries(layer, head, blockMeta: [], window: window, budget: budget ?? layerBudgets[layer]),
      options)
  }

  /// How many (layer, KV head) pairs hold each position `0..<positions`, out of
  /// `layers · kvHeads`: the retention of every token fed, summed over the cache's slots. Views
  /// aggregate it by origin (per image tile and patch, per frame, over text). Positions at or
  /// past `positions` are not counted.
  public func holders(positions: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: max(0, positions))
    for l in 0..<layers {
      for h in 0..<kvHeads {
        for m in entries(layer: l, head: h) {
          let p = Int(m.position)
          if p >= 0, p < counts.count { counts[p] += 1 }
        }
      }
    }
    return counts
  }

  /// The fewest and most entries any layer holds now (every KV head of a layer holds the same
  /// number; between blocks every layer does too).
  public var countRange: ClosedRange<Int> {
    let counts = (0..<layers).map { count(layer: $0) }
    return counts.min()!...counts.max()!
  }
}

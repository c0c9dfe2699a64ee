import KVModels

extension BudgetedCache {
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

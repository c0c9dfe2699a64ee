import Foundation
import KVModels
import KVTensor

/// Random: each (layer, KV head, position) draws a fixed uniform score from the seed, so the
/// outcome depends on the seed and the budget only, not on block boundaries.
public struct RandomPolicy: CatalogPolicy {
  public var seed: UInt64 = 0
  public init() {}
  public init(seed: UInt64) { self.seed = seed }
  public static let about = PolicyAbout(
    "random", summary: "a seeded random choice (a baseline)",
    help: """
      Random: each (layer, KV head, position) draws a fixed score from SEED, so what is kept \
      depends on the seed and the budget, not on the block boundaries.
      """)
  public static var fields: [PolicyField<Self>] {
    [.integer("seed", \.seed, 0...4_294_967_295, help: "random seed")]
  }
  public func score(_ view: CandidateView) -> [Float] {
    view.entries.meta.map { m in
      var x = seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(truncatingIfNeeded: Int64(m.position) + 1)
      x ^= UInt64(truncatingIfNeeded: view.layer) &* 0xBF58_476D_1CE4_E5B9
      x ^= UInt64(truncatingIfNeeded: view.kvHead) &* 0x94D0_49BB_1331_11EB
      // splitmix64 finaliser
      x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
      x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
      x ^= x >> 31
      return Float(x >> 40) / Float(1 << 24)
    }
  }
}

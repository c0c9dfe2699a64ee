import Foundation
import KVModels
import KVTensor

/// K-norm: `s_i = −‖k_i‖` (kvpress's `KnormPress`): low-norm keys draw attention, keep them.
public struct KNormPolicy: CatalogPolicy {
  public init() {}
  public static let about = PolicyAbout(
    "knorm", summary: "keep the keys of smallest norm (query-agnostic)",
    help: "K-norm: score = -||k||; low-norm keys tend to draw attention, so they are kept.")
  public static var fields: [PolicyField<Self>] { [] }
  public func score(_ view: CandidateView) -> [Float] {
    (0..<view.count).map { -Vector.norm(view.key($0), view.headDim) }
  }
}

import Foundation
import KVModels
import KVTensor

/// Value norm (VaN, from InfiniPot-V): `s_i = ‖v_i‖`.
public struct ValueNormPolicy: CatalogPolicy {
  public init() {}
  public static let about = PolicyAbout(
    "vnorm", aliases: ["van", "valuenorm"],
    summary: "keep the values of largest norm (InfiniPot-V's VaN)",
    help: "Value norm (VaN, from InfiniPot-V): score = ||v||; the largest values are kept.")
  public static var fields: [PolicyField<Self>] { [] }
  public func score(_ view: CandidateView) -> [Float] {
    (0..<view.count).map { Vector.norm(view.value($0), view.headDim) }
  }
}

import Foundation
import KVModels
import KVTensor

/// KeyDiff: `s_i = −cos(k_i, mean_j k_j/‖k_j‖)` over the candidates: keeps the most distinctive
/// keys. Same as kvpress's `KeyDiffPress.score` (normalise with eps 1e-12, cosine with eps 1e-8).
public struct KeyDiffPolicy: CatalogPolicy {
  public init() {}
  public static let about = PolicyAbout(
    "keydiff", summary: "keep the most distinctive keys (query-agnostic)",
    help: """
      KeyDiff: score = -cos(k, mean of the normalised keys) over cache and block; the keys \
      least like the average are kept. Needs no queries.
      """)
  public static var fields: [PolicyField<Self>] { [] }

  public func score(_ view: CandidateView) -> [Float] {
    let n = view.count
    let d = view.headDim
    guard n > 0 else { return [] }
    var anchor = [Float](repeating: 0, count: d)
    var norms = [Float](repeating: 0, count: n)
    for i in 0..<n {
      let k = view.key(i)
      let norm = Vector.norm(k, d)
      norms[i] = norm
      let inv = 1 / max(norm, 1e-12)
      for c in 0..<d { anchor[c] += k[c] * inv }
    }
    for c in 0..<d { anchor[c] /= Float(n) }
    let anchorNorm = anchor.withUnsafeBufferPointer { Vector.norm($0.baseAddress!, d) }
    return anchor.withUnsafeBufferPointer { a in
      (0..<n).map { i in
        let dot = Vector.dot(view.key(i), a.baseAddress!, d)
        return -dot / (max(norms[i], 1e-8) * max(anchorNorm, 1e-8))
      }
    }
  }
}

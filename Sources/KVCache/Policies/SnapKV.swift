import Foundation
import KVModels
import KVTensor

/// SnapKV: an observation window of the last `window` queries; the score of a candidate is its
/// attention from the window, `mean_{i∈W} softmax(q_i Kᵀ/√d)_j`, average-pooled over the
/// candidate sequence with a 1-D kernel, then averaged over the query heads of the GQA group;
/// the window's own tokens are always kept.
///
/// As kvpress 0.5.4's `SnapKVPress.score`: the softmax runs over all candidates (window
/// included, causal), then the window's columns are dropped; pooling is `avg_pool1d(kernel,
/// padding=kernel/2, stride 1)` over the remaining candidates in cache order, with zero padding
/// counted in the average (so the first and last kernel/2 scores are damped); the per-head
/// window mean is pooled first, then averaged over the group. Differences: kvpress pads the
/// window's scores with `max(all scores of the layer) + 1` (one max over every head); here each
/// head's window gets its own head's max + 1 — the window is mandatory either way, so selections
/// are the same. In block-wise prefill the window is the last `window` queries the layer has seen
/// (the block's last w, continued from the previous blocks when a block is shorter), not a proxy.
public struct SnapKVPolicy: CatalogPolicy {
  public enum Pooling: String, Sendable, CaseIterable { case average = "avg", max }
  public var window = 32
  public var kernel = 5
  public var pooling = Pooling.average
  public init() {}
  public init(window: Int, kernel: Int? = nil, pooling: Pooling? = nil) {
    self.window = window
    if let kernel { self.kernel = kernel }
    if let pooling { self.pooling = pooling }
  }
  public static let about = PolicyAbout(
    "snapkv", summary: "attention from an observation window of recent queries",
    help: """
      SnapKV: each entry scores the attention the last WINDOW queries pay it (softmax over \
      cache and block, causal), averaged over the window, pooled over neighbouring entries \
      with an average kernel of KERNEL, and averaged over the query heads of a KV head; the \
      window's own tokens are always kept. In block-wise prefill the window is the last \
      queries the layer has seen.
      """)
  public static var fields: [PolicyField<Self>] {
    [
      .integer("window", \.window, 1...65536, help: "recent queries that score (always kept)"),
      .integer("kernel", \.kernel, 1...255, odd: true, help: "width of the pooling over neighbours (odd)"),
      .choice("pooling", \.pooling, help: "how neighbours pool: average (kvpress, the paper) or max"),
    ]
  }
  public var queryWindow: Int { window }
  public var minimumBudget: Int { window }

  public func mustKeep(_ entries: EntryList) -> [Bool] {
    let window = entries.windowPositions
    // A window of a few dozen positions is searched faster than hashed, and most candidates
    // come before all of it.
    if window.count <= 64 {
      let first = window.min() ?? Int.max
      return entries.meta.map {
        let p = Int($0.position)
        return p >= first && window.contains(p)
      }
    }
    let w = Set(window)
    return entries.meta.map { w.contains(Int($0.position)) }
  }

  public func score(_ view: CandidateView) -> [Float] {
    let n = view.count
    let inWindow = mustKeep(view.entries)
    let others = (0..<n).filter { !inWindow[$0] }
    var out = [Float](repeating: 0, count: n)
    guard let q = view.window, q.count > 0, !others.isEmpty else { return out }
    let mass = AttentionMass.perHead(view, queries: q)
    let rows = Float(q.count)
    let pad = kernel / 2
    let m = others.count
    var pooledSum = [Float](repeating: 0, count: m)
    var mean = [Float](repeating: 0, count: m)
    pooledSum.withUnsafeMutableBufferPointer { pooledSum in
      mean.withUnsafeMutableBufferPointer { mean in
        for h in 0..<mass.count {
          mass[h].withUnsafeBufferPointer { mass in
            for (u, i) in others.enumerated() { mean[u] = mass[i] / rows }
          }
          for t in 0..<m {
            let lo = max(0, t - pad), hi = min(m - 1, t - pad + kernel - 1)
            switch pooling {
            case .average:
              // avg_pool1d with zero padding, as kvpress: the sum over the kernel / its width.
              var s: Float = 0
              for u in lo...hi { s += mean[u] }
              pooledSum[t] += s / Float(kernel)
            case .max:
              var s = -Float.infinity
              for u in lo...hi { s = Swift.max(s, mean[u]) }
              pooledSum[t] += s
            }
          }
        }
      }
    }
    var top = -Float.infinity
    for (t, i) in others.enumerated() {
      out[i] = pooledSum[t] / Float(mass.count)
      top = max(top, out[i])
    }
    for i in 0..<n where inWindow[i] { out[i] = top + 1 }
    return out
  }
}

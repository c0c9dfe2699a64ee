import Foundation
import KVModels
import KVTensor

// The eviction policies. Scores are per candidate of one layer and KV head; the cache keeps
// the mandatory ones, then the rest in order of preference (by default: score, descending).

/// KeyDiff: `s_i = −cos(k_i, mean_j k_j/‖k_j‖)` over the candidates: keeps the most distinctive
/// keys. Same as kvpress's `KeyDiffPress.score` (normalise with eps 1e-12, cosine with eps 1e-8).
public struct KeyDiffPolicy: EvictionPolicy {
  public init() {}
  public var name: String { "keydiff" }

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

/// K-norm: `s_i = −‖k_i‖` (kvpress's `KnormPress`): low-norm keys draw attention, keep them.
public struct KNormPolicy: EvictionPolicy {
  public init() {}
  public var name: String { "knorm" }
  public func score(_ view: CandidateView) -> [Float] {
    (0..<view.count).map { -Vector.norm(view.key($0), view.headDim) }
  }
}

/// Value norm (VaN, from InfiniPot-V): `s_i = ‖v_i‖`.
public struct ValueNormPolicy: EvictionPolicy {
  public init() {}
  public var name: String { "vnorm" }
  public func score(_ view: CandidateView) -> [Float] {
    (0..<view.count).map { Vector.norm(view.value($0), view.headDim) }
  }
}

/// Random: each (layer, KV head, position) draws a fixed uniform score from the seed, so the
/// outcome depends on the seed and the budget only, not on block boundaries.
public struct RandomPolicy: EvictionPolicy {
  public var seed: UInt64
  public init(seed: UInt64 = 0) { self.seed = seed }
  public var name: String { "random" }
  public var options: [(String, String)] { [("seed", "\(seed)")] }
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

/// StreamingLLM: the first `sinks` tokens and the most recent ones. Scores as kvpress's
/// `StreamingLLMPress`: 1 for the sinks and for the `budget − sinks` most recent candidates, 0
/// for the rest; the sinks are also mandatory.
public struct StreamingLLMPolicy: EvictionPolicy {
  public var sinks: Int
  public init(sinks: Int = 4) { self.sinks = sinks }
  public var name: String { "streaming" }
  public var options: [(String, String)] { [("sinks", "\(sinks)")] }
  public var minimumBudget: Int { sinks + 1 }
  public func mustKeep(_ entries: EntryList) -> [Bool] {
    (0..<entries.count).map { $0 < sinks }
  }
  public func score(_ view: CandidateView) -> [Float] {
    let n = view.count
    let pruned = max(0, n - view.entries.budget)
    return (0..<n).map { i in (i >= sinks && i < sinks + pruned) ? 0 : 1 }
  }
}

/// H2O: accumulated attention received (summed over every query that has attended to the
/// entry since it entered, averaged over the query heads of the GQA group), plus a window of the
/// `recent` most recent entries always kept (default: half the budget, as H2O's 50/50 split).
/// The attention probabilities are recomputed here from the block's queries against cache ∪
/// block, causally, as the model's attention saw them.
public struct H2OPolicy: EvictionPolicy {
  public var recent: Int?
  public init(recent: Int? = nil) { self.recent = recent }
  public var name: String { "h2o" }
  public var options: [(String, String)] { recent.map { [("recent", "\($0)")] } ?? [] }
  public var needsBlockQueries: Bool { true }
  public var carriesScores: Bool { true }
  public func recentCount(budget: Int) -> Int { min(budget, recent ?? budget / 2) }
  public func mustKeep(_ entries: EntryList) -> [Bool] {
    let r = recentCount(budget: entries.budget)
    return (0..<entries.count).map { $0 >= entries.count - r }
  }
  public func score(_ view: CandidateView) -> [Float] {
    var s = view.entries.meta.map { $0.carried }
    guard let q = view.blockQueries, q.count > 0 else { return s }
    let mass = AttentionMass.perHead(view, queries: q)
    let g = Float(view.groupSize)
    for i in 0..<view.count {
      var m: Float = 0
      for h in 0..<mass.count { m += mass[h][i] }
      s[i] += m / g
    }
    return s
  }
}

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
public struct SnapKVPolicy: EvictionPolicy {
  public enum Pooling: String, Sendable { case average = "avg", max }
  public var window: Int
  public var kernel: Int
  public var pooling: Pooling
  public init(window: Int = 32, kernel: Int = 5, pooling: Pooling = .average) {
    self.window = window
    self.kernel = kernel
    self.pooling = pooling
  }
  public var name: String { "snapkv" }
  public var options: [(String, String)] {
    [("window", "\(window)"), ("kernel", "\(kernel)")] + (pooling == .max ? [("pooling", "max")] : [])
  }
  public var queryWindow: Int { window }
  public var minimumBudget: Int { window }

  public func mustKeep(_ entries: EntryList) -> [Bool] {
    let w = Set(entries.windowPositions)
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
    for h in 0..<mass.count {
      let mean = others.map { mass[h][$0] / rows }
      for t in 0..<m {
        let neighbours = max(0, t - pad)...min(m - 1, t - pad + kernel - 1)
        switch pooling {
        case .average:
          // avg_pool1d with zero padding, as kvpress: the sum over the kernel / its width.
          var s: Float = 0
          for u in neighbours { s += mean[u] }
          pooledSum[t] += s / Float(kernel)
        case .max:
          var s = -Float.infinity
          for u in neighbours { s = Swift.max(s, mean[u]) }
          pooledSum[t] += s
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

/// InfiniPot-V (streaming video): tokens before the video (system prompt, text) stay; the most
/// recent frames, up to `recent`·budget tokens, stay; of the remaining (past) video tokens,
/// about `alpha`·(free slots) are chosen by temporal redundancy (TaR)
/// `s = −mean_{t'∈recent} cos(k_{t,p}, k_{t',p})` against the same patch p (same tile, row and
/// col) in the recent frames, and value norm (VaN) `‖v‖` fills the rest. A past token whose patch
/// appears in no recent frame gets TaR 0. `score` returns VaN (what fills); the TaR stage is in
/// `preference`. Without frames in the cache it reduces to VaN.
public struct InfiniPotVPolicy: EvictionPolicy {
  public var alpha: Double
  public var recent: Double
  public init(alpha: Double = 0.5, recent: Double = 0.25) {
    self.alpha = alpha
    self.recent = recent
  }
  public var name: String { "infinipot" }
  public var options: [(String, String)] { [("alpha", "\(alpha)"), ("recent", "\(recent)")] }

  struct FrameKey: Hashable {
    var input: Int32
    var image: Int32
    var frame: Int32
  }

  /// Which candidates are pre-video and which belong to the recent frames.
  func structure(_ entries: EntryList) -> (preVideo: [Bool], recentFrame: [Bool]) {
    let meta = entries.meta
    let n = meta.count
    let firstVideo = meta.filter { $0.isVideo }.map { $0.position }.min()
    let preVideo = meta.map { m in !m.isVideo && (firstVideo.map { m.position < $0 } ?? false) }
    // Frames, newest first (by their latest position).
    var latest: [FrameKey: Int32] = [:]
    var sizes: [FrameKey: Int] = [:]
    for m in meta where m.isVideo {
      let k = FrameKey(input: m.input, image: m.image, frame: m.frame)
      latest[k] = max(latest[k] ?? m.position, m.position)
      sizes[k, default: 0] += 1
    }
    let limit = Int(recent * Double(entries.budget))
    var chosen: Set<FrameKey> = []
    var used = 0
    for k in latest.keys.sorted(by: { latest[$0]! > latest[$1]! }) {
      guard used + sizes[k]! <= limit else { break }
      used += sizes[k]!
      chosen.insert(k)
    }
    let recentFrame = (0..<n).map { i in
      meta[i].isVideo
        && chosen.contains(
          FrameKey(input: meta[i].input, image: meta[i].image, frame: meta[i].frame))
    }
    return (preVideo, recentFrame)
  }

  public func mustKeep(_ entries: EntryList) -> [Bool] {
    let s = structure(entries)
    return zip(s.preVideo, s.recentFrame).map { $0 || $1 }
  }

  public func score(_ view: CandidateView) -> [Float] {
    (0..<view.count).map { Vector.norm(view.value($0), view.headDim) }
  }

  /// TaR of each candidate (0 where it does not apply).
  public func temporalRedundancy(_ view: CandidateView) -> [Float] {
    let meta = view.entries.meta
    let s = structure(view.entries)
    struct Patch: Hashable {
      var input: Int32, image: Int32, tile: Int32, row: Int32, col: Int32
    }
    var recentByPatch: [Patch: [Int]] = [:]
    for i in meta.indices where s.recentFrame[i] && meta[i].row >= 0 {
      let m = meta[i]
      recentByPatch[
        Patch(input: m.input, image: m.image, tile: m.tile, row: m.row, col: m.col), default: []
      ].append(i)
    }
    let d = view.headDim
    return meta.indices.map { i in
      let m = meta[i]
      guard m.isVideo, !s.recentFrame[i], m.row >= 0,
        let peers = recentByPatch[
          Patch(input: m.input, image: m.image, tile: m.tile, row: m.row, col: m.col)]
      else { return 0 }
      let k = view.key(i)
      let nk = max(Vector.norm(k, d), 1e-8)
      var total: Float = 0
      for j in peers {
        let kj = view.key(j)
        total += Vector.dot(k, kj, d) / (nk * max(Vector.norm(kj, d), 1e-8))
      }
      return -total / Float(peers.count)
    }
  }

  public func preference(_ view: CandidateView, scores: [Float], slots: Int) -> [Int] {
    let s = structure(view.entries)
    let tar = temporalRedundancy(view)
    let meta = view.entries.meta
    let past = meta.indices.filter { meta[$0].isVideo && !s.recentFrame[$0] }
    let byTaR = Ranking.byScore(past.map { tar[$0] }).map { past[$0] }
    let picks = Array(byTaR.prefix(Int((alpha * Double(slots)).rounded(.up))))
    let picked = Set(picks)
    return picks + Ranking.byScore(scores).filter { !picked.contains($0) }
  }
}

/// Small vector helpers (Float, sequential sums).
enum Vector {
  @inline(__always)
  static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var s: Float = 0
    for i in 0..<n { s += a[i] * b[i] }
    return s
  }
  @inline(__always)
  static func norm(_ a: UnsafePointer<Float>, _ n: Int) -> Float { dot(a, a, n).squareRoot() }
}

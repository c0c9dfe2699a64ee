import Foundation
import KVModels
import KVTensor

/// An eviction policy: scores the candidates of one layer and KV head (cache ∪ block), says which
/// must stay regardless, and in which order the rest are preferred. The cache keeps the top
/// `budget` entries **per layer and per KV head** — each KV head keeps its own set, as kvpress's
/// presses do (`scores.topk(n_kept, dim=-1)` over a `[batch, kv_heads, tokens]` score tensor),
/// so two heads of a layer may hold different positions; every head holds the same count.
///
/// Policies are small value types: whatever they carry between blocks (H2O's accumulated
/// attention, SnapKV's observation window) is stored by the cache per entry, not by the policy.
public protocol EvictionPolicy: Sendable, CustomStringConvertible {
  /// The name the REPL uses (`policy snapkv`).
  var name: String { get }
  /// `key=value` options, as the REPL prints and parses them.
  var options: [(String, String)] { get }
  /// How many of the most recent queries (all query heads) the cache must keep observing for
  /// this policy, per layer: SnapKV's window. 0 for query-agnostic policies.
  var queryWindow: Int { get }
  /// Whether each scoring needs all the queries of the block being committed (H2O).
  var needsBlockQueries: Bool { get }
  /// Whether scores carry over: the cache stores each survivor's score in `EntryMeta.carried`
  /// and hands it back next time (H2O's accumulated attention).
  var carriesScores: Bool { get }
  /// The smallest budget the policy can keep its promises in (SnapKV's window, the sinks).
  var minimumBudget: Int { get }
  /// Candidates that must survive whatever their score (from metadata only).
  func mustKeep(_ entries: EntryList) -> [Bool]
  /// One score per candidate; higher is more worth keeping.
  func score(_ view: CandidateView) -> [Float]
  /// Candidates in order of preference (first = kept first); `slots` is how many non-mandatory
  /// candidates will be kept. By default: by score, descending.
  func preference(_ view: CandidateView, scores: [Float], slots: Int) -> [Int]
}

extension EvictionPolicy {
  public var options: [(String, String)] { [] }
  public var queryWindow: Int { 0 }
  public var needsBlockQueries: Bool { false }
  public var carriesScores: Bool { false }
  public var minimumBudget: Int { 1 }
  public func mustKeep(_ entries: EntryList) -> [Bool] {
    Array(repeating: false, count: entries.count)
  }
  public func preference(_ view: CandidateView, scores: [Float], slots: Int) -> [Int] {
    Ranking.byScore(scores)
  }
  public var description: String {
    ([name] + options.map { "\($0.0)=\($0.1)" }).joined(separator: " ")
  }
}

public enum Ranking {
  /// Indices by score, highest first; NaN counts as lowest; ties go to the later candidate
  /// (the more recent token).
  public static func byScore(_ scores: [Float]) -> [Int] {
    // The score's order-preserving bits, radix-sorted (stable, ascending, ties in index order)
    // and read backwards: the comparator's order, in a fraction of a comparison sort's time
    // (an eviction ranks every candidate of every head).
    let n = scores.count
    var keys = [UInt32](repeating: 0, count: n)
    var order = [Int](0..<n)
    var other = [Int](repeating: 0, count: n)
    keys.withUnsafeMutableBufferPointer { keys in
      for i in 0..<n {
        let x = scores[i].isNaN ? -Float.infinity : scores[i] + 0  // + 0: −0 ranks as +0
        let bits = x.bitPattern
        keys[i] = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
      }
      var counts = [Int](repeating: 0, count: 257)
      for shift: UInt32 in [0, 8, 16, 24] {
        order.withUnsafeMutableBufferPointer { from in
          other.withUnsafeMutableBufferPointer { to in
            counts.withUnsafeMutableBufferPointer { counts in
              for d in 0..<257 { counts[d] = 0 }
              for i in from { counts[Int((keys[i] >> shift) & 0xFF) + 1] += 1 }
              for d in 0..<256 { counts[d + 1] += counts[d] }
              for i in from {
                let d = Int((keys[i] >> shift) & 0xFF)
                to[counts[d]] = i
                counts[d] += 1
              }
            }
          }
        }
        swap(&order, &other)
      }
    }
    return order.reversed()
  }
}

/// Attention probabilities of queries over the candidates, as the model computed them:
/// softmax(q·kᵀ/√d) over cache ∪ block, causal by original position (a key whose position is
/// after the query's is masked). Shared by SnapKV (window queries) and H2O (the block's queries).
/// A proxy query (negative position: a question or template run after the block, never cached)
/// comes after every candidate and sees them all.
enum AttentionMass {
  /// For each query head of the view's GQA group (in order): Σ over the query rows of the
  /// probabilities each candidate receives. `[groupSize][count]`.
  static func perHead(_ view: CandidateView, queries: QueryRows) -> [[Float]] {
    let n = view.count
    let rows = queries.count
    let d = view.headDim
    var mass = Array(repeating: Array(repeating: Float(0), count: n), count: view.groupSize)
    guard n > 0, rows > 0 else { return mass }
    let positions = view.entries.meta.map { Int($0.position) }
    let ascending = zip(positions, positions.dropFirst()).allSatisfy { $0 < $1 }
    // The group's query rows side by side, so that one product per key segment scores them
    // all (sgemm packs the keys once, not once per query head): logits of slot s, row r at
    // row s·rows + r.
    let group = view.groupSize
    let scratch = view.scratch(group * rows * (n + d))
    let logits = scratch.pointer
    let stacked = scratch.pointer + group * rows * n
    for (slot, h) in view.queryHeads.enumerated() {
      for r in 0..<rows {
        (stacked + (slot * rows + r) * d).update(from: queries.pointer + r * queries.ld + h * d, count: d)
      }
    }
    let scale = 1 / Float(d).squareRoot()
    // One thread: OpenBLAS would wake its own for a product this small, beside kvlab's pool.
    Parallel.withSingleThreadedBLAS {
      for s in view.keySegments {
        BLAS.sgemm(
          transB: true, m: group * rows, n: s.rows, k: d, alpha: scale, a: stacked, lda: d,
          b: s.base, ldb: s.ld, c: logits + s.first, ldc: n)
      }
    }
    for slot in 0..<group {
      mass[slot].withUnsafeMutableBufferPointer { acc in
        for r in 0..<rows {
          let row = logits + (slot * rows + r) * n
          let qp = queries.positions[r] < 0 ? Int.max : queries.positions[r]
          // Candidates are normally in ascending position order, so the visible ones are a
          // prefix (found by bisection); otherwise masked one by one.
          var visible = n
          if ascending {
            var lo = 0
            while lo < visible {
              let mid = (lo + visible) / 2
              if positions[mid] <= qp { lo = mid + 1 } else { visible = mid }
            }
          } else {
            for j in 0..<n where positions[j] > qp { row[j] = -.infinity }
          }
          guard visible > 0 else { continue }
          // The softmax on the kernel path's vectors (an eviction scores every candidate of
          // every query head of every layer); a row with no finite logit adds nothing.
          let m = SoftmaxRow.max(row, count: visible)
          guard m > -.infinity else { continue }
          let sum = SoftmaxRow.expShiftSum(row, count: visible, shift: m)
          let inv = 1 / sum
          for j in 0..<visible { acc[j] += row[j] * inv }
        }
      }
    }
    return mass
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

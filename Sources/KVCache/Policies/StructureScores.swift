import Foundation
import KVModels
import KVTensor

/// The per-entry score the structure-aware policies (`gridpool`, `floors`) start from: SnapKV's
/// window attention (unpooled: the pooling is theirs, over the patch grid), KeyDiff or K-norm.
/// With `prefill proxy="question"` the window is the question, run after each block.
public enum BaseScore: String, Sendable, CaseIterable {
  case snapkv, keydiff, knorm

  /// SnapKV over a window of `window` queries, without its 1-D pooling.
  func snapKV(window: Int) -> SnapKVPolicy { SnapKVPolicy(window: window, kernel: 1) }

  func queryWindow(_ window: Int) -> Int { self == .snapkv ? window : 0 }

  func mustKeep(_ entries: EntryList, window: Int) -> [Bool] {
    self == .snapkv
      ? snapKV(window: window).mustKeep(entries) : Array(repeating: false, count: entries.count)
  }

  func score(_ view: CandidateView, window: Int) -> [Float] {
    switch self {
    case .snapkv: return snapKV(window: window).score(view)
    case .keydiff: return KeyDiffPolicy().score(view)
    case .knorm: return KNormPolicy().score(view)
    }
  }
}

/// One tile of an image or one frame of a video: the unit whose patches form a grid.
struct VisualUnit: Hashable {
  var input: Int32, image: Int32, frame: Int32, tile: Int32

  /// The unit of a patch entry; nil for text and for an image's marker tokens (no row/col).
  init?(_ m: EntryMeta) {
    guard m.image >= 0, m.row >= 0, m.col >= 0 else { return nil }
    input = m.input
    image = m.image
    frame = m.frame
    tile = m.tile
  }
}

/// Pooling of scores over a unit's patch grid, in 2-D (kvpress's SnapKV pools in 1-D over
/// positions, which mixes a patch with the end of the previous grid row).
public enum GridPooling: String, Sendable, CaseIterable {
  case average = "avg", max

  /// Each eligible patch entry's score becomes the average (or max) of the scores of the eligible
  /// entries of its unit within `kernel`×`kernel` patches of it (itself included); the average
  /// is over the neighbours present, as evicted patches have no score. Other entries (text,
  /// markers, and those not eligible: a window that is kept anyway) keep their score.
  func pool(_ meta: [EntryMeta], _ scores: [Float], kernel: Int, eligible: [Bool]) -> [Float] {
    guard kernel > 1 else { return scores }
    struct Cell: Hashable {
      var unit: VisualUnit, row: Int32, col: Int32
    }
    var at: [Cell: Int] = [:]
    for i in meta.indices where eligible[i] {
      if let u = VisualUnit(meta[i]) { at[Cell(unit: u, row: meta[i].row, col: meta[i].col)] = i }
    }
    let r = Int32(kernel / 2)
    var out = scores
    for i in meta.indices where eligible[i] {
      guard let u = VisualUnit(meta[i]) else { continue }
      var sum: Float = 0
      var top = -Float.infinity
      var n = 0
      for dr in -r...r {
        for dc in -r...r {
          guard let j = at[Cell(unit: u, row: meta[i].row + dr, col: meta[i].col + dc)] else {
            continue
          }
          sum += scores[j]
          top = Swift.max(top, scores[j])
          n += 1
        }
      }
      out[i] = self == .max ? top : sum / Float(n)
    }
    return out
  }
}

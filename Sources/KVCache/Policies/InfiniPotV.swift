import Foundation
import KVModels
import KVTensor

/// InfiniPot-V (streaming video): tokens before the video (system prompt, text) stay; the most
/// recent frames, up to `recent`·budget tokens, stay; of the remaining (past) video tokens,
/// about `alpha`·(free slots) are chosen by temporal redundancy (TaR)
/// `s = −mean_{t'∈recent} cos(k_{t,p}, k_{t',p})` against the same patch p (same tile, row and
/// col) in the recent frames, and value norm (VaN) `‖v‖` fills the rest. A past token whose patch
/// appears in no recent frame gets TaR 0. `score` returns VaN (what fills); the TaR stage is in
/// `preference`. Without frames in the cache it reduces to VaN.
///
/// `fill=snapkv` replaces VaN by SnapKV's window attention (unpooled, a `window` of queries):
/// with `prefill proxy="the question"` the slots TaR leaves go to what the question attends to.
public struct InfiniPotVPolicy: CatalogPolicy {
  /// What fills the slots TaR leaves.
  public enum Fill: String, Sendable, CaseIterable { case vnorm, snapkv }
  public var alpha = 0.5
  public var recent = 0.25
  public var fill = Fill.vnorm
  /// SnapKV's window with fill=snapkv; nil: 8 (an optional so that the descriptions of the
  /// value-norm fill, recorded before it existed, stay as they were).
  public var window: Int?
  public init() {}
  public init(alpha: Double, recent: Double) {
    self.alpha = alpha
    self.recent = recent
  }
  public static let about = PolicyAbout(
    "infinipot", aliases: ["infinipotv", "infinipot-v"],
    summary: "video: recent frames, temporal redundancy, value norm",
    help: """
      InfiniPot-V (streaming video): tokens before the video stay; the most recent frames \
      (up to RECENT of the budget) stay; of the past frames, about ALPHA of the free slots go \
      to the tokens least redundant with the same patch in the recent frames (TaR), and value \
      norm (or, with FILL=snapkv, the attention of the last WINDOW queries or of the \
      question given by `prefill proxy=`) fills the rest. Without video it reduces to the fill.
      """)
  public static var fields: [PolicyField<Self>] {
    [
      .number("alpha", \.alpha, 0...1, help: "share of the free slots chosen by temporal redundancy"),
      .number("recent", \.recent, 0...1, help: "share of the budget for the most recent frames"),
      .choice("fill", \.fill, help: "what fills the rest: vnorm (value norm) or snapkv (attention)"),
      .integer("window", \.window, 1...65536, help: "queries that score, with fill=snapkv (8 if unset)"),
    ]
  }
  var snapWindow: Int { window ?? 8 }
  public var queryWindow: Int { fill == .snapkv ? snapWindow : 0 }
  public var minimumBudget: Int { max(1, queryWindow) }

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
    let inWindow =
      fill == .snapkv
      ? BaseScore.snapkv.mustKeep(entries, window: snapWindow)
      : Array(repeating: false, count: entries.count)
    return entries.meta.indices.map { s.preVideo[$0] || s.recentFrame[$0] || inWindow[$0] }
  }

  public func score(_ view: CandidateView) -> [Float] {
    switch fill {
    case .vnorm: return (0..<view.count).map { Vector.norm(view.value($0), view.headDim) }
    case .snapkv: return BaseScore.snapkv.score(view, window: snapWindow)
    }
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

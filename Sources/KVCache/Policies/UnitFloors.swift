import Foundation
import KVModels
import KVTensor

/// Per-unit floors over a base score: of the slots the budget leaves, every tile (or frame)
/// first keeps its best `floor`·(slots / units) tokens by score, so no unit is emptied by a
/// neighbour that scores higher everywhere; the rest goes by global score. Optionally pooled
/// over the patch grid first (`kernel` > 1, as `gridpool`). The image's last unit is its global
/// thumbnail (Idefics3 puts it after the tiles); `thumbnail=double` doubles its floor and
/// `thumbnail=whole` ranks all its tokens first. Floors are preferences, never mandatory: a
/// budget too small for them keeps the best-scored floor picks.
///
/// In block-wise prefill the thumbnail is not yet known while the tiles arrive, so the newest
/// tile of an image counts as its last unit until the next one comes; it keeps the larger floor
/// for one decision, and later decisions may take it back.
public struct UnitFloorsPolicy: CatalogPolicy {
  public enum Thumbnail: String, Sendable, CaseIterable { case same, double, whole }
  /// The score and its grid pooling (kernel 1 by default: none).
  public var scoring = GridPoolPolicy(base: .snapkv, kernel: 1)
  public var floor = 0.5
  public var thumbnail = Thumbnail.same
  public init() {}
  public init(
    base: BaseScore, window: Int = 8, floor: Double = 0.5, kernel: Int = 1,
    pooling: GridPooling = .max, thumbnail: Thumbnail = .same
  ) {
    scoring = GridPoolPolicy(base: base, window: window, kernel: kernel, pooling: pooling)
    self.floor = floor
    self.thumbnail = thumbnail
  }
  public static let about = PolicyAbout(
    "floors", aliases: ["unitfloors", "unit-floors"],
    summary: "per-tile / per-frame floors, the rest by a base score",
    help: """
      Unit floors: of the slots left after the mandatory tokens, each tile or frame first keeps \
      its best FLOOR × (slots / units) tokens by the BASE score (snapkv: the attention of the \
      last WINDOW queries, or of the question with `prefill proxy="..."`; keydiff; knorm), \
      pooled over its patch grid when KERNEL > 1; the rest of the budget goes by score. \
      THUMBNAIL: the image's last unit (its global thumbnail) gets the same floor, double, or \
      is kept whole first.
      """)
  public static var fields: [PolicyField<Self>] {
    [
      .choice("base", \.scoring.base, help: "the score: snapkv, keydiff or knorm", quiet: false),
      .integer("window", \.scoring.window, 1...65536, help: "queries that score, with base=snapkv"),
      .number("floor", \.floor, 0...1, help: "share of a unit's fair share of the slots it keeps first"),
      .integer(
        "kernel", \.scoring.kernel, 1...15, odd: true, help: "grid pooling of the score first (1: none)"),
      .choice("pooling", \.scoring.pooling, help: "with kernel > 1: max or avg over the neighbourhood"),
      .choice("thumbnail", \.thumbnail, help: "the image's last unit: same floor, double, or whole"),
    ]
  }
  public var queryWindow: Int { scoring.queryWindow }
  public var minimumBudget: Int { scoring.minimumBudget }
  public func mustKeep(_ entries: EntryList) -> [Bool] { scoring.mustKeep(entries) }
  public func score(_ view: CandidateView) -> [Float] { scoring.score(view) }

  /// How many tokens each unit keeps first, for `slots` free slots, and the thumbnails kept whole
  /// (ranked before the other floors): every image's, so nothing depends on the order in which
  /// a dictionary lists the units (it differs from process to process).
  func floors(_ entries: EntryList, slots: Int) -> (quota: [VisualUnit: Int], whole: Set<VisualUnit>) {
    let must = mustKeep(entries)
    var sizes: [VisualUnit: Int] = [:]
    var lastTile: [Int64: Int32] = [:]  // (input, image) → its highest tile, for images
    for (i, m) in entries.meta.enumerated() where !must[i] {
      guard let u = VisualUnit(m) else { continue }
      sizes[u, default: 0] += 1
      if !m.isVideo, m.tile >= 0 {
        let k = Int64(m.input) << 32 | Int64(m.image)
        lastTile[k] = Swift.max(lastTile[k] ?? m.tile, m.tile)
      }
    }
    guard !sizes.isEmpty else { return ([:], []) }
    let tilesOf = Dictionary(grouping: sizes.keys.filter { $0.frame < 0 }) {
      Int64($0.input) << 32 | Int64($0.image)
    }.mapValues(\.count)
    let share = floor * Double(slots) / Double(sizes.count)
    var out: [VisualUnit: Int] = [:]
    var whole: Set<VisualUnit> = []
    for (u, n) in sizes {
      let k = Int64(u.input) << 32 | Int64(u.image)
      // A thumbnail only where the image has several tiles (an unsplit image is its own).
      let isThumbnail = u.frame < 0 && lastTile[k] == u.tile && (tilesOf[k] ?? 0) > 1
      switch (isThumbnail, thumbnail) {
      case (true, .whole):
        out[u] = n
        whole.insert(u)
      case (true, .double): out[u] = Swift.min(n, Int((2 * share).rounded(.down)))
      default: out[u] = Swift.min(n, Int(share.rounded(.down)))
      }
    }
    return (out, whole)
  }

  public func preference(_ view: CandidateView, scores: [Float], slots: Int) -> [Int] {
    let order = Ranking.byScore(scores)
    let (quota, whole) = floors(view.entries, slots: slots)
    guard !quota.isEmpty else { return order }
    let must = mustKeep(view.entries)
    let meta = view.entries.meta
    var taken: [VisualUnit: Int] = [:]
    var first: [Int] = []
    var picked = [Bool](repeating: false, count: meta.count)
    for i in order where !must[i] {
      guard let u = VisualUnit(meta[i]), let q = quota[u], taken[u, default: 0] < q else {
        continue
      }
      taken[u, default: 0] += 1
      first.append(i)
      picked[i] = true
    }
    // Whole thumbnails first (stable: the floors keep their score order behind them).
    let isWhole = first.map { whole.contains(VisualUnit(meta[$0])!) }
    return first.indices.filter { isWhole[$0] }.map { first[$0] }
      + first.indices.filter { !isWhole[$0] }.map { first[$0] } + order.filter { !picked[$0] }
  }
}

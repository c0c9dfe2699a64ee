import Foundation
import KVModels
import KVTensor

/// H2O: accumulated attention received (summed over every query that has attended to the
/// entry since it entered, averaged over the query heads of the GQA group), plus a window of the
/// `recent` most recent entries always kept (default: half the budget, as H2O's 50/50 split).
/// The attention probabilities are recomputed here from the block's queries against cache ∪
/// block, causally, as the model's attention saw them.
public struct H2OPolicy: CatalogPolicy {
  public var recent: Int?
  public init() {}
  public init(recent: Int?) { self.recent = recent }
  public static let about = PolicyAbout(
    "h2o", summary: "heavy hitters: accumulated attention + a recent window",
    help: """
      H2O: each entry accumulates the attention it receives from every query after it \
      enters; the heaviest are kept, plus the RECENT most recent entries (by default half the \
      budget).
      """)
  public static var fields: [PolicyField<Self>] {
    [
      .integer(
        "recent", \.recent, 0...65536,
        help: "most recent entries always kept (default: half the budget)")
    ]
  }
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

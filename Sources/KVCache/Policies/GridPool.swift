import Foundation
import KVModels
import KVTensor

/// A base score (SnapKV's window attention, KeyDiff or K-norm) pooled over each tile's or
/// frame's patch grid: a patch's score becomes the max (or average) of its `kernel`×`kernel`
/// neighbourhood in the same unit, so the tokens around a strongly scored patch stay with it.
/// The window of a SnapKV base stays mandatory and is not pooled.
public struct GridPoolPolicy: CatalogPolicy {
  public var base = BaseScore.snapkv
  public var window = 8
  public var kernel = 3
  public var pooling = GridPooling.max
  public init() {}
  public init(base: BaseScore, window: Int = 8, kernel: Int = 3, pooling: GridPooling = .max) {
    self.base = base
    self.window = window
    self.kernel = kernel
    self.pooling = pooling
  }
  public static let about = PolicyAbout(
    "gridpool", aliases: ["grid-pool"],
    summary: "a base score pooled over each tile's / frame's patch grid (2-D)",
    help: """
      Grid pooling: the BASE score (snapkv: the attention of the last WINDOW queries, or of \
      the question with `prefill proxy="..."`; keydiff; knorm) of each visual token becomes the \
      max (or average) over the KERNEL×KERNEL patches around it in the same tile or frame \
      (among those still held). Text and marker tokens keep their own score; SnapKV's window \
      is always kept.
      """)
  public static var fields: [PolicyField<Self>] {
    [
      .choice("base", \.base, help: "the score pooled: snapkv, keydiff or knorm", quiet: false),
      .integer("window", \.window, 1...65536, help: "queries that score, with base=snapkv"),
      .integer("kernel", \.kernel, 1...15, odd: true, help: "side of the square neighbourhood (odd)"),
      .choice("pooling", \.pooling, help: "max or avg over the neighbourhood", quiet: false),
    ]
  }
  public var queryWindow: Int { base.queryWindow(window) }
  public var minimumBudget: Int { max(1, base.queryWindow(window)) }

  public func mustKeep(_ entries: EntryList) -> [Bool] { base.mustKeep(entries, window: window) }

  public func score(_ view: CandidateView) -> [Float] {
    let raw = base.score(view, window: window)
    let free = mustKeep(view.entries).map { !$0 }
    return pooling.pool(view.entries.meta, raw, kernel: kernel, eligible: free)
  }
}

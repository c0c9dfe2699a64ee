import Foundation
import KVModels
import KVTensor

/// StreamingLLM: the first `sinks` tokens and the most recent ones. Scores as kvpress's
/// `StreamingLLMPress`: 1 for the sinks and for the `budget − sinks` most recent candidates, 0
/// for the rest; the sinks are also mandatory.
public struct StreamingLLMPolicy: CatalogPolicy {
  public var sinks = 4
  public init() {}
  public init(sinks: Int) { self.sinks = sinks }
  public static let about = PolicyAbout(
    "streaming", aliases: ["streamingllm"], summary: "attention sinks plus the most recent",
    help: """
      StreamingLLM: the first SINKS tokens (attention sinks) and the most recent ones are \
      kept; everything in between leaves, oldest first.
      """)
  public static var fields: [PolicyField<Self>] {
    [.integer("sinks", \.sinks, 0...65536, help: "first tokens always kept (attention sinks)")]
  }
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

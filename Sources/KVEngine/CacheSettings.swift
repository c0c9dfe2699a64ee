import Foundation
import KVCache

/// The queries SnapKV scores a fed block with: the block's own last queries (the paper's
/// default), the chat template that precedes an answer, or a question known in advance —
/// run after the block as extra rows that attend to the cache and the block but are never
/// cached (`LlamaModel.forward(proxyRows:)`).
public enum QueryProxy: Equatable, Sendable, CustomStringConvertible {
  case block
  case template
  case question(String)

  public var description: String {
    switch self {
    case .block: return "block"
    case .template: return "template"
    case .question(let q): return "question \"\(q)\""
    }
  }
}

/// The session's cache configuration: what `budget`, `policy` and `prefill mode=` set.
public struct CacheSettings: CustomStringConvertible {
  /// nil: no budget (`budget off`), the full cache.
  public var budget: KVBudget?
  /// `budget 10%`: the budget is this share of the visual tokens fed, resolved into `budget`
  /// when they are known (`configureBudgetShare`); nil: the budget is as given.
  public var share: Double?
  /// How the budget is spread over the layers (the paper's static budget by default).
  public var schedule = BudgetSchedule.uniform
  public var policy: any EvictionPolicy
  public var mode: PrefillMode
  /// Prefill blocks while a budget is on: N tokens, or N visual units (tiles, frames) with their
  /// text (nil: `EngineOptions.prefillChunk` tokens).
  public var block: BlockSize?
  /// Whether the first `budget` tokens go in one forward (the paper's bulk first step).
  public var bulk = false
  /// What a query-aware policy (SnapKV) looks with while input is fed, before the question.
  public var proxy = QueryProxy.block
  /// Capped mode: decoded tokens evict once every N (`BudgetedCache.evictEvery`); nil: the
  /// cache's default for the budget.
  public var evictEvery: Int?
  public var retention: RetentionOptions

  public init(
    budget: KVBudget? = nil, policy: any EvictionPolicy = SnapKVPolicy(), mode: PrefillMode = .full,
    block: BlockSize? = nil, retention: RetentionOptions = RetentionOptions()
  ) {
    self.budget = budget
    self.policy = policy
    self.mode = mode
    self.block = block
    self.retention = retention
  }

  /// Whether the cache is a `BudgetedCache` (a budget and a compressing mode).
  public var isBudgeted: Bool { budget != nil && mode != .full }

  public var description: String {
    "budget \(budget.map { "\($0)" } ?? "off")"
      + (share.map { " (\(Session.shareText($0)) of visual tokens)" } ?? "")
      + (schedule == .uniform ? "" : " (\(schedule))") + ", policy \(policy), mode \(mode)"
      + (block.map { ", block \($0)" } ?? "") + (bulk ? ", bulk" : "")
      + (proxy == .block ? "" : ", proxy \(proxy)")
      + (evictEvery.map { ", evict every \($0)" } ?? "")
  }
}

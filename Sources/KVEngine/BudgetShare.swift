import Foundation
import KVCache

/// Budgets as a share of the visual tokens fed (`budget 10%`). The cache's storage must be
/// sized before a block is prefilled, so a share becomes a number of tokens as soon as the
/// input is known: at once when images or clips are already in the context, else at the next
/// image or clip fed, after its layout and before its first block. Each later image or clip
/// resolves it again over everything fed (the budget grows with the input, as the share says).
/// Until the first one, nothing is compressed: the cache keeps every token.
extension Session {
  /// The tokens the vision tower made for the context and the blocks waiting (the units'
  /// grids; image markers and prompts around them are text), as `feed` and `show tokens`
  /// count them.
  public var visualTokensFed: Int {
    segments.visualTokens
      + pendingBlocks.joined().filter { $0.visual != nil }.reduce(0) { $0 + $1.count }
  }

  /// `share` of `visual` tokens, rounded down so the share is never exceeded, and at least one.
  public static func shareTokens(_ share: Double, of visual: Int) -> Int {
    // The share is a decimal typed as a percentage: 0.1 · 1050 is 105.00000000000001 and
    // 0.29 · 100 is 28.999999999999996 in binary; a hair of slack keeps both whole.
    max(1, Int((share * Double(visual) + 1e-9).rounded(.down)))
  }

  /// `budget 10%` (share 0.1): a share of the visual tokens fed, resolved now when some are in
  /// the context, else at the next image or clip. Like a token budget, it switches a `full`
  /// mode to `capped`. On error the session is unchanged.
  public func configureBudgetShare(_ share: Double, schedule: BudgetSchedule? = nil) throws {
    guard share > 0, share <= 1, share.isFinite else {
      throw EngineError.invalid("a share must be above 0% and at most 100%, got \(share * 100)%")
    }
    var s = cacheSettings
    s.share = share
    if let schedule { s.schedule = schedule }
    if s.mode == .full { s.mode = .capped }
    let visual = visualTokensFed
    s.budget = visual > 0 ? .tokens(Self.shareTokens(share, of: visual)) : nil
    try apply(s)
  }

  /// Resolves the share over what is fed plus `visual` more tokens about to be prefilled, runs
  /// `body` (the prefill), and puts the settings back when `body` is refused before anything
  /// entered the context.
  func withBudgetShare(adding visual: Int, _ body: () throws -> Void) throws {
    guard let share = cacheSettings.share, visual > 0 else { return try body() }
    let before = cacheSettings
    let fed = context.count
    let waiting = pendingBlocks.count
    var s = cacheSettings
    s.budget = .tokens(Self.shareTokens(share, of: visualTokensFed + visual))
    if s.budget != before.budget {
      do { try apply(s) } catch {
        throw EngineError.invalid(
          "budget \(Self.shareText(share)) of \(visualTokensFed + visual) visual tokens = \(s.budget!): \(error)")
      }
    }
    do { try body() } catch {
      if context.count == fed && pendingBlocks.count == waiting && cacheSettings.budget != before.budget {
        try? apply(before)
      }
      throw error
    }
  }

  /// `10%`, `2.5%`.
  public static func shareText(_ share: Double) -> String {
    let percent = share * 100
    if percent == percent.rounded() { return "\(Int(percent))%" }
    return String(format: "%g%%", percent)
  }
}

import Foundation
import KVModels

/// How much KV the cache may hold: a number of tokens, or bytes (converted with the model's KV
/// bytes per token, rounding down, so a byte budget is never exceeded).
public enum KVBudget: Equatable, Hashable, Sendable, CustomStringConvertible {
  case tokens(Int)
  case bytes(Int)

  /// The budget in tokens for a model storing `kvBytesPerToken` bytes of K and V per token
  /// (all layers and KV heads together).
  public func tokens(kvBytesPerToken: Int) -> Int {
    switch self {
    case .tokens(let n): return n
    case .bytes(let b): return kvBytesPerToken > 0 ? b / kvBytesPerToken : 0
    }
  }

  public var description: String {
    switch self {
    case .tokens(let n): return "\(n) tokens"
    case .bytes(let b): return KVBudget.formatBytes(b)
    }
  }

  static func formatBytes(_ b: Int) -> String {
    if b >= 1 << 30, b % (1 << 30) == 0 { return "\(b >> 30)GiB" }
    if b >= 1 << 20, b % (1 << 20) == 0 { return "\(b >> 20)MiB" }
    if b >= 1 << 10, b % (1 << 10) == 0 { return "\(b >> 10)KiB" }
    return "\(b)B"
  }

  /// The units `parse` accepts, as they are usually written (any case is accepted).
  public static let units = ["tokens", "B", "KB", "MB", "GB", "KiB", "MiB", "GiB"]

  /// A budget as typed, split into its number (sign, digits, `.`, `_`) and its unit (trimmed):
  /// `"16 mibs"` → (`16`, `mibs`).
  public static func split(_ text: String) -> (number: String, unit: String) {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    var numberEnd = trimmed.startIndex
    while numberEnd < trimmed.endIndex,
      trimmed[numberEnd].isNumber || trimmed[numberEnd] == "." || trimmed[numberEnd] == "-"
        || trimmed[numberEnd] == "+" || trimmed[numberEnd] == "_"
    {
      numberEnd = trimmed.index(after: numberEnd)
    }
    // An exponent (`1e3`, `2.5E+2`) belongs to the number, not to the unit.
    if numberEnd > trimmed.startIndex, numberEnd < trimmed.endIndex, "eE".contains(trimmed[numberEnd]) {
      var end = trimmed.index(after: numberEnd)
      if end < trimmed.endIndex, "+-".contains(trimmed[end]) { end = trimmed.index(after: end) }
      if end < trimmed.endIndex, trimmed[end].isNumber {
        while end < trimmed.endIndex, trimmed[end].isNumber { end = trimmed.index(after: end) }
        numberEnd = end
      }
    }
    return (
      String(trimmed[..<numberEnd]), trimmed[numberEnd...].trimmingCharacters(in: .whitespaces)
    )
  }

  /// Words for tokens, and bytes per unit, as `parse` accepts them (lower case).
  static let tokenWords: Set<String> = ["", "token", "tokens", "tok", "toks", "t"]
  static let multipliers: [String: Double] = [
    "b": 1, "byte": 1, "bytes": 1,
    "kb": 1e3, "mb": 1e6, "gb": 1e9,
    "kib": 1024, "mib": 1_048_576, "gib": 1_073_741_824,
  ]

  /// Whether `parse` knows the unit (any case; empty means tokens).
  public static func isUnit(_ unit: String) -> Bool {
    tokenWords.contains(unit.lowercased()) || multipliers[unit.lowercased()] != nil
  }

  /// Parses what a person types: `1024`, `1024 tokens`, `1024tok`, `24MiB`, `16 MB`, `512KiB`,
  /// `100000 B`. Decimal units (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of
  /// 1024. Zero, negative, fractional token counts and unknown units are errors; their messages
  /// read after the word budget (`budget: must be positive, got '0'`).
  public static func parse(_ text: String) throws -> KVBudget {
    let (numberPart, unit) = split(text)
    let numberText = numberPart.replacingOccurrences(of: "_", with: "")
    if numberText == "0", unit.lowercased().hasPrefix("x") {
      throw CacheError.invalidBudget("'\(text)' is not a budget: write the number in decimal")
    }
    guard let value = Double(numberText), value.isFinite else {
      throw CacheError.invalidBudget(
        "'\(text)' is not a budget; expected e.g. '1024 tokens' or '24MiB'")
    }
    guard value > 0 else {
      throw CacheError.invalidBudget("must be positive, got '\(text)'")
    }
    if tokenWords.contains(unit.lowercased()) {
      guard value == value.rounded() else {
        throw CacheError.invalidBudget("tokens must be a whole number, got '\(text)'")
      }
      guard value <= Double(Int32.max) else {
        throw CacheError.invalidBudget("'\(text)' is too large")
      }
      return .tokens(Int(value))
    }
    guard let m = multipliers[unit.lowercased()] else {
      throw CacheError.invalidBudget(
        "unknown unit '\(unit)'; use \(units.dropLast().joined(separator: ", ")) or \(units.last!)")
    }
    let bytes = value * m
    guard bytes <= Double(Int.max / 2) else {
      throw CacheError.invalidBudget("'\(text)' is too large")
    }
    guard bytes >= 1 else {
      throw CacheError.invalidBudget("must be at least 1 byte, got '\(text)'")
    }
    return .bytes(Int(bytes))
  }
}

/// How a prompt goes into the cache.
public enum PrefillMode: String, CaseIterable, Sendable, CustomStringConvertible {
  /// No compression: every token is kept (`DenseKVCache`).
  case full
  /// Prefill everything into growable storage, compress to the budget at the end of the input
  /// (or when asked): the usual post-prefill baseline (kvpress's presses, SnapKV, H2O as used).
  case post
  /// The paper's loop: append the block, then evict the excess. Storage is sized budget + block,
  /// and the cache transiently holds M + b tokens.
  case sequential
  /// kvlab's hard cap: the block's K/V stay in the model's activations while the policy scores
  /// cache ∪ block; the best M are written in place. Storage is exactly the budget, always.
  case capped

  public var description: String { rawValue }
}

/// Errors of the budgeted cache and its configuration. The cache is untouched when one is thrown.
public enum CacheError: Error, Equatable, CustomStringConvertible {
  case invalidBudget(String)
  case invalidPolicy(String)
  case budgetTooSmall(String)
  case blockTooLarge(String)
  case invalidState(String)

  public var description: String {
    switch self {
    case .invalidBudget(let m), .invalidPolicy(let m), .budgetTooSmall(let m),
      .blockTooLarge(let m), .invalidState(let m):
      return m
    }
  }
}

/// How a budget of M tokens is spread over the decoder's layers. The paper keeps M in every
/// layer ("static"); PyramidKV (Cai et al. 2024) gives lower layers more and upper layers less,
/// since upper layers' attention concentrates on fewer tokens. Every schedule sums to L·M, so a
/// byte budget holds whatever the schedule.
public enum BudgetSchedule: Equatable, Hashable, Sendable, CustomStringConvertible {
  /// M in every layer.
  case uniform
  /// Linear from (1 + slope)·M at layer 0 down to (1 − slope)·M at the last layer,
  /// `0 ≤ slope < 1`.
  case pyramid(slope: Double)

  /// PyramidKV's shape at kvlab's default: 1.5·M at the bottom, 0.5·M at the top.
  public static let defaultSlope = 0.5

  /// Per-layer budgets for a mean of `mean` tokens over `layers` layers: rounded down, then
  /// the tokens rounding lost go one each to the layers it took most from, so the sum is
  /// exactly `layers · mean`.
  public func layerBudgets(mean: Int, layers: Int) -> [Int] {
    guard layers > 1, case .pyramid(let slope) = self, slope > 0 else {
      return Array(repeating: mean, count: max(0, layers))
    }
    let exact = (0..<layers).map { l in
      Double(mean) * (1 + slope * (1 - 2 * Double(l) / Double(layers - 1)))
    }
    var budgets = exact.map { Int($0.rounded(.down)) }
    let short = layers * mean - budgets.reduce(0, +)
    let byLoss = exact.indices.sorted {
      (exact[$0] - Double(budgets[$0]), -$0) > (exact[$1] - Double(budgets[$1]), -$1)
    }
    for l in byLoss.prefix(short) { budgets[l] += 1 }
    return budgets
  }

  /// Throws unless the schedule's parameters are in range.
  public func validate() throws {
    if case .pyramid(let slope) = self, !(slope >= 0 && slope < 1) {
      throw CacheError.invalidBudget("pyramid slope must be at least 0 and below 1, got \(slope)")
    }
  }

  /// `uniform`, `pyramid` (the default slope) or `pyramid slope=0.8`.
  public var description: String {
    switch self {
    case .uniform: return "uniform"
    case .pyramid(let s) where s == Self.defaultSlope: return "pyramid"
    case .pyramid(let s): return "pyramid slope=\(s)"
    }
  }
}

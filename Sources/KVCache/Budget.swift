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

  /// Parses what a person types: `1024`, `1024 tokens`, `1024tok`, `24MiB`, `16 MB`, `512KiB`,
  /// `100000 B`. Decimal units (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of
  /// 1024. Zero, negative, fractional token counts and unknown units are errors.
  public static func parse(_ text: String) throws -> KVBudget {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    var numberEnd = trimmed.startIndex
    while numberEnd < trimmed.endIndex,
      trimmed[numberEnd].isNumber || trimmed[numberEnd] == "." || trimmed[numberEnd] == "-"
        || trimmed[numberEnd] == "+" || trimmed[numberEnd] == "_"
    {
      numberEnd = trimmed.index(after: numberEnd)
    }
    let numberText = trimmed[..<numberEnd].replacingOccurrences(of: "_", with: "")
    let unit = trimmed[numberEnd...].trimmingCharacters(in: .whitespaces)
    guard let value = Double(numberText), value.isFinite else {
      throw CacheError.invalidBudget(
        "'\(text)' is not a budget; expected e.g. '1024 tokens' or '24MiB'")
    }
    guard value > 0 else {
      throw CacheError.invalidBudget("budget must be positive, got '\(text)'")
    }
    let multipliers: [String: Double] = [
      "b": 1, "byte": 1, "bytes": 1,
      "kb": 1e3, "mb": 1e6, "gb": 1e9,
      "kib": 1024, "mib": 1_048_576, "gib": 1_073_741_824,
    ]
    switch unit.lowercased() {
    case "", "token", "tokens", "tok", "toks", "t":
      guard value == value.rounded() else {
        throw CacheError.invalidBudget("a token budget must be a whole number, got '\(text)'")
      }
      guard value <= Double(Int32.max) else {
        throw CacheError.invalidBudget("budget '\(text)' is too large")
      }
      return .tokens(Int(value))
    case let u:
      guard let m = multipliers[u] else {
        throw CacheError.invalidBudget(
          "unknown budget unit '\(unit)'; use tokens, B, KB, MB, GB, KiB, MiB or GiB")
      }
      let bytes = value * m
      guard bytes <= Double(Int.max / 2) else {
        throw CacheError.invalidBudget("budget '\(text)' is too large")
      }
      guard bytes >= 1 else { throw CacheError.invalidBudget("budget must be at least 1 byte") }
      return .bytes(Int(bytes))
    }
  }
}

/// How a prompt goes into the cache (DESIGN §1 and issue 4, item 3).
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

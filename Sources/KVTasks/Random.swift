/// SplitMix64 (Steele, Lea and Flood 2014): a tiny generator whose whole state is one integer,
/// so a sample depends on its seed alone and is the same on every machine and Swift version
/// (the standard library's generators and `shuffle(using:)` promise neither).
public struct SplitMix64: Sendable {
  public private(set) var state: UInt64

  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    return SplitMix64.mix(state)
  }

  /// SplitMix64's output function: a bijective mix of 64 bits (also a good hash).
  public static func mix(_ value: UInt64) -> UInt64 {
    var z = value
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A uniform integer in `0..<bound` (Lemire's multiply-high: no modulo bias worth naming, and
  /// one draw per call, so the sequence of draws is easy to reason about).
  public mutating func below(_ bound: Int) -> Int {
    precondition(bound > 0)
    return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
  }

  /// A uniform integer in `range`.
  public mutating func int(in range: ClosedRange<Int>) -> Int {
    range.lowerBound + below(range.upperBound - range.lowerBound + 1)
  }

  /// A uniform element of a non-empty array.
  public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

  /// The items in a uniformly random order (Fisher–Yates, our own so the order never changes
  /// with the standard library).
  public mutating func shuffled<T>(_ items: [T]) -> [T] {
    var out = items
    var i = out.count - 1
    while i > 0 {
      out.swapAt(i, below(i + 1))
      i -= 1
    }
    return out
  }
}

/// A stateless hash of a seed and up to three coordinates, for per-pixel texture and noise: the
/// value of a pixel does not depend on the order pixels are drawn in.
func pixelHash(_ seed: UInt64, _ a: Int, _ b: Int, _ c: Int = 0) -> UInt64 {
  var h = SplitMix64.mix(seed ^ 0x5851_F42D_4C95_7F2D)
  h = SplitMix64.mix(h ^ UInt64(bitPattern: Int64(a)))
  h = SplitMix64.mix(h ^ UInt64(bitPattern: Int64(b)) &* 0x2545_F491_4F6C_DD1D)
  return SplitMix64.mix(h ^ UInt64(bitPattern: Int64(c)) &* 0x9E37_79B9_7F4A_7C15)
}

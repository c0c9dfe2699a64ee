import Foundation

/// How the next token is chosen. Temperature 0 is greedy (argmax, ties to the lowest id).
public struct GenerationOptions: Equatable, Sendable {
  public var maxTokens: Int
  public var temperature: Float
  public var topK: Int
  public var topP: Float
  public var seed: UInt64

  public init(
    maxTokens: Int = 64, temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0
  ) {
    self.maxTokens = maxTokens
    self.temperature = temperature
    self.topK = topK
    self.topP = topP
    self.seed = seed
  }
}

/// SplitMix64: tiny, fast, and the same stream on every platform, so a seeded run replays.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  /// Uniform in [0, 1) with 24 bits, as a Float.
  public mutating func nextUnit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// Picks tokens from logits: temperature, then top-k, then top-p (nucleus), then a seeded draw,
/// in the order transformers applies its logits warpers.
public struct Sampler: Sendable {
  public let options: GenerationOptions
  private var rng: SeededGenerator

  public init(options: GenerationOptions) {
    self.options = options
    rng = SeededGenerator(seed: options.seed)
  }

  public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
    var best = 0
    var bestValue = -Float.infinity
    for (i, v) in logits.enumerated() where v > bestValue {
      best = i
      bestValue = v
    }
    return best
  }

  public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
    if options.temperature <= 0 { return Self.argmax(logits) }
    var candidates = logits.enumerated().map { (id: $0.offset, logit: $0.element / options.temperature) }
    candidates.sort { $0.logit > $1.logit || ($0.logit == $1.logit && $0.id < $1.id) }
    if options.topK > 0 && options.topK < candidates.count {
      candidates.removeSubrange(options.topK...)
    }
    let top = candidates[0].logit
    var probabilities = candidates.map { Double(($0.logit - top)).exp() }
    let total = probabilities.reduce(0, +)
    probabilities = probabilities.map { $0 / total }
    if options.topP < 1 {
      var cumulative = 0.0
      var keep = 0
      // Keep the smallest prefix whose mass reaches top_p (at least one token).
      while keep < probabilities.count {
        cumulative += probabilities[keep]
        keep += 1
        if cumulative >= Double(options.topP) { break }
      }
      probabilities.removeSubrange(keep...)
      let kept = probabilities.reduce(0, +)
      probabilities = probabilities.map { $0 / kept }
    }
    let u = Double(rng.nextUnit())
    var cumulative = 0.0
    for (i, p) in probabilities.enumerated() {
      cumulative += p
      if u < cumulative { return candidates[i].id }
    }
    return candidates[probabilities.count - 1].id
  }
}

extension Double {
  fileprivate func exp() -> Double { Foundation.exp(self) }
}

import Foundation

public struct LoadReport: Sendable {
  public var path: String
  public var name: String
  public var architecture: String
  public var parameters: Int
  public var layers: Int
  public var vocabulary: Int
  public var kvBytesPerToken: Int
  /// Weights resident on the heap, and read in place from the model file's mapping.
  public var weightBytes: Int
  public var mappedWeightBytes: Int
  /// The matrices' stored formats ("Q4_1+Q8_0", "F32").
  public var weightFormat: String
  public var seconds: Double
}

public struct FeedReport: Sendable {
  public var tokens: Int
  public var contextTokens: Int
  public var seconds: Double
  /// For an image or clip: how many visual units (tiles, images, frame pairs) and visual tokens.
  public var visualUnits = 0
  public var visualTokens = 0
  /// Prefill blocks waiting (stepping on): the fed tokens are not in the context yet.
  public var waitingBlocks = 0
  /// Of `seconds`: getting visual units' pixels (decoding, resizing, tiling) and the vision
  /// tower with its connector; the rest is the decoder (and the cache).
  public var pixelSeconds = 0.0
  public var visionSeconds = 0.0
}

/// Memory after one prefill block (`mem plot`): what the cache holds, the meter's peaks while
/// the block ran, and the process's resident set after it.
public struct MemorySample: Equatable, Sendable {
  /// Tokens in the context after the block.
  public var contextTokens: Int
  /// K/V bytes held after the block, and the most held while it ran.
  public var kv: Int
  public var kvPeak: Int
  public var activationsPeak: Int
  public var visionPeak: Int
  /// VmRSS after the block (nil where /proc is not readable).
  public var rss: Int?
  /// Blocks this sample stands for (more than 1 once a long trace merged; MemoryTrace.swift).
  public var blocks = 1
}

public struct GenerationReport: Sendable {
  public var text: String
  public var tokens: [Int]
  public var stoppedOnEOS: Bool
  public var prefillTokens: Int
  public var prefillSeconds: Double
  public var decodeSeconds: Double
}

import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

enum CachePaths {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path
  static let model = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  static let fixtures = root + "/Tests/KVCacheTests/Fixtures"

  static func requireModel() throws -> String {
    guard FileManager.default.fileExists(atPath: model) else {
      XCTFail("\(model) is missing: run scripts/setup.sh")
      throw XCTSkip("model missing")
    }
    return model
  }
}

/// SplitMix64: a small seeded generator for reproducible random tests.
struct SeededRNG: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed &+ 0x1234_5678 }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  mutating func normal() -> Float {
    let u1 = max(Double.random(in: 0..<1, using: &self), 1e-12)
    let u2 = Double.random(in: 0..<1, using: &self)
    return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
  }
}

/// A synthetic input: for every layer, rows laid out as the decoder's fused QKV activations
/// (`[q heads | k heads | v heads]`, one row per token), with positions and structured origins.
struct SyntheticInput {
  let layers: Int
  let kvHeads: Int
  let queryHeads: Int
  let headDim: Int
  let origins: [TokenOrigin]
  /// Per layer: tokens × (queryHeads + 2·kvHeads)·headDim.
  var rows: [[Float]]

  var count: Int { origins.count }
  var qDim: Int { queryHeads * headDim }
  var kvDim: Int { kvHeads * headDim }
  var ld: Int { qDim + 2 * kvDim }

  init(
    layers: Int, kvHeads: Int, queryHeads: Int, headDim: Int, origins: [TokenOrigin],
    rng: inout SeededRNG
  ) {
    self.layers = layers
    self.kvHeads = kvHeads
    self.queryHeads = queryHeads
    self.headDim = headDim
    self.origins = origins
    let width = (queryHeads + 2 * kvHeads) * headDim
    // Per-token scale variety so that norms differ.
    rows = (0..<layers).map { _ in
      var r = [Float](repeating: 0, count: origins.count * width)
      for t in 0..<origins.count {
        let s = 0.5 + Float.random(in: 0..<1.5, using: &rng)
        for c in 0..<width { r[t * width + c] = rng.normal() * s }
      }
      return r
    }
  }

  func key(layer: Int, position: Int, head: Int) -> ArraySlice<Float> {
    let base = position * ld + qDim + head * headDim
    return rows[layer][base..<base + headDim]
  }
  func value(layer: Int, position: Int, head: Int) -> ArraySlice<Float> {
    let base = position * ld + qDim + kvDim + head * headDim
    return rows[layer][base..<base + headDim]
  }

  /// Commits tokens `range` as one block to every layer, then finishes the block.
  func feed(_ range: Range<Int>, into cache: KeyValueCache) throws {
    for l in 0..<layers {
      try rows[l].withUnsafeBufferPointer { buf in
        let base = buf.baseAddress! + range.lowerBound * ld
        try cache.commit(
          layer: l,
          block: KVBlock(
            keys: base + qDim, values: base + qDim + kvDim, queries: base, ld: ld, queryLD: ld,
            count: range.count, positions: Array(range), origins: Array(origins[range])))
      }
    }
    try cache.finishBlock()
  }

  /// Origins with structure: a system prompt, text spans, tiled images, video frames.
  static func structuredOrigins(count: Int, rng: inout SeededRNG) -> [TokenOrigin] {
    var out: [TokenOrigin] = []
    var input = 0
    var image = 0
    let systemLength = Int.random(in: 0...6, using: &rng)
    for _ in 0..<systemLength {
      out.append(TokenOrigin(modality: .text, input: 0, span: 0, isSystem: true))
    }
    if systemLength > 0 { input += 1 }
    while out.count < count {
      switch Int.random(in: 0..<3, using: &rng) {
      case 0:
        let n = Int.random(in: 1...12, using: &rng)
        for _ in 0..<n { out.append(TokenOrigin(modality: .text, input: input, span: input)) }
      case 1:
        let tiles = Int.random(in: 1...3, using: &rng)
        let side = Int.random(in: 2...4, using: &rng)
        for t in 0..<tiles {
          for r in 0..<side {
            for c in 0..<side {
              out.append(
                TokenOrigin(modality: .image, input: input, image: image, tile: t, row: r, col: c))
            }
          }
        }
        image += 1
      default:
        let frames = Int.random(in: 2...6, using: &rng)
        let side = Int.random(in: 2...3, using: &rng)
        for f in 0..<frames {
          for r in 0..<side {
            for c in 0..<side {
              out.append(
                TokenOrigin(modality: .video, input: input, image: image, row: r, col: c, frame: f))
            }
          }
        }
        image += 1
      }
      input += 1
    }
    return Array(out.prefix(count))
  }
}

extension XCTestCase {
  func assertClose(
    _ a: [Float], _ b: [Float], tolerance: Float, _ message: String, file: StaticString = #filePath,
    line: UInt = #line
  ) {
    XCTAssertEqual(a.count, b.count, message, file: file, line: line)
    var worst: Float = 0
    for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
    XCTAssertLessThanOrEqual(
      worst, tolerance, "\(message): max |Δ| = \(worst)", file: file, line: line)
  }
}

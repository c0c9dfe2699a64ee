import Foundation
import KVCache
import KVEngine
import KVModels
import KVTensor
import XCTest

/// The hard cap end to end: random budgets, policies, block sizes (tokens or tiles/frames),
/// bulk on or off, and random mixes of images, clips and text fed into the three real
/// vision-language families. The meter's KV high-water mark is at most the budget in `capped`
/// mode, at most budget + the largest block in `sequential`, and `full` / `post` hold the whole
/// input at their peak.
final class VisionBudgetPropertyTests: XCTestCase {
  struct RNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }

  static let vlm = TestPaths.fixtures + "/vlm"
  static let images = ["img_33x33.png", "img_45x61.png", "img_70x40.png", "img_90x20.png"]

  func testKVPeakObeysTheModeOverRandomInputs() throws {
    var rng = RNG(state: 11)
    var checked: [PrefillMode: Int] = [:]
    var refused = 0
    for trial in 0..<96 {
      let family = ["idefics3", "llava", "qwen2_vl"][trial % 3]
      let mode = PrefillMode.allCases[(trial / 3) % 4]
      let budget = Int.random(in: 12...64, using: &rng)
      let block: BlockSize =
        Bool.random(using: &rng)
        ? .tokens(Int.random(in: 3...40, using: &rng)) : .units(Int.random(in: 1...3, using: &rng))
      let policy = [
        "keydiff", "knorm", "vnorm", "random", "streamingllm", "h2o", "infinipot", "snapkv",
      ].randomElement(using: &rng)!
      let options = policy == "snapkv" ? ["window": "\(Int.random(in: 1...8, using: &rng))"] : [:]
      let what = "trial \(trial): \(family) \(mode) budget \(budget) block \(block) \(policy)"

      let s = Session(options: EngineOptions(threads: 2, prefillChunk: 24))
      if mode != .full {
        try s.configurePolicy(try PolicyCatalog.make(policy, options: options))
        try s.configureBudget(.tokens(budget))
        try s.configurePrefill(mode: mode, blockSize: block, bulk: Bool.random(using: &rng))
      }
      _ = try s.load("\(Self.vlm)/\(family)/model")
      s.meter.resetHighWater()
      var largestFeed = 0
      var wasRefused = false
      do {
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
          let before = s.context.count
          switch Int.random(in: 0..<3, using: &rng) {
          case 0: try s.feedImage("\(Self.vlm)/images/\(Self.images.randomElement(using: &rng)!)")
          case 1:
            let n = Int.random(in: 1...4, using: &rng)
            try s.feedFrames((0..<n).map { "\(Self.vlm)/images/clip/frame_00\($0).png" })
          default: try s.feedText("a few words of text, then more", raw: false)
          }
          largestFeed = max(largestFeed, s.context.count - before)
        }
      } catch let e as EngineError where "\(e)".contains("cannot hold") {
        // A policy whose mandatory entries (InfiniPot-V: everything before the clip and the
        // recent frames) outgrow the budget refuses the block; the cap held all the same.
        refused += 1
        wasRefused = true
      }
      let bpt = try XCTUnwrap(s.model).config.kvBytesPerToken
      let peak = s.meter.reading(.kv).highWater
      let n = s.context.count
      switch mode {
      case .capped:
        XCTAssertLessThanOrEqual(peak, budget * bpt, what)
        if n >= budget { XCTAssertEqual(s.cacheSummary?.tokens, budget, what) }
      case .sequential:
        // Budget + the largest block; when a tile or frame block outgrows the room made so
        // far, the storage grows one buffer at a time: one layer's keys (or values) at the new
        // size sit on top while it moves (BudgetedCache.reserveBlock).
        let room = budget + (try XCTUnwrap(s.budgetedCache).blockCapacity)
        let layers = try XCTUnwrap(s.model).config.layers
        XCTAssertLessThanOrEqual(peak, room * bpt + room * bpt / (2 * layers), what)
        XCTAssertLessThanOrEqual(s.cacheSummary?.tokens ?? .max, budget, what)
      case .post:
        // Each feed is prefilled whole, then compressed.
        XCTAssertGreaterThanOrEqual(peak, largestFeed * bpt, what)
        // (A refused compression leaves what the feed prefilled.)
        if !wasRefused { XCTAssertLessThanOrEqual(s.cacheSummary?.tokens ?? .max, budget, what) }
      case .full:
        XCTAssertGreaterThanOrEqual(peak, n * bpt, what)
      }
      checked[mode, default: 0] += 1
    }
    XCTAssertEqual(checked.count, 4)
    XCTAssertLessThan(refused, 16)
  }
}

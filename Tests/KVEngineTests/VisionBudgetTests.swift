import Foundation
import KVCache
import KVEngine
import KVModels
import KVTensor
import XCTest

/// Images and clips through the budgeted cache: visual tokens keep their origins in the cache,
/// the KV high-water mark obeys the mode's bound, a budget that holds everything changes
/// nothing, and step-through runs the same blocks one at a time.
final class VisionBudgetTests: XCTestCase {
  static let vlm = TestPaths.fixtures + "/vlm"

  /// Loads a family's fixture model, feeds an image and the 4-frame clip, asks.
  func run(
    _ family: String, budget: Int?, mode: PrefillMode = .capped, block: Int = 16,
    stepping: Bool = false
  ) throws -> (session: Session, answer: [Int]) {
    let s = Session(options: EngineOptions(threads: 2, prefillChunk: block))
    _ = try s.load("\(Self.vlm)/\(family)/model")
    if let budget {
      try s.configureBudget(.tokens(budget))
      try s.configurePolicy(try PolicyCatalog.make("snapkv", options: ["window": "4"]))
      try s.configurePrefill(mode: mode, block: block)
    }
    s.meter.resetHighWater()  // the full cache made at load is gone
    try s.setStepping(stepping)
    try s.feedImage("\(Self.vlm)/images/img_70x40.png")
    try s.feedFrames((0..<4).map { "\(Self.vlm)/images/clip/frame_00\($0).png" })
    if stepping {
      while try s.prefillStep() != nil {}
    }
    let a = try s.ask("What changes?", options: GenerationOptions(maxTokens: 6)) { _ in }
    return (s, a.tokens)
  }

  func testBudgetHoldingEverythingChangesNothing() throws {
    for family in ["idefics3", "llava", "qwen2_vl", "qwen2_5_vl"] {
      let full = try run(family, budget: nil)
      let n = full.session.context.count
      for mode in [PrefillMode.post, .sequential, .capped] {
        let b = try run(family, budget: n + 8, mode: mode)
        XCTAssertEqual(b.answer, full.answer, "\(family) \(mode)")
        XCTAssertEqual(b.session.nextTokenLogits, full.session.nextTokenLogits, "\(family) \(mode)")
        XCTAssertEqual(b.session.context, full.session.context, "\(family) \(mode)")
      }
    }
  }

  /// Proxy queries (the chat template, or a question known in advance) run after each fed block
  /// and are never cached: with a budget that holds everything, the cache holds exactly the fed
  /// tokens and the logits are the same;
  /// with a binding one, SnapKV keeps other entries than with the block's own queries, and the
  /// cap holds.
  func testProxyQueriesAreNeverCached() throws {
    func session(_ proxy: QueryProxy, budget: Int) throws -> Session {
      let s = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
      _ = try s.load("\(Self.vlm)/qwen2_vl/model")
      try s.configurePolicy(try PolicyCatalog.make("snapkv", options: ["window": "4"]))
      try s.configureBudget(.tokens(budget))
      try s.configurePrefill(mode: .capped, blockSize: .units(1))
      try s.configureProxy(proxy)
      s.meter.resetHighWater()
      try s.feedImage("\(Self.vlm)/images/img_70x40.png")
      try s.feedFrames((0..<4).map { "\(Self.vlm)/images/clip/frame_00\($0).png" })
      return s
    }
    let plain = try session(.block, budget: 500)
    for proxy in [QueryProxy.template, .question("What moves?")] {
      // Extra rows change BLAS's blocking (and a 1-row block's sgemv becomes sgemm), so the
      // same logits only to float rounding; the cache holds exactly the fed tokens.
      let roomy = try session(proxy, budget: 500)
      let a = try XCTUnwrap(roomy.nextTokenLogits)
      let b = try XCTUnwrap(plain.nextTokenLogits)
      XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max() ?? 1, 1e-5, "\(proxy)")
      XCTAssertEqual(roomy.cacheSummary?.tokens, plain.context.count)
      XCTAssertEqual(
        roomy.budgetedCache?.positions(layer: 1, head: 1),
        plain.budgetedCache?.positions(layer: 1, head: 1))

      let tight = try session(proxy, budget: 20)
      let block = try session(.block, budget: 20)
      let bpt = try XCTUnwrap(tight.model).config.kvBytesPerToken
      XCTAssertEqual(tight.meter.reading(.kv).highWater, 20 * bpt, "\(proxy)")
      XCTAssertNotEqual(
        try XCTUnwrap(tight.budgetedCache).positions(layer: 1, head: 0),
        try XCTUnwrap(block.budgetedCache).positions(layer: 1, head: 0), "\(proxy)")
      // The block's last queries are SnapKV's window with proxy=block: those positions are
      // always kept; a proxy window protects nothing of the cache.
      let lastFour = Array((block.context.count - 4)..<block.context.count)
      XCTAssertEqual(
        Array(try XCTUnwrap(block.budgetedCache).positions(layer: 0, head: 0).suffix(4)), lastFour)
    }
  }

  func testCappedNeverExceedsTheBudgetWithImagesAndFrames() throws {
    for family in ["idefics3", "llava", "qwen2_vl", "qwen2_5_vl"] {
      let (s, _) = try run(family, budget: 48, mode: .capped)
      let bytes = try XCTUnwrap(s.budgetedCache).bytesPerToken
      XCTAssertEqual(s.meter.reading(.kv).highWater, 48 * bytes, family)
      XCTAssertEqual(s.cacheSummary?.tokens, 48, family)
      XCTAssertGreaterThan(s.context.count, 48, family)
      // Visual entries keep where they came from.
      let cache = try XCTUnwrap(s.budgetedCache)
      let kept = cache.entries(layer: 0, head: 0)
      XCTAssertTrue(kept.contains { $0.originModality == .video && $0.frameIndex != nil }, family)
      XCTAssertTrue(kept.allSatisfy { $0.originModality != .image || $0.imageIndex == 0 }, family)
    }
  }

  func testSteppingRunsTheSameBlocks() throws {
    for family in ["idefics3", "qwen2_vl"] {
      let whole = try run(family, budget: 40, mode: .capped)
      let stepped = try run(family, budget: 40, mode: .capped, stepping: true)
      XCTAssertEqual(stepped.answer, whole.answer, family)
      XCTAssertEqual(stepped.session.context, whole.session.context, family)
      let a = try XCTUnwrap(whole.session.budgetedCache)
      let b = try XCTUnwrap(stepped.session.budgetedCache)
      XCTAssertEqual(a.positions(layer: 1, head: 1), b.positions(layer: 1, head: 1), family)
    }
  }

  func testStepReportsWhatEnteredAndWhatLeft() throws {
    let s = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
    _ = try s.load("\(Self.vlm)/idefics3/model")
    try s.configurePolicy(try PolicyCatalog.make("keydiff", options: [:]))
    try s.configureBudget(.tokens(24))
    try s.configurePrefill(mode: .capped, block: 16)
    try s.setStepping(true)
    try s.feedImage("\(Self.vlm)/images/img_70x40.png")
    XCTAssertEqual(s.context.count, 0, "stepping queues the blocks")
    let waiting = s.pendingBlocks.count
    XCTAssertGreaterThan(waiting, 2)
    XCTAssertThrowsError(try s.ask("Hi?", options: GenerationOptions()) { _ in }) {
      XCTAssertTrue("\($0)".contains("waiting; run 'prefill step'"), "\($0)")
    }
    var sawEviction = false
    var steps = 0
    while let r = try s.prefillStep() {
      steps += 1
      XCTAssertEqual(r.index, steps)
      XCTAssertEqual(r.total, waiting)
      XCTAssertLessThanOrEqual(r.cacheTokens, 24)
      XCTAssertFalse(r.origins.isEmpty)
      if !r.evictions.isEmpty {
        sawEviction = true
        let e = r.evictions[0]
        // Every evicted score is at most the lowest kept one (scores decide, ties aside).
        if let low = e.lowestKept { XCTAssertTrue(e.evicted.allSatisfy { $0.score <= low }) }
      }
    }
    XCTAssertEqual(steps, waiting)
    XCTAssertTrue(sawEviction)
    XCTAssertEqual(s.context.count, 51)
    try s.setStepping(false)
  }
}

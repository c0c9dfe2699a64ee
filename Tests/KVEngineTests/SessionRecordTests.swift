import Foundation
import KVEngine
import KVModels
import XCTest

/// What a session keeps for the input it was fed grows per fed frame by a few hundred bytes,
/// not per visual token: an hour of video must not grow the process with its length.
final class SessionRecordTests: XCTestCase {
  static let model = TestPaths.root + "/weights/kvlab-shapes"
  static let frame = TestPaths.root + "/Tests/KVModelsTests/Fixtures/images/rgb_61x45.png"

  static let tiny = TestPaths.root + "/Tests/KVEngineTests/Fixtures/vlm/idefics3/model"

  /// Feeds `n` frames (one clip) into a fresh capped session; returns it.
  func session(frames n: Int, model: String = model) throws -> Session {
    let s = Session(options: EngineOptions(threads: 2))
    _ = try s.load(model)
    try s.configureBudget(.tokens(64))
    try s.configurePrefill(mode: .capped, blockSize: .units(1))
    try s.feedFrames(Array(repeating: Self.frame, count: n))
    return s
  }

  func testRecordsGrowPerFrameNotPerToken() throws {
    let small = try session(frames: 10)
    let large = try session(frames: 40)
    let frames = 30
    let tokensPerFrame = (large.contextCount - small.contextCount) / frames
    let visualPerFrame = large.segments.filter { $0.visual != nil }.first!.count
    XCTAssertGreaterThanOrEqual(visualPerFrame, 16)
    let perFrame = Double(large.recordBytes - small.recordBytes) / Double(frames)
    // One origin record per visual token would cost this much per frame (twice before: the
    // context's list and the segments'); a run-length record costs a unit, not its tokens.
    let perTokenFloor = Double(visualPerFrame * MemoryLayout<TokenOrigin>.stride)
    XCTAssertLessThan(perFrame, perTokenFloor / 2, "\(perFrame) B per frame of \(tokensPerFrame) tokens")
    XCTAssertLessThan(perFrame, 1024, "\(perFrame) B per frame")
    // The per-token views are whole and agree with each other.
    XCTAssertEqual(large.context.count, large.contextCount)
    XCTAssertEqual(large.contextOrigins.count, large.contextCount)
    XCTAssertEqual(large.contextOrigins.compactMap(\.frame).max(), 39)
    XCTAssertEqual(
      large.contextOrigins.filter { $0.frame == 7 && $0.row != nil }.count, visualPerFrame)
  }

  /// A rebuild under new settings re-prefills from the records: same context, origins and next
  /// logits as a session fed under those settings from the start.
  func testRebuildFromRecordsIsExact() throws {
    let s = try session(frames: 6)
    try s.feedText("what is in the frames?", raw: false)
    let context = s.context
    let origins = s.contextOrigins
    try s.configureBudget(nil)
    XCTAssertEqual(s.context, context)
    XCTAssertEqual(s.contextOrigins, origins)
    let fresh = Session(options: EngineOptions(threads: 2))
    _ = try fresh.load(Self.model)
    try fresh.feedFrames(Array(repeating: Self.frame, count: 6))
    try fresh.feedText("what is in the frames?", raw: false)
    XCTAssertEqual(fresh.context, context)
    XCTAssertEqual(fresh.contextOrigins, origins)
    let a = try XCTUnwrap(s.nextTokenLogits)
    let b = try XCTUnwrap(fresh.nextTokenLogits)
    XCTAssertEqual(a.count, b.count)
    XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max() ?? 0, 1e-4)
  }

  /// A clip is one record whatever its length: four times the frames, from a folder or made in
  /// memory, leave the session's bookkeeping the same size (a per-frame record fails this).
  func testClipIsOneRecordWhateverItsLength() throws {
    let small = try session(frames: 4, model: Self.tiny)
    let large = try session(frames: 16, model: Self.tiny)
    XCTAssertGreaterThan(large.contextCount, small.contextCount)
    XCTAssertEqual(large.segments.recordCount, small.segments.recordCount)
    XCTAssertEqual(large.segments.recordBytes, small.segments.recordBytes)
    // Its frames are laid out again when asked for: every unit, every token.
    XCTAssertEqual(large.segments.filter { $0.visual != nil }.count, 16)
    XCTAssertEqual(large.context.count, large.contextCount)
    XCTAssertEqual(large.contextOrigins.compactMap(\.frame).max(), 15)

    func synthetic(_ n: Int) throws -> Session {
      let s = Session(options: EngineOptions(threads: 2))
      _ = try s.load(Self.tiny)
      try s.configureBudget(.tokens(64))
      try s.configurePrefill(mode: .capped, blockSize: .units(1))
      let frame = try ImageDecoder.decode(path: Self.frame)
      try s.feedFrames(Array(repeating: frame, count: n))
      return s
    }
    let a = try synthetic(4)
    let b = try synthetic(16)
    XCTAssertEqual(b.segments.recordCount, a.segments.recordCount)
    XCTAssertEqual(b.segments.recordBytes, a.segments.recordBytes)
    XCTAssertEqual(b.context, large.context)
  }

  /// A clip stopped part way (Ctrl-C between blocks) keeps the frames fed before it, and a
  /// rebuild lays out exactly those again.
  func testStoppedClipRebuildsWhatWasFed() throws {
    let s = Session(options: EngineOptions(threads: 2))
    _ = try s.load(Self.tiny)
    try s.configureBudget(.tokens(64))
    try s.configurePrefill(mode: .capped, blockSize: .tokens(5))
    s.onPrefillProgress = { done, _ in if done >= 23 { s.cancellation.set() } }
    XCTAssertThrowsError(try s.feedFrames(Array(repeating: Self.frame, count: 8)))
    s.cancellation.clear()
    s.onPrefillProgress = nil
    let fed = s.contextCount
    XCTAssertGreaterThan(fed, 0)
    // Stopped part way: some of the 8 frames, not all.
    let frames = s.segments.filter { $0.visual != nil }.count
    XCTAssertGreaterThan(frames, 0)
    XCTAssertLessThan(frames, 8)
    let context = s.context
    let origins = s.contextOrigins
    XCTAssertEqual(context.count, fed)
    try s.configureBudget(nil)
    XCTAssertEqual(s.contextCount, fed)
    XCTAssertEqual(s.context, context)
    XCTAssertEqual(s.contextOrigins, origins)
  }
}

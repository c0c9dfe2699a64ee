import Foundation
import KVEngine
import KVModels
import XCTest

/// What a session keeps for the input it was fed grows per fed frame by a few hundred bytes,
/// not per visual token: an hour of video must not grow the process with its length.
final class SessionRecordTests: XCTestCase {
  static let model = TestPaths.root + "/weights/kvlab-shapes"
  static let frame = TestPaths.root + "/Tests/KVModelsTests/Fixtures/images/rgb_61x45.png"

  /// Feeds `n` frames (one clip) into a fresh capped session; returns it.
  func session(frames n: Int) throws -> Session {
    let s = Session(options: EngineOptions(threads: 2))
    _ = try s.load(Self.model)
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
}

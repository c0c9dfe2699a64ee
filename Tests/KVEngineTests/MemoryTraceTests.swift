import XCTest

@testable import KVEngine

/// The memory trace keeps at most `traceLimit` samples however many blocks run, and a merged
/// sample keeps the end of the pair and the larger of its peaks.
final class MemoryTraceTests: XCTestCase {
  func sample(_ i: Int) -> MemorySample {
    MemorySample(
      contextTokens: 10 * (i + 1), kv: i, kvPeak: i % 7 == 3 ? 1000 + i : i,
      activationsPeak: 5, visionPeak: i % 2, rss: i)
  }

  func testTheTraceIsBoundedAndKeepsItsPeaks() {
    var trace: [MemorySample] = []
    let blocks = 3 * MemorySample.traceLimit + 5
    for i in 0..<blocks {
      trace.appendBounded(sample(i))
      XCTAssertLessThanOrEqual(trace.count, MemorySample.traceLimit)
    }
    XCTAssertLessThanOrEqual(trace.capacity, MemorySample.traceLimit + 16)
    XCTAssertEqual(trace.reduce(0) { $0 + $1.blocks }, blocks)
    XCTAssertEqual(trace.last, sample(blocks - 1))
    XCTAssertEqual(trace.map(\.kvPeak).max(), (0..<blocks).map { sample($0).kvPeak }.max())
    XCTAssertEqual(trace.map(\.contextTokens), trace.map(\.contextTokens).sorted())
    XCTAssertTrue(trace.allSatisfy { $0.visionPeak == 1 || $0.blocks == 1 })
  }

  func testAShortTraceIsOneSamplePerBlock() {
    var trace: [MemorySample] = []
    for i in 0..<100 { trace.appendBounded(sample(i)) }
    XCTAssertEqual(trace, (0..<100).map(sample))
  }
}

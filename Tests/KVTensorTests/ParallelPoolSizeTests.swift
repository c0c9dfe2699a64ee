import Foundation
import XCTest

@testable import KVTensor

/// Regions of different sizes back to back: the helpers a small region leaves out must not read
/// the region's job (the next, larger region writes it meanwhile; ThreadSanitizer reports that
/// as a race, and a helper late enough would run its share of the next region twice).
final class ParallelPoolSizeTests: XCTestCase {
  private final class Counts: @unchecked Sendable {
    let lock = NSLock()
    var values: [Int]
    init(_ n: Int) { values = Array(repeating: 0, count: n) }
    func add(_ i: Int) {
      lock.lock()
      values[i] += 1
      lock.unlock()
    }
  }

  func testHelpersLeftOutOfASmallRegionStayOutOfTheNext() {
    let sizes = [6, 2, 3, 6, 2, 4]
    var expected = Array(repeating: 0, count: 6)
    let counts = Counts(6)
    for round in 0..<600 {
      let workers = sizes[round % sizes.count]
      Parallel.region(workers) { counts.add($0) }
      for w in 0..<workers { expected[w] += 1 }
    }
    XCTAssertEqual(counts.values, expected)
  }
}

import Dispatch
import Foundation
import XCTest

@testable import KVTensor

/// The kernels' thread pool: every worker runs exactly once per region, regions of any sizes
/// follow each other quickly (helpers spinning or asleep), a region inside a region and two
/// callers at once run their workers on the calling thread instead of deadlocking.
final class ParallelPoolTests: XCTestCase {
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

  func testEveryWorkerRunsOncePerRegion() {
    for workers in [1, 2, 3, 8] {
      let counts = Counts(workers)
      for _ in 0..<2000 { Parallel.region(workers) { counts.add($0) } }
      XCTAssertEqual(counts.values, Array(repeating: 2000, count: workers), "\(workers) workers")
    }
    // After the helpers have gone to sleep.
    usleep(50_000)
    let counts = Counts(4)
    Parallel.region(4) { counts.add($0) }
    XCTAssertEqual(counts.values, [1, 1, 1, 1])
  }

  /// Regions of different sizes back to back: the helpers a small region leaves out must not
  /// read the region's job (the next, larger region writes it meanwhile: ThreadSanitizer
  /// reports that as a race, and a helper late enough would run its share of it twice).
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

  func testNestedRegionsAndConcurrentCallers() {
    let counts = Counts(16)
    Parallel.region(4) { outer in
      Parallel.region(4) { inner in counts.add(outer * 4 + inner) }
    }
    XCTAssertEqual(counts.values, Array(repeating: 1, count: 16))
    let concurrent = Counts(4 * 3)
    DispatchQueue.concurrentPerform(iterations: 4) { caller in
      for _ in 0..<200 { Parallel.region(3) { concurrent.add(caller * 3 + $0) } }
    }
    XCTAssertEqual(concurrent.values, Array(repeating: 200, count: 12))
  }

  func testRowsCoverEveryRowOnce() {
    let counts = Counts(1001)
    Parallel.rows(1001, grain: 7, threads: 3) { range in for r in range { counts.add(r) } }
    XCTAssertEqual(counts.values, Array(repeating: 1, count: 1001))
  }
}

import KVCache
import KVModels
import XCTest

/// SnapKV's pooling option: `pooling=max` takes the largest neighbour's attention where the
/// default averages (kvpress's avg_pool1d with zero padding). Attention mass is non-negative,
/// so max-pooled scores are never below average-pooled ones, and they rank differently.
final class SnapKVPoolingTests: XCTestCase {
  func testMaxPoolingScoresAtLeastTheAverageAndDiffers() throws {
    var rng = SeededRNG(seed: 9)
    let origins = (0..<40).map { _ in TokenOrigin(modality: .text, input: 0) }
    let input = SyntheticInput(
      layers: 1, kvHeads: 2, queryHeads: 4, headDim: 8, origins: origins, rng: &rng)
    func scores(_ options: [String: String]) throws -> [[Float]] {
      let cache = try BudgetedCache(
        layers: 1, kvHeads: 2, headDim: 8, queryHeads: 4, budget: 64, mode: .capped,
        policy: try PolicyCatalog.make("snapkv", options: options), meter: nil)
      try input.feed(0..<40, into: cache)
      return (0..<2).map { cache.currentScores(layer: 0, head: $0) }
    }
    let avg = try scores(["window": "4", "kernel": "5"])
    let max = try scores(["window": "4", "kernel": "5", "pooling": "max"])
    var differs = false
    for h in 0..<2 {
      for (a, m) in zip(avg[h], max[h]) {
        XCTAssertGreaterThanOrEqual(m, a - 1e-7)
        if abs(m - a) > 1e-6 { differs = true }
      }
    }
    XCTAssertTrue(differs)
    XCTAssertEqual(
      "\(try PolicyCatalog.make("snapkv", options: ["pooling": "max"]))",
      "snapkv window=32 kernel=5 pooling=max")
    XCTAssertEqual("\(try PolicyCatalog.make("snapkv", options: [:]))", "snapkv window=32 kernel=5")
    XCTAssertThrowsError(try PolicyCatalog.make("snapkv", options: ["pooling": "median"])) {
      XCTAssertEqual("\($0)", "snapkv: pooling must be one of avg, max, got 'median'")
    }
  }
}

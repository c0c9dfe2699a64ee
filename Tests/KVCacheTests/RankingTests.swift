import KVCache
import XCTest

/// `Ranking.byScore` sorts integer keys; its order must be the comparator's it replaced:
/// highest score first, NaN as −∞, −0 equal to +0, ties to the later candidate.
final class RankingTests: XCTestCase {
  func testByScoreMatchesTheComparatorOrder() {
    func reference(_ scores: [Float]) -> [Int] {
      Array(scores.indices).sorted { a, b in
        let x = scores[a].isNaN ? -Float.infinity : scores[a]
        let y = scores[b].isNaN ? -Float.infinity : scores[b]
        return x != y ? x > y : a > b
      }
    }
    let specials: [Float] = [
      0, -0, .nan, -.nan, .infinity, -.infinity, .leastNonzeroMagnitude,
      -.leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1, -1,
    ]
    var rng = SeededRNG(seed: 21)
    for trial in 0..<200 {
      let n = Int.random(in: 0...300, using: &rng)
      // Few distinct values so that ties are common, specials mixed in.
      let scores: [Float] = (0..<n).map { _ in
        Int.random(in: 0..<4, using: &rng) == 0
          ? specials.randomElement(using: &rng)!
          : Float(Int.random(in: -5...5, using: &rng)) / Float(trial % 7 + 1)
      }
      XCTAssertEqual(Ranking.byScore(scores), reference(scores), "trial \(trial)")
    }
    XCTAssertEqual(Ranking.byScore([-0, 0, .nan, -.infinity]), [1, 0, 3, 2])
  }
}

import KVModels
import XCTest

/// Run-length records give back exactly the per-token lists they were made from, sliced and
/// appended, and cost per run, not per token.
final class TokenRunsTests: XCTestCase {
  /// A deterministic generator (xorshift), so failures repeat.
  struct Gen {
    var state: UInt64
    mutating func next(_ n: Int) -> Int {
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      return Int(state % UInt64(n))
    }
  }

  /// Origins as layouts make them: text runs, token grids (with and without a leading class
  /// token), frames of a clip, and stray ones.
  func origins(_ g: inout Gen) -> [TokenOrigin] {
    var out: [TokenOrigin] = []
    for piece in 0..<(1 + g.next(8)) {
      switch g.next(4) {
      case 0:
        out += Array(
          repeating: TokenOrigin(modality: .text, input: piece, isSystem: g.next(2) == 0),
          count: 1 + g.next(9))
      case 1, 2:
        let rows = 1 + g.next(5)
        let cols = 1 + g.next(5)
        let base = TokenOrigin(
          modality: .video, input: piece, image: g.next(3), tile: g.next(2) == 0 ? nil : 1,
          frame: g.next(4))
        if g.next(2) == 0 { out.append(base) }
        for k in 0..<(rows * cols) {
          var o = base
          o.row = k / cols
          o.col = k % cols
          out.append(o)
        }
      default:
        out.append(
          TokenOrigin(
            modality: .image, input: piece, row: g.next(3) == 0 ? nil : g.next(4),
            col: g.next(4), span: g.next(3)))
      }
    }
    return out
  }

  func ints(_ g: inout Gen) -> [Int] {
    var out: [Int] = []
    for _ in 0..<(1 + g.next(6)) {
      let start = g.next(1000) - 500
      let step = g.next(5) - 2
      for j in 0..<(1 + g.next(7)) { out.append(start + step * j) }
    }
    if g.next(4) == 0 { out += [Int.max, Int.min, Int.max] }
    return out
  }

  func testOriginRunsRoundTripSliceAndAppend() {
    var g = Gen(state: 0x9E37_79B9_7F4A_7C15)
    for _ in 0..<300 {
      let a = origins(&g)
      let b = origins(&g)
      var runs = OriginRuns(a)
      XCTAssertEqual(runs.array, a)
      XCTAssertEqual(runs.count, a.count)
      let lo = g.next(a.count + 1)
      let hi = lo + g.next(a.count - lo + 1)
      XCTAssertEqual(runs.slice(lo..<hi).array, Array(a[lo..<hi]))
      for i in [0, a.count / 2, a.count - 1] { XCTAssertEqual(runs[i], a[i]) }
      runs.append(contentsOf: OriginRuns(b))
      XCTAssertEqual(runs.array, a + b)
      XCTAssertEqual(runs.count, a.count + b.count)
    }
  }

  func testIntRunsRoundTripSliceAndAppend() {
    var g = Gen(state: 12345)
    for _ in 0..<300 {
      let a = ints(&g)
      let b = ints(&g)
      var runs = IntRuns(a)
      XCTAssertEqual(runs.array, a)
      let lo = g.next(a.count + 1)
      let hi = lo + g.next(a.count - lo + 1)
      XCTAssertEqual(runs.slice(lo..<hi).array, Array(a[lo..<hi]))
      runs.append(contentsOf: IntRuns(b))
      XCTAssertEqual(runs.array, a + b)
      XCTAssertEqual(runs.count, a.count + b.count)
    }
  }

  /// A 32×32 token grid is one origin run and one position run: its record does not depend on
  /// its token count.
  func testAGridIsOneRecord() {
    func unit(_ side: Int) -> PromptSegment {
      var origins: [TokenOrigin] = []
      for k in 0..<(side * side) {
        origins.append(
          TokenOrigin(modality: .video, input: 0, image: 0, tile: 0, row: k / side, col: k % side,
            frame: 3))
      }
      return PromptSegment(
        tokens: Array(repeating: 7, count: side * side), origins: origins,
        positions: Array(100..<(100 + side * side)),
        visual: VisualUnit(tokenRows: side, tokenCols: side) { [] })
    }
    XCTAssertEqual(unit(32).recordBytes, unit(2).recordBytes)
    XCTAssertLessThan(unit(32).recordBytes, MemoryLayout<TokenOrigin>.stride * 4)
    XCTAssertEqual(unit(32).tokens, Array(repeating: 7, count: 1024))
  }

  /// Text segments merge in place; M-RoPE axes follow, a plain segment's positions on each.
  func testSegmentsMerge() {
    let o = TokenOrigin(modality: .text, input: 1)
    var a = PromptSegment(
      tokens: [5, 6, 7], origins: [o, o, o], positions: [0, 1, 2], ropeAxes: [[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    a.append(PromptSegment(tokens: [8], origins: [o], positions: [3], ropeAxes: [[3], [3], [3]]))
    a.append(PromptSegment(tokens: [9, 9], origins: [o, o], positions: [9, 10]))
    XCTAssertEqual(a.tokens, [5, 6, 7, 8, 9, 9])
    XCTAssertEqual(a.positions, [0, 1, 2, 3, 9, 10])
    XCTAssertEqual(a.ropeAxes, Array(repeating: [0, 1, 2, 3, 9, 10], count: 3))
    XCTAssertEqual(a.origins, Array(repeating: o, count: 6))
    XCTAssertEqual(a.slice(2..<5).tokens, [7, 8, 9])
    XCTAssertEqual(a.slice(2..<5).ropeAxes?[1], [2, 3, 9])
  }
}

import KVCache
import KVModels
import KVTensor
import XCTest

@testable import KVRepl

/// `cache map` and the origin table over a hand-built cache: a tiny decoder shape (2 layers ×
/// 2 KV heads = 4 slots), text, a 2-tile image and a 4-frame video, with keys whose norms decide
/// exactly which slot keeps which token under K-norm.
final class CacheMapTests: XCTestCase {
  static let layers = 2
  static let kvHeads = 2
  static let headDim = 4

  /// Text 0-5, image 0 (feed 1: 2 tiles of 2×3 patches) 6-17, video 1 (feed 2: 4 frames of
  /// 1×2 patches) 18-25, text 26-27.
  static let origins: [TokenOrigin] = {
    var o = (0..<6).map { _ in TokenOrigin(modality: .text, input: 0) }
    for t in 0..<2 {
      for r in 0..<2 {
        for c in 0..<3 {
          o.append(TokenOrigin(modality: .image, input: 1, image: 0, tile: t, row: r, col: c))
        }
      }
    }
    for f in 0..<4 {
      for c in 0..<2 {
        o.append(TokenOrigin(modality: .video, input: 2, image: 1, row: 0, col: c, frame: f))
      }
    }
    return o + [TokenOrigin(modality: .text, input: 3), TokenOrigin(modality: .text, input: 3)]
  }()

  /// How many of the 4 slots are to keep each position (summing to budget × slots = 14 × 4).
  static let wanted: [Int] =
    [4, 4, 0, 1, 2, 3]  // text
    + [4, 3, 2, 1, 0, 4]  // tile 0: rows (4 3 2) and (1 0 4)
    + [0, 0, 0, 4, 4, 4]  // tile 1
    + [4, 4, 2, 2, 0, 1, 0, 0]  // frames 0-3
    + [3, 0]  // text

  /// A capped K-norm cache of budget 14 fed in blocks of 8, where slot s keeps the positions
  /// dealt to it: each position's wanted count goes round-robin over the slots, so a position
  /// lands in distinct slots and each slot gets 14; kept ones get a small key norm.
  static func makeCache() throws -> BudgetedCache {
    let slots = layers * kvHeads
    var keep = [Set<Int>](repeating: [], count: slots)
    var dealt = 0
    for (p, n) in wanted.enumerated() {
      for _ in 0..<n {
        keep[dealt % slots].insert(p)
        dealt += 1
      }
    }
    XCTAssertEqual(keep.map(\.count), [14, 14, 14, 14])
    let cache = try BudgetedCache(
      layers: layers, kvHeads: kvHeads, headDim: headDim, queryHeads: kvHeads, budget: 14,
      mode: .capped, policy: KNormPolicy(), meter: nil)
    let width = 3 * kvHeads * headDim  // [queries | keys | values]
    for start in stride(from: 0, to: origins.count, by: 8) {
      let range = start..<min(origins.count, start + 8)
      for l in 0..<layers {
        var rows = [Float](repeating: 1, count: range.count * width)
        for (i, p) in range.enumerated() {
          for g in 0..<kvHeads {
            let kept = keep[l * kvHeads + g].contains(p)
            // Distinct norms so that no tie decides: kept ones all below evicted ones.
            rows[i * width + kvHeads * headDim + g * headDim] = (kept ? 1 : 100) + Float(p) / 100
          }
        }
        try rows.withUnsafeBufferPointer { b in
          let base = b.baseAddress!
          try cache.commit(
            layer: l,
            block: KVBlock(
              keys: base + kvHeads * headDim, values: base + 2 * kvHeads * headDim, queries: base,
              ld: width, queryLD: width, count: range.count, positions: Array(range),
              origins: Array(origins[range])))
        }
      }
      try cache.finishBlock()
    }
    return cache
  }

  func testHoldersAreWhatWasDealt() throws {
    let cache = try Self.makeCache()
    XCTAssertEqual(cache.holders(positions: Self.origins.count), Self.wanted)
  }

  func testHeatmapOfImagesFramesAndText() throws {
    let view = RetentionView(cache: try Self.makeCache(), origins: Self.origins)
    XCTAssertEqual(
      CacheViews.map(view),
      [
        "share of the 4 (layer, KV head) slots holding each token",
        "shades: ' ' none  ░ under 1/3  ▒ under 2/3  ▓ under all  █ all",
        "",
        "text: 8 tokens at positions 0-5, 26-27, 1 per cell",
        "│██ ░▒▓▓ │",
        " 0     27",
        "",
        "image 0 (feed 1): 2 tiles of 2×3 patches",
        "tile 0  tile 1",
        "┌───┐   ┌───┐",
        "│█▓▒│   │   │",
        "│░ █│   │███│",
        "└───┘   └───┘",
        "",
        "video 1 (feed 2): 4 frames of 1×2 patches, 1 frame per cell",
        "│█▒░ │",
        " 0  3",
      ])
  }

  func testOriginTable() throws {
    let view = RetentionView(cache: try Self.makeCache(), origins: Self.origins)
    XCTAssertEqual(
      CacheViews.origins(view),
      [
        "origin     fed  held    kept",
        "text         8   4.2   53.1%",
        "image       12   6.5   54.2%",
        "video        8   3.2   40.6%",
        "image 0     12   6.5   54.2%",
        "  tile 0     6   3.5   58.3%",
        "  tile 1     6   3.0   50.0%",
        "video 1      8   3.2   40.6%",
        "  frame 0    2   2.0  100.0%",
        "  frame 1    2   1.0   50.0%",
        "  frame 2    2   0.2   12.5%",
        "  frame 3    2   0.0    0.0%",
      ])
  }

  /// Large inputs are bucketed: a 40×100-patch tile, a 100-frame video and 200 text tokens
  /// all fit in 80 columns, and full and empty retention read as █ and blank.
  func testLargeInputsAreBucketedWithin80Columns() {
    var origins = (0..<200).map { _ in TokenOrigin(modality: .text, input: 0) }
    for r in 0..<40 {
      for c in 0..<100 {
        origins.append(TokenOrigin(modality: .image, input: 1, image: 0, row: r, col: c))
      }
    }
    for f in 0..<100 {
      origins.append(TokenOrigin(modality: .video, input: 2, image: 1, row: 0, col: 0, frame: f))
    }
    // Text: first half held everywhere; image: top half; video: even frames.
    let holders = origins.indices.map { p -> Int in
      let o = origins[p]
      switch o.modality {
      case .text: return p < 100 ? 6 : 0
      case .image: return o.row! < 20 ? 6 : 0
      default: return o.frame! % 2 == 0 ? 6 : 0
      }
    }
    let lines = CacheViews.map(
      RetentionView(layers: 3, kvHeads: 2, origins: origins, holders: holders))
    XCTAssertTrue(lines.allSatisfy { $0.count <= 80 }, lines.joined(separator: "\n"))
    XCTAssertTrue(lines.contains("text: 200 tokens at positions 0-199, 4 per cell"))
    XCTAssertTrue(
      lines.contains(
        "│" + String(repeating: "█", count: 25) + String(repeating: " ", count: 25) + "│"))
    XCTAssertTrue(lines.contains("image 0 (feed 1): 40×100 patches, 2×2 patches per cell"))
    let top = try! XCTUnwrap(lines.firstIndex { $0.hasPrefix("┌") })
    let bottom = try! XCTUnwrap(lines.firstIndex { $0.hasPrefix("└") })
    let grid = Array(lines[(top + 1)..<bottom])
    XCTAssertEqual(grid.count, 20)
    XCTAssertEqual(grid.first, "│" + String(repeating: "█", count: 50) + "│")
    XCTAssertEqual(grid.last, "│" + String(repeating: " ", count: 50) + "│")
    XCTAssertTrue(lines.contains("video 1 (feed 2): 100 frames of 1×1 patches, 2 frames per cell"))
    // Two frames per cell, one held: half the slots, ▒.
    XCTAssertTrue(lines.contains("│" + String(repeating: "▒", count: 50) + "│"))
    XCTAssertTrue(lines.contains(" 0" + String(repeating: " ", count: 47) + "99"))
    XCTAssertTrue(lines.contains(" 0" + String(repeating: " ", count: 46) + "199"))
  }

  func testCompactRangesAndEmptyViews() {
    XCTAssertEqual(CacheViews.compactRanges([7, 0, 1, 2, 5, 8]), ["0-2", "5", "7-8"])
    XCTAssertEqual(CacheViews.compactRanges([]), [])
    XCTAssertEqual(
      CacheViews.map(RetentionView(layers: 1, kvHeads: 1, origins: [], holders: [])),
      ["the cache is empty: nothing fed yet"])
    XCTAssertEqual(CacheViews.log(event: nil, records: []), ["nothing evicted yet"])
  }
}

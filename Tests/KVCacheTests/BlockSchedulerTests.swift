import KVCache
import KVModels
import XCTest

/// Block boundaries follow the input's structure: units whole, text filling, bulk first.
final class BlockSchedulerTests: XCTestCase {
  /// "t5" = 5 text tokens, "u4" = a visual unit of 4 tokens.
  func layout(_ spec: String) -> [PromptSegment] {
    var position = 0
    return spec.split(separator: " ").map { word in
      let n = Int(word.dropFirst())!
      let origin = TokenOrigin(modality: word.first == "u" ? .image : .text, input: 0)
      defer { position += n }
      return PromptSegment(
        tokens: Array(repeating: 7, count: n), origins: Array(repeating: origin, count: n),
        positions: Array(position..<(position + n)),
        visual: word.first == "u" ? VisualUnit(tokenRows: 1, tokenCols: n) { [] } : nil)
    }
  }

  /// Each block as its pieces: "t3" / "u4".
  func shape(_ blocks: [[PromptSegment]]) -> [String] {
    blocks.map {
      $0.map { ($0.visual == nil ? "t" : "u") + String($0.count) }.joined(separator: " ")
    }
  }

  func testTokenBlocksNeverSplitAUnit() {
    let s = BlockScheduler(size: .tokens(8), textChunk: 8)
    XCTAssertEqual(
      shape(s.blocks(layout("t5 u4 t2 u4 u4 t20"))), ["t5", "u4 t2", "u4 u4", "t8", "t8", "t4"])
    // A unit larger than the block is a block of its own.
    XCTAssertEqual(shape(s.blocks(layout("t3 u12 t3"))), ["t3", "u12", "t3"])
  }

  func testUnitBlocksCloseAfterTheirUnits() {
    let one = BlockScheduler(size: .units(1), textChunk: 6)
    XCTAssertEqual(
      shape(one.blocks(layout("t3 u4 t1 u4 t1 u4 t14"))),
      ["t3 u4", "t1 u4", "t1 u4", "t6", "t6", "t2"])
    let two = BlockScheduler(size: .units(2), textChunk: 100)
    XCTAssertEqual(shape(two.blocks(layout("t3 u4 t1 u4 t1 u4 t2"))), ["t3 u4 t1 u4", "t1 u4 t2"])
  }

  func testBulkTakesTheFirstTokensInOneForward() {
    let s = BlockScheduler(size: .units(1), textChunk: 8, bulk: 10)
    // 3 + 4 = 7 < 10, the next unit ends the bulk block at 12 (a unit is never split).
    XCTAssertEqual(shape(s.blocks(layout("t3 u4 u5 u4 t2"))), ["t3 u4 u5", "u4", "t2"])
    let text = BlockScheduler(size: .tokens(4), textChunk: 4, bulk: 10)
    XCTAssertEqual(shape(text.blocks(layout("t12 u4"))), ["t10", "t2", "u4"])
  }

  /// Cut as the segments arrive (a clip laid out frame by frame), each block is given as soon
  /// as its last segment is pushed, and the blocks are those of the whole input.
  func testCutterGivesEachBlockWhenItCloses() {
    for (size, bulk) in [(BlockSize.units(1), nil), (.units(2), nil), (.tokens(6), nil),
                         (.units(1), 9 as Int?)] {
      let scheduler = BlockScheduler(size: size, textChunk: 5, bulk: bulk)
      let segments = layout("t3 u4 t1 u4 t2 u4 t1 u4 t7")
      var cutter = BlockCutter(scheduler)
      var blocks: [[PromptSegment]] = []
      for (i, segment) in segments.enumerated() {
        let closed = cutter.push(segment)
        // A closed block ends at or before the segment just pushed: none waits for later input.
        for block in closed {
          XCTAssertLessThanOrEqual(block.last!.positions.last!, segment.positions.last!)
        }
        blocks += closed
        if size == .units(1), bulk == nil, segment.visual != nil {
          XCTAssertEqual(closed.count, 1, "unit \(i) closes its block")
        }
      }
      blocks += cutter.finish()
      XCTAssertEqual(shape(blocks), shape(scheduler.blocks(segments)), "\(size)")
      XCTAssertEqual(blocks.flatMap { $0.flatMap(\.positions) }, Array(0..<30))
    }
  }

  func testEveryTokenOnceInOrder() {
    for size in [BlockSize.tokens(1), .tokens(5), .units(1), .units(3)] {
      for bulk in [nil, 7] {
        let segments = layout("t9 u4 t1 u6 u6 t3 u2 t11")
        let blocks = BlockScheduler(size: size, textChunk: 5, bulk: bulk).blocks(segments)
        XCTAssertEqual(
          blocks.flatMap { $0.flatMap(\.positions) }, Array(0..<42),
          "\(size) \(String(describing: bulk))")
      }
    }
  }

  func testParsingBlockSizes() {
    XCTAssertEqual(BlockSize("256"), .tokens(256))
    XCTAssertEqual(BlockSize("tile"), .units(1))
    XCTAssertEqual(BlockSize("frame"), .units(1))
    XCTAssertEqual(BlockSize("4frames"), .units(4))
    XCTAssertEqual(BlockSize("2tiles"), .units(2))
    XCTAssertNil(BlockSize("0"))
    XCTAssertNil(BlockSize("2tile"))
    XCTAssertNil(BlockSize("frames"))
    XCTAssertNil(BlockSize("big"))
    // Echoed as typed; the word does not change what a block is.
    for typed in ["256", "tile", "frame", "unit", "4frames", "2tiles", "3units"] {
      XCTAssertEqual(BlockSize(typed)?.description, typed)
    }
    XCTAssertEqual(BlockSize("FRAME")?.description, "frame")
    XCTAssertEqual(BlockSize("1frame")?.description, "frame")
    XCTAssertEqual(BlockSize("frame"), BlockSize("tile"))
    XCTAssertEqual(Set([BlockSize("frame")!, BlockSize("tile")!, .units(1)]).count, 1)
    XCTAssertNotEqual(BlockSize("2frames"), BlockSize("frame"))
  }
}

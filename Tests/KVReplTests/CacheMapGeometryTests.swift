import Foundation
import KVEngine
import KVTasks
import XCTest

@testable import KVRepl

/// `cache map` in the input's geometry on the embedded model: a needle image's 8×8 tiles as
/// eight bands of eight, the global image after, the needle's tiles marked `*` (the tiles the
/// oracle's targets fall in), and a clip's target frames marked `^` in the timeline.
final class CacheMapGeometryTests: XCTestCase {
  func mapLines(_ repl: Repl, _ out: CaptureSink) -> [String] {
    CaptureSink.lines(output(of: "cache map", in: repl, out))
  }

  func testNeedleImageTilesOnTheGridWithTheTargetMarked() throws {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    XCTAssertEqual(repl.run(line: "feed synthetic needle-image seed=3"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleImage, seed: 3)
    let targets = try repl.session.syntheticTargets(sample, at: repl.syntheticFed!.index)
    let targetTiles = Set(targets.keys.map { Int($0.tile) })
    let lines = mapLines(repl, out)
    let title = try XCTUnwrap(lines.first { $0.hasPrefix("image 0 (feed 0): ") })
    XCTAssertTrue(title.contains("8×8 tiles + a global image"), title)
    // The label lines: a band per row of tiles, 8 labels each, then the global image.
    let start = lines.firstIndex(of: title)!
    let labels = lines[start...].filter { l in
      let words = l.split(separator: " ")
      return !words.isEmpty && words.allSatisfy { w in
        w.allSatisfy { $0.isNumber || $0 == "*" } || w.hasPrefix("global")
      }
    }
    XCTAssertEqual(labels.count, 9, lines.joined(separator: "\n"))
    for (r, line) in labels.prefix(8).enumerated() {
      let words = line.split(separator: " ").map(String.init)
      XCTAssertEqual(words.map { $0.replacingOccurrences(of: "*", with: "") }, (0..<8).map { "\(r * 8 + $0)" })
      for w in words {
        let tile = Int(w.replacingOccurrences(of: "*", with: ""))!
        XCTAssertEqual(w.hasSuffix("*"), targetTiles.contains(tile), "tile \(tile)")
      }
    }
    XCTAssertEqual(labels[8].hasSuffix("*"), targetTiles.contains(64))
    let target = try XCTUnwrap(lines.first { $0.hasPrefix("target (needle-image seed=3") })
    XCTAssertTrue(target.contains("\(targets.keys.count) tokens") || targets.keys.count == 1, target)
    XCTAssertTrue(target.hasSuffix("100.0% of their slots hold them"), "the full cache holds all: \(target)")
  }

  func testClipTargetFramesMarkedInTheTimeline() throws {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    XCTAssertEqual(repl.run(line: "feed synthetic needle-video seed=2"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleVideo, seed: 2)
    let span = try XCTUnwrap(sample.frameSpan)
    let lines = mapLines(repl, out)
    let at = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("video 0 (feed 0): 32 frames") })
    let marks = Array(lines[at + 2].dropFirst())  // under the timeline's cells, one per frame
    let marked = Set(marks.indices.filter { marks[$0] == "^" })
    let targets = try repl.session.syntheticTargets(sample, at: repl.syntheticFed!.index)
    XCTAssertEqual(marked, Set(targets.keys.map { Int($0.frame) }))
    XCTAssertTrue(marked.isSubset(of: Set(span)), "\(marked) in \(span)")
    XCTAssertTrue(lines.contains { $0.hasPrefix("target (needle-video seed=2): ") })
  }
}

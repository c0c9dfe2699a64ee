import Foundation
import KVEngine
import KVModels
import KVTasks
import XCTest

@testable import KVRepl

/// Every view on the largest inputs the embedded model takes: each synthetic task at its
/// largest size, and every photo of data/images (when `scripts/setup.sh` has fetched them).
/// The PNG views lay out a grid per tile or frame and a run of tokens without a patch position;
/// inputs of many tiles, frames or such tokens once drew past the canvas and trapped. Each view
/// must print, and each PNG must decode at the canvas width.
final class ViewSizeTests: XCTestCase {
  static let photos = repositoryRoot + "/data/images"

  /// A REPL whose bare `load` loads the embedded model (weights/kvlab-shapes).
  func embedded() -> (Repl, CaptureSink) { makeEmbeddedRepl(self) }

  /// Feeds `feed` (after `setup`), then runs every view and checks the PNGs.
  func checkViews(_ feed: String, setup: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
    let (repl, out) = embedded()
    for l in ["load"] + setup + [feed] {
      XCTAssertEqual(repl.run(line: l), .ok, "\(l)\n\(out.text)", file: file, line: line)
    }
    for view in ["cache", "cache map", "show tokens", "cache map out=map.png", "mem plot out=mem.png"] {
      XCTAssertFalse(
        output(of: view, in: repl, out, file: file, line: line).isEmpty,
        "\(feed): \(view) printed nothing", file: file, line: line)
    }
    for png in ["map.png", "mem.png"] {
      let image = try ImageDecoder.decode(path: repl.workingDirectory! + "/" + png)
      XCTAssertEqual(image.width, PNGViews.width, "\(feed): \(png)", file: file, line: line)
      XCTAssertGreaterThan(image.height, 2 * PNGViews.margin, "\(feed): \(png)", file: file, line: line)
    }
  }

  /// The largest side of each task, the longest clip the model's context takes, and a clip of
  /// the largest frames; each with the full cache and with a budget.
  func testSyntheticTasksAtTheirLargestSizes() throws {
    let feeds = [
      "feed synthetic needle-image size=2048 seed=5",
      "feed synthetic needle-image seed=5",
      "feed synthetic needle-video frames=107",
      "feed synthetic needle-video frames=33",
      "feed synthetic needle-video size=1024 frames=12",
      "feed synthetic count size=1024",
      "feed synthetic attribute size=1024",
    ]
    for feed in feeds {
      try checkViews(feed)
      try checkViews(feed, setup: ["budget 256 tokens", "prefill mode=capped block=tile"])
    }
    // A clip longer than the context is refused before any of it is fed: the views show the
    // empty cache.
    let (repl, out) = embedded()
    XCTAssertEqual(repl.run(line: "load"), .ok, out.text)
    XCTAssertEqual(repl.run(line: "feed synthetic needle-video frames=4096"), .failed)
    XCTAssertEqual(repl.session.context.count, 0)
    XCTAssertEqual(repl.run(line: "cache map"), .ok, out.text)
    XCTAssertEqual(out.lines.last, "the cache is empty: nothing fed yet")
    XCTAssertEqual(repl.run(line: "cache map out=empty.png"), .failed)
    XCTAssertEqual(out.lines.last, "error: cache map: the cache is empty: nothing fed yet")
  }

  /// Every photo the feed accepts, as `feed image` lays it out (up to 65 tiles).
  func testEveryPhoto() throws {
    let files = (try? FileManager.default.contentsOfDirectory(atPath: Self.photos)) ?? []
    let photos = files.filter {
      ["png", "jpg", "jpeg", "ppm", "pnm"].contains(($0 as NSString).pathExtension.lowercased())
    }.sorted()
    try XCTSkipIf(photos.isEmpty, "no photos in \(Self.photos) (scripts/setup.sh fetches them)")
    for name in photos {
      try checkViews("feed image \(Repl.quote(Self.photos + "/" + name))")
    }
  }

  /// The layout on its own: a grid or a run of cells of any size fits the canvas.
  func testGridsOfAnySizeFitTheCanvas() {
    let share = Share(held: 1, total: 2)
    for (rows, cols) in [(1, 1), (1, 5000), (5000, 1), (300, 300), (2000, 3000)] {
      let shares = [[Share]](repeating: [Share](repeating: share, count: cols), count: rows)
      let panel = PNGViews.grid("tile", shares, cell: 24)
      XCTAssertLessThanOrEqual(panel.width, PNGViews.maxPanelWidth, "\(rows)×\(cols)")
      XCTAssertLessThanOrEqual(panel.height, PNGViews.maxPanelWidth + Canvas.lineHeight, "\(rows)×\(cols)")
      let fitted = PNGViews.fit(shares, cell: 24, limit: PNGViews.maxPanelWidth - 2)
      XCTAssertEqual(
        fitted.shares.joined().reduce(Share(held: 0, total: 0), +).total, rows * cols * 2,
        "merging keeps every share")
      _ = PNGViews.flow([panel, panel])
    }
    for n in [0, 1, 95, 96, 97, 10_000, 1_000_000] {
      let (rows, per) = PNGViews.wrap(
        Array(repeating: share, count: n), cell: 8, maxRows: 8)
      XCTAssertLessThanOrEqual(rows.count, 8)
      XCTAssertEqual(rows.joined().reduce(Share(held: 0, total: 0), +).total, n * 2)
      XCTAssertLessThanOrEqual(rows.map(\.count).max() ?? 0, (PNGViews.maxPanelWidth - 2) / 8)
      XCTAssertGreaterThanOrEqual(per, 1)
    }
    // Drawing off the canvas draws nothing and never traps.
    var canvas = Canvas(width: 10, height: 10)
    canvas.fill(x: 20, y: 20, w: 5, h: 5, (0, 0, 0))
    canvas.fill(x: -20, y: -20, w: 5, h: 5, (0, 0, 0))
    canvas.fill(x: 2, y: 2, w: -5, h: 3, (0, 0, 0))
    canvas.frame(x: 8, y: 8, w: 40, h: 40, (0, 0, 0))
    canvas.text("TEXT PAST THE EDGE", x: 5, y: 5)
    XCTAssertEqual(canvas.pixels.count, 300)
  }
}

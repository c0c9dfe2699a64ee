import Foundation
import KVCache
import KVModels
import XCTest

@testable import KVEngine

@testable import KVRepl

/// `cache map out=FILE.png` and `mem plot out=FILE.png` on the tiny Idefics3 fixture: the files
/// are PNGs of the documented size whose colours are the retention shares and the plotted
/// series, and bad requests are one-line errors that write nothing.
final class PNGViewTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  func colors(_ image: RGBImage) -> Set<[UInt8]> {
    Set(stride(from: 0, to: image.pixels.count, by: 3).map { Array(image.pixels[$0..<$0 + 3]) })
  }

  func rgb(_ c: Canvas.Color) -> [UInt8] { [c.r, c.g, c.b] }

  /// Loads the model, optionally sets a budget, feeds a 7-tile image and a 4-frame clip.
  func fed(budget: Bool) -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    var lines = ["load \(Self.vlm)/idefics3/model"]
    if budget {
      lines += ["policy keydiff", "budget 24 tokens", "prefill mode=capped block=tile"]
    }
    lines += [
      "feed image \(Self.vlm)/images/img_70x40.png", "feed frames \(Self.vlm)/images/clip",
    ]
    for l in lines { XCTAssertEqual(r.run(line: l), .ok, l + "\n" + out.text) }
    return (r, out)
  }

  func testRetentionMapColoursAreTheShares() throws {
    let dir = temporaryFolder(self)
    for budget in [false, true] {
      let (r, out) = fed(budget: budget)
      let file = dir + "/map-\(budget).png"
      let printed = output(of: "cache map out=\(file)", in: r, out)
      XCTAssertTrue(printed.hasPrefix("wrote \(file): 800×"), printed)
      let image = try ImageDecoder.decode(path: file)
      XCTAssertEqual(image.width, 800)
      XCTAssertGreaterThan(image.height, 150)
      let seen = colors(image)
      // Every share of every patch and token is drawn in its viridis colour.
      let b = r.session.budgetedCache
      let view =
        b.map { RetentionView(cache: $0, origins: r.session.contextOrigins) }
        ?? RetentionView(
          layers: 2, kvHeads: 2, origins: r.session.contextOrigins,
          holders: Array(repeating: 4, count: r.session.contextOrigins.count))
      let shares = Set(view.holders.map { Double($0) / Double(view.slots) })
      for s in shares {
        XCTAssertTrue(seen.contains(rgb(Canvas.viridis(s))), "share \(s) drawn (budget \(budget))")
      }
      if budget {
        XCTAssertTrue(shares.contains(0), "a 24-token budget evicts some patches")
        XCTAssertGreaterThan(shares.count, 2)
      } else {
        XCTAssertEqual(shares, [1], "the full cache holds everything")
        // The legend bar runs through every shade, but no cell is drawn in "none".
        let none = rgb(Canvas.viridis(0))
        let count = stride(from: 0, to: image.pixels.count, by: 3).filter {
          Array(image.pixels[$0..<$0 + 3]) == none
        }.count
        XCTAssertLessThanOrEqual(count, 12, "only the legend's first column is 0%")
      }
    }
    // The PNG is deterministic for a given cache.
    let (r, _) = fed(budget: true)
    XCTAssertEqual(r.run(line: "cache map out=\(dir)/again.png"), .ok)
    XCTAssertEqual(
      FileManager.default.contents(atPath: dir + "/again.png"),
      FileManager.default.contents(atPath: dir + "/map-true.png"))
  }

  func testMemoryPlotDrawsTheTraceAndTheBudget() throws {
    let dir = temporaryFolder(self)
    let (r, out) = fed(budget: true)
    let trace = r.session.memoryTrace
    XCTAssertEqual(trace.count, 13, "one sample per block: 7 tiles + 4 frames, with their text")
    XCTAssertTrue(trace.allSatisfy { $0.kvPeak <= 24 * 512 }, "the capped KV peak per block")
    XCTAssertEqual(trace.last?.contextTokens, r.session.context.count)
    XCTAssertTrue(trace.contains { $0.visionPeak > 0 }, "vision runs per tile block")
    XCTAssertEqual(
      output(of: "mem plot out=\(dir)/mem.png", in: r, out),
      "wrote \(dir)/mem.png: 800×536 PNG, 13 blocks, kv peak 12.00 KiB (budget 12.00 KiB)\n")
    let image = try ImageDecoder.decode(path: dir + "/mem.png")
    XCTAssertEqual(image.width, 800)
    XCTAssertEqual(image.height, 536)
    let seen = colors(image)
    for c in [PNGViews.blue, PNGViews.purple, PNGViews.orange, PNGViews.green, PNGViews.red] {
      XCTAssertTrue(seen.contains(rgb(c)), "series colour \(c) drawn")
    }
    // mem reset starts a new trace.
    XCTAssertEqual(r.run(line: "mem reset"), .ok)
    XCTAssertTrue(r.session.memoryTrace.isEmpty)
  }

  /// Counts of each colour inside the plot frames (left of the legends, which show every
  /// colour whatever is drawn).
  func plotColours(_ c: Canvas) -> [[UInt8]: Int] {
    var counts: [[UInt8]: Int] = [:]
    let x0 = PNGViews.margin + PNGViews.plotLeft
    for y in 0..<c.height {
      for x in x0..<(x0 + PNGViews.plotWidth) {
        let i = (y * c.width + x) * 3
        counts[Array(c.pixels[i..<i + 3]), default: 0] += 1
      }
    }
    return counts
  }

  /// In capped mode the K/V held and its peak sit on the budget: both series stay visible over
  /// the budget line (once drawn on top of them, hiding them), and the budget shows where the
  /// series are below it.
  func testSeriesOnTheBudgetLineStayVisible() {
    let budget = 1 << 20
    func trace(_ blocks: Int, kv: Int, peak: Int) -> [MemorySample] {
      (0..<blocks).map { i in
        MemorySample(
          contextTokens: 256 * (i + 1), kv: kv, kvPeak: peak, activationsPeak: budget / 4,
          visionPeak: 0, rss: nil)
      }
    }
    for blocks in [1, 2, 3, 21, 300] {
      let capped = plotColours(
        PNGViews.memoryPlot(trace(blocks, kv: budget, peak: budget), budgetBytes: budget))
      let blue = capped[rgb(PNGViews.blue)] ?? 0
      let purple = capped[rgb(PNGViews.purple)] ?? 0
      XCTAssertGreaterThan(purple, 0, "\(blocks) blocks: the K/V peak is drawn over the budget")
      XCTAssertGreaterThan(blue, 0, "\(blocks) blocks: the K/V held shows around the peak")
      XCTAssertGreaterThan(blue, purple / 2, "\(blocks) blocks: the K/V held is not a sliver")
      let under = plotColours(
        PNGViews.memoryPlot(trace(blocks, kv: budget / 2, peak: budget * 3 / 4), budgetBytes: budget))
      XCTAssertGreaterThan(under[rgb(PNGViews.red)] ?? 0, 0, "\(blocks) blocks: the budget line shows")
      XCTAssertGreaterThan(under[rgb(PNGViews.blue)] ?? 0, 0)
      XCTAssertGreaterThan(under[rgb(PNGViews.purple)] ?? 0, 0)
    }
  }

  func testBadRequestsWriteNothing() throws {
    let dir = temporaryFolder(self)
    let (r, out) = makeRepl()
    XCTAssertEqual(r.run(line: "load \(Self.vlm)/idefics3/model"), .ok)
    for (line, message) in [
      ("cache map out=\(dir)/m.png", "error: cache map: the cache is empty: nothing fed yet"),
      (
        "mem plot out=\(dir)/p.png",
        "error: mem plot: no prefill blocks since the model was loaded or the last 'mem reset': feed something first"
      ),
      ("mem plot", "error: mem plot: out=FILE.png is needed here (a notebook shows the plot inline)"),
      (
        "cache map out=\(dir)/m.txt",
        "error: cache map: out must name a .png file, got '\(dir)/m.txt'"
      ),
    ] {
      XCTAssertEqual(output(of: line, in: r, out, expecting: .failed), message + "\n")
    }
    XCTAssertEqual(r.run(line: #"feed text "hello""#), .ok)
    XCTAssertEqual(
      output(of: "cache map out=\(dir)/no/such/m.png", in: r, out, expecting: .failed),
      "error: cache map: \(dir)/no/such/m.png: no such folder '\(dir)/no/such'\n")
    // A file in the way is replaced whole; no temporary is left behind.
    XCTAssertTrue(
      FileManager.default.createFile(atPath: dir + "/m.png", contents: Data("old".utf8)))
    XCTAssertEqual(r.run(line: "cache map out=\(dir)/m.png"), .ok)
    XCTAssertEqual(try ImageDecoder.decode(path: dir + "/m.png").width, 800)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.png"])
  }
}

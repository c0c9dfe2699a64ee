import Foundation
import KVCache
import KVEngine
import KVModels

/// The PNG forms of the views (`cache map out=FILE.png`, `mem plot out=FILE.png`): rasters drawn
/// on a `Canvas`, laid out as a flow of labelled panels, deterministic for a given cache.
enum PNGViews {
  static let width = 800
  static let margin = 16
  static let ink: Canvas.Color = (30, 30, 30)
  static let grey: Canvas.Color = (120, 120, 120)
  static let empty: Canvas.Color = (225, 225, 225)

  /// A panel of the flow: its size and how to draw it at a position.
  struct Panel {
    var width: Int
    var height: Int
    /// Starts a new row of the flow (headings).
    var breaksLine = false
    var draw: (inout Canvas, Int, Int) -> Void
  }

  /// Lays `panels` out left to right, 12 pixels apart, wrapping at the canvas width, and draws
  /// them on a canvas just tall enough.
  static func flow(_ panels: [Panel]) -> Canvas {
    var placed: [(Panel, Int, Int)] = []
    var x = margin
    var y = margin
    var rowHeight = 0
    for p in panels {
      if p.breaksLine || (x > margin && x + p.width > width - margin) {
        y += rowHeight + (rowHeight > 0 ? 8 : 0)
        x = margin
        rowHeight = 0
      }
      placed.append((p, x, y))
      x += p.width + 12
      rowHeight = max(rowHeight, p.height)
      if p.breaksLine {
        y += rowHeight + 4
        x = margin
        rowHeight = 0
      }
    }
    var canvas = Canvas(width: width, height: y + rowHeight + margin)
    for (p, px, py) in placed { p.draw(&canvas, px, py) }
    return canvas
  }

  /// Encodes `canvas` and writes it atomically to `path`.
  /// The canvas as PNG bytes; errors name `what` (the file, or the view shown inline).
  static func png(_ canvas: Canvas, what: String, command: String) throws -> [UInt8] {
    do { return [UInt8](try PNGEncoder.encode(canvas.image)) } catch let e as ImageError {
      throw ReplError(command, "\(what): \(e.message)")
    }
  }

  static func write(_ canvas: Canvas, to path: String, typed: String, command: String) throws {
    let data = try png(canvas, what: typed, command: command)
    let folder = (path as NSString).deletingLastPathComponent
    var isDirectory: ObjCBool = false
    let dir = folder.isEmpty ? "." : folder
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory),
      isDirectory.boolValue
    else {
      throw ReplError(command, "\(typed): no such folder '\((typed as NSString).deletingLastPathComponent)'")
    }
    try AtomicFile.replace(path, with: data, command: command, displayPath: typed)
  }

  static func heading(_ text: String, color: Canvas.Color = ink) -> Panel {
    Panel(width: width - 2 * margin, height: Canvas.lineHeight, breaksLine: true) { c, x, y in
      c.text(text, x: x, y: y, color)
    }
  }

  static func color(_ s: Share) -> Canvas.Color {
    s.total == 0 ? empty : Canvas.viridis(Double(s.held) / Double(s.total))
  }

  /// The widest a panel may be: the canvas less its margins (the flow wraps before any panel
  /// that would pass the right margin, so one this wide always fits a row of its own).
  static var maxPanelWidth: Int { width - 2 * margin }

  /// `shares` fitted into at most `limit` cells a side at `cell` pixels each: smaller cells
  /// (down to one pixel) first, then neighbouring rows or columns merged into one cell. Returns
  /// the grid to draw and its cell size.
  static func fit(_ shares: [[Share]], cell: Int, limit: Int) -> (shares: [[Share]], cell: Int) {
    let rows = shares.count
    let cols = shares.map(\.count).max() ?? 0
    let side = max(rows, cols, 1)
    let cell = max(1, min(cell, limit / side))
    let maxCells = max(1, limit / cell)
    let perRow = (rows + maxCells - 1) / maxCells
    let perCol = (cols + maxCells - 1) / maxCells
    guard perRow > 1 || perCol > 1 else { return (shares, cell) }
    let merged = stride(from: 0, to: rows, by: max(1, perRow)).map { r0 in
      stride(from: 0, to: cols, by: max(1, perCol)).map { c0 in
        var s = Share(held: 0, total: 0)
        for r in r0..<min(rows, r0 + perRow) {
          for k in c0..<min(shares[r].count, c0 + perCol) { s = s + shares[r][k] }
        }
        return s
      }
    }
    return (merged, cell)
  }

  /// A run of cells wrapped into rows of a panel's width, at most `maxRows` rows: beyond that,
  /// neighbouring shares are merged, `per` to a cell. The last row is padded with "no token".
  static func wrap(_ shares: [Share], cell: Int, maxRows: Int) -> (rows: [[Share]], per: Int) {
    let perRow = max(1, (maxPanelWidth - 2) / cell)
    let per = max(1, (shares.count + maxRows * perRow - 1) / (maxRows * perRow))
    let cells = stride(from: 0, to: shares.count, by: per).map {
      shares[$0..<min(shares.count, $0 + per)].reduce(Share(held: 0, total: 0), +)
    }
    var rows = stride(from: 0, to: cells.count, by: perRow).map {
      Array(cells[$0..<min(cells.count, $0 + perRow)])
    }
    if rows.count > 1, let last = rows.last, last.count < perRow {
      rows[rows.count - 1] = last + Array(repeating: Share(held: 0, total: 0), count: perRow - last.count)
    }
    return (rows, per)
  }

  /// A labelled grid of cells (`shares[row][col]`), each `cell` pixels square; a grid too big
  /// for the canvas gets smaller cells, then merged ones (`fit`).
  static func grid(_ label: String, _ shares: [[Share]], cell: Int, marked: Set<Int> = []) -> Panel {
    let given = shares
    let (shares, cell) = fit(shares, cell: cell, limit: maxPanelWidth - 2)
    // Marked cells (a synthetic target, row · cols + col) are outlined in red where the grid
    // was not merged and cells are big enough to show it.
    let outline = shares.count == given.count && cell >= 4 ? marked : []
    let givenCols = given.map(\.count).max() ?? 0
    let rows = shares.count
    let cols = shares.map(\.count).max() ?? 0
    let w = min(maxPanelWidth, max(cols * cell + 2, Canvas.textWidth(label)))
    return Panel(width: w, height: Canvas.lineHeight + rows * cell + 2) { c, x, y in
      c.text(label, x: x, y: y, grey)
      let top = y + Canvas.lineHeight
      c.frame(x: x, y: top, w: cols * cell + 2, h: rows * cell + 2, grey)
      for (r, row) in shares.enumerated() {
        for (k, s) in row.enumerated() {
          c.fill(x: x + 1 + k * cell, y: top + 1 + r * cell, w: cell, h: cell, color(s))
        }
      }
      for m in outline.sorted() where givenCols > 0 {
        c.frame(x: x + 1 + m % givenCols * cell, y: top + 1 + m / givenCols * cell, w: cell, h: cell, red)
      }
    }
  }

  /// Ends a row of the flow (tiles on their image's grid).
  static let lineBreak = Panel(width: 0, height: 0, breaksLine: true) { _, _, _ in }

  // MARK: cache map

  /// The retention map: per image a patch grid per tile, per video a patch grid per frame (or
  /// one cell per frame without patch positions), per text run a strip of tokens; the colour of
  /// a cell is the share of (layer, KV head) slots that hold its tokens, on viridis.
  static func retentionMap(_ view: RetentionView) -> Canvas {
    var panels = [
      heading(
        "KV cache retention: share of the \(view.slots) (layer, KV head) slots holding each token")
    ]
    for group in view.groups {
      switch group.key.modality {
      case .text, .generated:
        panels += strip(view, group)
      case .image, .video:
        panels += grids(view, group)
      }
    }
    panels.append(heading(""))
    panels.append(legend())
    return flow(panels)
  }

  static func strip(_ view: RetentionView, _ group: RetentionView.Group) -> [Panel] {
    let p = group.positions
    let cell = 4
    let perRow = (width - 2 * margin - 2) / cell
    // At most 4 rows of cells: tokens are bucketed beyond that.
    let per = max(1, (p.count + 4 * perRow - 1) / (4 * perRow))
    let shares = stride(from: 0, to: p.count, by: per).map {
      view.share(Array(p[$0..<min(p.count, $0 + per)]))
    }
    let rows = stride(from: 0, to: shares.count, by: perRow).map {
      Array(shares[$0..<min(shares.count, $0 + perRow)])
    }
    let name = group.key.modality == .text ? "text" : "generated"
    let title = "\(name): \(p.count) tokens, positions \(p.first!)-\(p.last!), \(per) per cell"
    return [
      heading(title),
      Panel(width: perRow * cell + 2, height: rows.count * 12 + 2) { c, x, y in
        for (r, row) in rows.enumerated() {
          for (k, s) in row.enumerated() {
            c.fill(x: x + 1 + k * cell, y: y + 1 + r * 12, w: cell, h: 10, color(s))
          }
        }
      },
    ]
  }

  /// One grid per tile (images) or frame (videos).
  static func grids(_ view: RetentionView, _ group: RetentionView.Group) -> [Panel] {
    let video = group.key.modality == .video
    var parts: [Int: [Int]] = [:]
    var loose: [Int] = []
    for p in group.positions {
      let o = view.origins[p]
      guard o.row != nil, o.col != nil else {
        loose.append(p)
        continue
      }
      parts[(video ? o.frame : o.tile) ?? 0, default: []].append(p)
    }
    let keys = parts.keys.sorted()
    let kind = video ? "video" : "image"
    var title = "\(kind) \(group.key.image) (feed \(group.key.input))"
    if !keys.isEmpty {
      title += ": \(keys.count) \(video ? "frame" : "tile")\(keys.count == 1 ? "" : "s")"
    }
    if !loose.isEmpty { title += ", \(loose.count) tokens without a patch position" }
    var panels = [heading(title)]
    let sizes = keys.map { CacheViews.gridSize(view, parts[$0]!)! }
    let side = sizes.map { max($0.rows, $0.cols) }.max() ?? 1
    // Tiles on the image's grid: a row of panels per row of tiles, the global image after.
    let across = video ? nil : view.tileGrids[group.key.image].flatMap { g in
      keys == Array(0...(g.rows * g.cols)) ? g : nil
    }
    // Cells of 4 to 24 pixels: a tile or frame grid is at most about 200 pixels across, and a
    // row of tiles fits the canvas.
    var cell = max(4, min(24, 200 / side))
    if let g = across { cell = max(1, min(cell, ((maxPanelWidth + 12) / g.cols - 14) / side)) }
    for (i, (k, size)) in zip(keys, sizes).enumerated() {
      var shares = [[Share]](
        repeating: [Share](repeating: Share(held: 0, total: 0), count: size.cols), count: size.rows)
      var marked: Set<Int> = []
      for p in parts[k]! {
        let o = view.origins[p]
        shares[o.row!][o.col!] = shares[o.row!][o.col!] + view.share([p])
        if view.targets.contains(p) { marked.insert(o.row! * size.cols + o.col!) }
      }
      if let g = across, i % g.cols == 0 { panels.append(lineBreak) }
      let label =
        across.map { g in k == g.rows * g.cols ? "global" : "\(k / g.cols),\(k % g.cols)" }
        ?? "\(video ? "frame" : "tile") \(k)"
      panels.append(grid(label, shares, cell: cell, marked: marked))
    }
    if !loose.isEmpty {
      // One cell per token, wrapped at the canvas width (8 rows at most, then merged).
      let (rows, per) = wrap(loose.map { view.share([$0]) }, cell: 8, maxRows: 8)
      panels.append(grid(per == 1 ? "other" : "other, \(per) per cell", rows, cell: 8))
    }
    return panels
  }

  static func legend() -> Panel {
    let barWidth = 256
    return Panel(width: barWidth + 220, height: 24) { c, x, y in
      for i in 0..<barWidth {
        c.fill(x: x + i, y: y, w: 1, h: 12, Canvas.viridis(Double(i) / Double(barWidth - 1)))
      }
      c.frame(x: x - 1, y: y - 1, w: barWidth + 2, h: 14, grey)
      c.text("0%", x: x, y: y + 15, grey)
      c.text("100% of slots", x: x + barWidth - Canvas.textWidth("100% of slots"), y: y + 15, grey)
      c.fill(x: x + barWidth + 16, y: y, w: 12, h: 12, empty)
      c.text("no token", x: x + barWidth + 32, y: y + 2, grey)
    }
  }
}

// MARK: memory plot

extension PNGViews {
  struct Series {
    var name: String
    var color: Canvas.Color
    var values: [Double]
    /// A reference line (the budget): drawn first, dashed and thin, so the series that run
    /// along it stay visible on top.
    var dashed = false
    /// Line width in pixels. A series that may coincide with a later one (the K/V held runs on
    /// the K/V peak in capped mode) is wider, so that it shows on both sides of the one drawn
    /// over it.
    var thickness = 2
  }

  /// Where a plot's frame starts, and its width, from the panel's left edge.
  static let plotLeft = 56
  static let plotWidth = 560

  static let blue: Canvas.Color = (31, 119, 180)
  static let orange: Canvas.Color = (255, 127, 14)
  static let green: Canvas.Color = (44, 160, 44)
  static let red: Canvas.Color = (214, 39, 40)
  static let purple: Canvas.Color = (148, 103, 189)

  /// Memory over the prefill blocks: the meter's KV (held after each block and the peak while it
  /// ran), activation and vision peaks against the budget line; below, the process's RSS.
  static func memoryPlot(_ trace: [MemorySample], budgetBytes: Int?) -> Canvas {
    let mib = { (b: Int) in Double(b) / 1_048_576 }
    var meter = [
      Series(name: "kv held", color: blue, values: trace.map { mib($0.kv) }, thickness: 6),
      Series(name: "kv peak", color: purple, values: trace.map { mib($0.kvPeak) }),
      Series(
        name: "activations peak", color: orange, values: trace.map { mib($0.activationsPeak) }),
    ]
    if trace.contains(where: { $0.visionPeak > 0 }) {
      meter.append(
        Series(name: "vision peak", color: green, values: trace.map { mib($0.visionPeak) }))
    }
    if let budgetBytes {
      meter.append(
        Series(
          name: "budget", color: red,
          values: Array(repeating: mib(budgetBytes), count: trace.count),
          dashed: true))
    }
    var panels = [
      heading(
        "memory over \(trace.reduce(0) { $0 + $1.blocks }) prefill blocks (context \(trace.first?.contextTokens ?? 0) to \(trace.last?.contextTokens ?? 0) tokens)"
      ),
      plot("meter (MiB)", meter, fromZero: true),
    ]
    let rss = trace.compactMap(\.rss)
    if rss.count == trace.count {
      panels.append(heading(""))
      panels.append(
        plot(
          "process RSS (MiB)", [Series(name: "rss", color: ink, values: rss.map(mib))],
          fromZero: false))
    }
    return flow(panels)
  }

  /// A line plot over blocks 1...n with a y axis of round ticks and a legend on the right.
  static func plot(_ title: String, _ series: [Series], fromZero: Bool) -> Panel {
    let plotW = plotWidth
    let plotH = 200
    let left = plotLeft
    let n = series.map(\.values.count).max() ?? 0
    let all = series.flatMap(\.values)
    var lo = fromZero ? 0 : (all.min() ?? 0)
    var hi = all.max() ?? 1
    if hi <= lo { hi = lo + 1 }
    let pad = (hi - lo) * 0.08
    if !fromZero { lo = max(0, lo - pad) }
    hi += pad
    let ticks = niceTicks(lo, hi)
    lo = min(lo, ticks.first ?? lo)
    hi = max(hi, ticks.last ?? hi)
    return Panel(width: left + plotW + 170, height: Canvas.lineHeight + plotH + 24) { c, x, y in
      c.text(title, x: x, y: y, ink)
      let top = y + Canvas.lineHeight + 4
      let x0 = x + left
      func px(_ i: Int) -> Int { x0 + (n <= 1 ? plotW / 2 : i * (plotW - 1) / (n - 1)) }
      func py(_ v: Double) -> Int {
        top + plotH - 1 - Int(((v - lo) / (hi - lo) * Double(plotH - 1)).rounded())
      }
      for t in ticks {
        let yy = py(t)
        c.fill(x: x0, y: yy, w: plotW, h: 1, (235, 235, 235))
        let label = tickLabel(t, step: ticks.count > 1 ? ticks[1] - ticks[0] : 1)
        c.text(label, x: x0 - 6 - Canvas.textWidth(label), y: yy - 3, grey)
      }
      c.frame(x: x0 - 1, y: top - 1, w: plotW + 2, h: plotH + 2, grey)
      // References first, then the series in order, each over the ones before it.
      for s in series.filter(\.dashed) + series.filter({ !$0.dashed }) {
        let t = s.dashed ? 1 : s.thickness
        for i in s.values.indices.dropFirst() {
          let (ax, ay, bx, by) = (px(i - 1), py(s.values[i - 1]), px(i), py(s.values[i]))
          guard s.dashed else {
            c.line(ax, ay, bx, by, s.color, thickness: t)
            continue
          }
          // Dashes of 6 pixels every 10 along x, whatever the number of blocks.
          var x = ax
          while x < bx {
            let end = min(bx, x + 6)
            let y0 = ay + (by - ay) * (x - ax) / max(1, bx - ax)
            let y1 = ay + (by - ay) * (end - ax) / max(1, bx - ax)
            c.line(x, y0, end, y1, s.color, thickness: t)
            x += 10
          }
        }
        if s.values.count == 1 {
          let r = s.dashed ? 1 : t / 2 + 1
          c.fill(x: px(0) - r, y: py(s.values[0]) - r, w: 2 * r + 1, h: 2 * r + 1, s.color)
        }
      }
      // x axis: first and last block.
      c.text("1", x: x0, y: top + plotH + 4, grey)
      let last = "block \(n)"
      c.text(last, x: x0 + plotW - Canvas.textWidth(last), y: top + plotH + 4, grey)
      for (k, s) in series.enumerated() {
        let ly = top + 4 + k * 14
        if s.dashed {
          c.fill(x: x0 + plotW + 12, y: ly + 3, w: 5, h: 1, s.color)
          c.fill(x: x0 + plotW + 21, y: ly + 3, w: 5, h: 1, s.color)
        } else {
          c.fill(x: x0 + plotW + 12, y: ly + 2, w: 14, h: 3, s.color)
        }
        c.text(s.name, x: x0 + plotW + 32, y: ly, ink)
      }
    }
  }

  /// About five round tick values (1, 2 or 5 × 10^k apart) covering lo...hi.
  static func niceTicks(_ lo: Double, _ hi: Double) -> [Double] {
    let raw = (hi - lo) / 5
    let magnitude = pow(10, floor(log10(raw)))
    let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
    let first = floor(lo / step) * step
    return stride(from: first, through: hi + step * 0.999, by: step).map { $0 }
  }

  /// A tick value with as many decimals as the step between ticks needs.
  static func tickLabel(_ v: Double, step: Double) -> String {
    let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
    return String(format: "%.\(decimals)f", v)
  }
}

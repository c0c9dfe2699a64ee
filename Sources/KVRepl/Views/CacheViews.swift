import Foundation
import KVCache
import KVModels

/// What the cache views read, the same for a budgeted cache and the full one: the origin of
/// every token fed (by position) and how many of the cache's (layer, KV head) slots still hold
/// it.
public struct RetentionView {
  public var layers: Int
  public var kvHeads: Int
  /// The origin of each position `0..<origins.count`.
  public var origins: [TokenOrigin]
  /// For each position, how many (layer, KV head) slots hold it, `0...slots`.
  public var holders: [Int]

  public var slots: Int { layers * kvHeads }

  /// Where known (Idefics3's `<row_r_col_c>` markers), each image's tiles as laid over it: rows ×
  /// cols, keyed by the image's index; tile r·cols + c is at (r, c), the global image after.
  public var tileGrids: [Int: (rows: Int, cols: Int)] = [:]
  /// The positions of a synthetic input's target (the patches its answer depends on), and
  /// what it is (`needle-image seed=3`).
  public var targets: Set<Int> = []
  public var targetSource: String?

  public init(layers: Int, kvHeads: Int, origins: [TokenOrigin], holders: [Int]) {
    precondition(origins.count == holders.count)
    self.layers = layers
    self.kvHeads = kvHeads
    self.origins = origins
    self.holders = holders
  }

  /// What a budgeted cache holds of `origins`.
  public init(cache: BudgetedCache, origins: [TokenOrigin]) {
    self.init(
      layers: cache.layers, kvHeads: cache.kvHeads, origins: origins,
      holders: cache.holders(positions: origins.count))
  }

  /// The inputs that structure the views: text, generated text, each image, each video, in
  /// order of their first position.
  var groups: [Group] {
    var order: [GroupKey] = []
    var members: [GroupKey: [Int]] = [:]
    for (p, o) in origins.enumerated() {
      let key: GroupKey
      switch o.modality {
      case .text: key = GroupKey(modality: .text, input: -1, image: -1)
      case .generated: key = GroupKey(modality: .generated, input: -1, image: -1)
      case .image, .video:
        key = GroupKey(modality: o.modality, input: o.input, image: o.image ?? -1)
      }
      if members[key] == nil { order.append(key) }
      members[key, default: []].append(p)
    }
    return order.map { Group(key: $0, positions: members[$0]!) }
  }

  struct GroupKey: Hashable {
    var modality: TokenOrigin.Modality
    var input: Int
    var image: Int
  }

  struct Group {
    var key: GroupKey
    var positions: [Int]
  }

  /// Held entries summed over `positions` and the most there could be.
  func share(_ positions: [Int]) -> Share {
    Share(held: positions.reduce(0) { $0 + holders[$1] }, total: positions.count * slots)
  }
}

/// A share of slots: `held` of `total`.
struct Share {
  var held: Int
  var total: Int

  static func + (a: Share, b: Share) -> Share {
    Share(held: a.held + b.held, total: a.total + b.total)
  }

  /// One character of a heatmap: `' '` none, `░` under a third, `▒` under two thirds, `▓` less
  /// than all, `█` all; `·` where there is no token.
  var shade: Character {
    if total == 0 { return "·" }
    if held == 0 { return " " }
    if held >= total { return "█" }
    if held * 3 < total { return "░" }
    if held * 3 < 2 * total { return "▒" }
    return "▓"
  }
}

/// The views of `cache`, `cache layer`, `cache log` and `cache map`: plain lines of at most 80
/// columns, deterministic for a given cache.
public enum CacheViews {
  static let width = 80
  /// Most heatmap cells across (a strip, a tile's columns) and down (a tile's rows).
  static let maxCells = 64
  static let maxRows = 32
  /// Most tile or frame rows `cache` lists under one image or video.
  static let maxParts = 16

  public static let legend = "shades: ' ' none  ░ under 1/3  ▒ under 2/3  ▓ under all  █ all"

  // MARK: cache map

  /// The retention heatmap: for each image, a grid per tile over (row, col) of the share of
  /// slots holding each patch; for each video, a timeline over its frames; for text and for
  /// generated tokens, a strip over their positions. Bucketed so nothing is wider than 80
  /// columns.
  public static func map(_ view: RetentionView) -> [String] {
    guard !view.origins.isEmpty else { return ["the cache is empty: nothing fed yet"] }
    var lines = [
      "share of the \(view.slots) (layer, KV head) slots holding each token", legend,
    ]
    for group in view.groups {
      lines.append("")
      switch group.key.modality {
      case .text, .generated:
        lines += strip(view, group)
      case .image:
        lines += imageGrids(view, group)
      case .video:
        lines += timeline(view, group)
      }
    }
    return lines
  }

  /// `text: 213 tokens at positions 0-212, 4 per cell`, the strip, and an axis.
  static func strip(_ view: RetentionView, _ group: RetentionView.Group) -> [String] {
    let p = group.positions
    let per = (p.count + maxCells - 1) / maxCells
    var cells = ""
    for start in stride(from: 0, to: p.count, by: per) {
      cells.append(view.share(Array(p[start..<min(p.count, start + per)])).shade)
    }
    let name = group.key.modality == .text ? "text" : "generated"
    let runs = compactRanges(p)
    let at =
      runs.count <= 3
      ? runs.joined(separator: ", ") : "\(p.first!)-\(p.last!) in \(runs.count) runs"
    return [
      "\(name): \(plural(p.count, "token")) at positions \(at), \(per) per cell",
      "│\(cells)│", axis(first: "\(p.first!)", last: "\(p.last!)", cells: cells.count),
    ]
  }

  /// `video 1 (feed 3): 8 frames of 3×3 patches, 1 frame per cell`, the timeline, an axis.
  static func timeline(_ view: RetentionView, _ group: RetentionView.Group) -> [String] {
    var byFrame: [Int: [Int]] = [:]
    for p in group.positions { byFrame[view.origins[p].frame ?? 0, default: []].append(p) }
    let frames = byFrame.keys.sorted()
    let per = (frames.count + maxCells - 1) / maxCells
    var cells = ""
    for start in stride(from: 0, to: frames.count, by: per) {
      let share = frames[start..<min(frames.count, start + per)].map { view.share(byFrame[$0]!) }
        .reduce(Share(held: 0, total: 0), +)
      cells.append(share.shade)
    }
    var title =
      "video \(group.key.image) (feed \(group.key.input)): \(plural(frames.count, "frame"))"
    if let grid = gridSize(view, group.positions) {
      title += " of \(grid.rows)×\(grid.cols) patches"
    }
    title += ", \(plural(per, "frame")) per cell"
    var marks = ""
    if !view.targets.isEmpty {
      // `^` under the cells whose frames hold the target.
      for start in stride(from: 0, to: frames.count, by: per) {
        let hit = frames[start..<min(frames.count, start + per)].contains { f in
          byFrame[f]!.contains { view.targets.contains($0) }
        }
        marks.append(hit ? "^" : " ")
      }
    }
    return [title, "│\(cells)│"] + (marks.contains("^") ? [trimmedRight(" " + marks)] : []) + [
      axis(first: "\(frames.first!)", last: "\(frames.last!)", cells: cells.count)
    ] + targetLines(view, group.positions)
  }

  /// One grid per tile, side by side while they fit in 80 columns.
  static func imageGrids(_ view: RetentionView, _ group: RetentionView.Group) -> [String] {
    var byTile: [Int: [Int]] = [:]
    var tiled = false
    var loose = 0
    for p in group.positions {
      let o = view.origins[p]
      guard o.row != nil, o.col != nil else {
        loose += 1
        continue
      }
      if o.tile != nil { tiled = true }
      byTile[o.tile ?? 0, default: []].append(p)
    }
    let tiles = byTile.keys.sorted()
    var title = "image \(group.key.image) (feed \(group.key.input)): "
    let sizes = tiles.map { gridSize(view, byTile[$0]!)! }
    // Tiles on the image's grid: a band per row of tiles, the global image after them.
    let across = view.tileGrids[group.key.image].flatMap { g in
      tiled && tiles == Array(0...(g.rows * g.cols)) ? g : nil
    }
    if let g = across {
      title += "\(g.rows)×\(g.cols) tiles + a global image"
    } else if tiled {
      title += plural(tiles.count, "tile")
    }
    if let s = sizes.first, sizes.allSatisfy({ $0 == s }) {
      title += (tiled ? " of " : "") + "\(s.rows)×\(s.cols) patches"
    } else if !tiled {
      title += plural(group.positions.count - loose, "patch", "patches")
    }
    if loose > 0 { title += ", \(plural(loose, "token")) without a patch position" }
    var boxes: [[String]] = []
    var bucketNote: String?
    for (t, size) in zip(tiles, sizes) {
      let fr = (size.rows + maxRows - 1) / maxRows
      let fc = (size.cols + maxCells - 1) / maxCells
      if fr > 1 || fc > 1 { bucketNote = "\(fr)×\(fc) patches per cell" }
      let rows = (size.rows + fr - 1) / fr
      let cols = (size.cols + fc - 1) / fc
      var cells = [[Share]](
        repeating: [Share](repeating: Share(held: 0, total: 0), count: cols), count: rows)
      for p in byTile[t]! {
        let o = view.origins[p]
        cells[o.row! / fr][o.col! / fc] = cells[o.row! / fr][o.col! / fc] + view.share([p])
      }
      let marked = byTile[t]!.contains { view.targets.contains($0) } ? "*" : ""
      var box =
        across.map { g in [t == g.rows * g.cols ? "global\(marked)" : "\(t)\(marked)"] }
        ?? (tiled ? ["tile \(t)\(marked)"] : [])
      box.append("┌" + String(repeating: "─", count: cols) + "┐")
      for r in cells { box.append("│" + String(r.map(\.shade)) + "│") }
      box.append("└" + String(repeating: "─", count: cols) + "┘")
      boxes.append(box)
    }
    if let bucketNote { title += ", \(bucketNote)" }
    var lines = [title]
    if let g = across, boxes.prefix(g.cols).map({ $0.map(\.count).max() ?? 0 }).reduce(0, +)
      + 2 * (g.cols - 1) <= width
    {
      for r in 0..<g.rows { lines += sideBySide(Array(boxes[(r * g.cols)..<((r + 1) * g.cols)])) }
      lines += [""] + sideBySide([boxes.last!])
    } else {
      lines += sideBySide(boxes)
    }
    return lines + targetLines(view, group.positions)
  }

  /// `target (needle-image seed=3, * above): 12 tokens in tiles 27, 64; 41.7% of their slots
  /// hold them`, when the group holds a synthetic input's target.
  static func targetLines(_ view: RetentionView, _ positions: [Int]) -> [String] {
    let mine = positions.filter { view.targets.contains($0) }
    guard !mine.isEmpty else { return [] }
    let video = view.origins[mine[0]].modality == .video
    let parts = Set(mine.compactMap { video ? view.origins[$0].frame : view.origins[$0].tile })
    let s = view.share(mine)
    let list = compactRanges(Array(parts)).joined(separator: ", ")
    return [
      "target (\(view.targetSource ?? "synthetic")\(video ? "" : ", * above")): \(plural(mine.count, "token")) in \(video ? "frames" : "tiles") \(list); "
        + String(format: "%.1f%%", 100 * Double(s.held) / Double(max(1, s.total)))
        + " of their slots hold them"
    ]
  }

  /// Rows and columns of the patch grid of `positions` (nil: no token has a patch position).
  static func gridSize(_ view: RetentionView, _ positions: [Int]) -> (rows: Int, cols: Int)? {
    var rows = 0
    var cols = 0
    for p in positions {
      guard let r = view.origins[p].row, let c = view.origins[p].col else { continue }
      rows = max(rows, r + 1)
      cols = max(cols, c + 1)
    }
    return rows > 0 ? (rows, cols) : nil
  }

  /// Blocks of lines laid out left to right, two spaces apart, wrapping to a new band when the
  /// next would pass 80 columns; a blank line between bands.
  static func sideBySide(_ blocks: [[String]]) -> [String] {
    var lines: [String] = []
    var band: [[String]] = []
    var used = 0
    func flush() {
      guard !band.isEmpty else { return }
      if !lines.isEmpty { lines.append("") }
      let widths = band.map { b in b.map(\.count).max() ?? 0 }
      for r in 0..<(band.map(\.count).max() ?? 0) {
        var line = ""
        for (i, b) in band.enumerated() {
          let cell = r < b.count ? b[r] : ""
          line += (i > 0 ? "  " : "") + cell + String(repeating: " ", count: widths[i] - cell.count)
        }
        lines.append(trimmedRight(line))
      }
      band = []
      used = 0
    }
    for b in blocks {
      let w = b.map(\.count).max() ?? 0
      if !band.isEmpty, used + 2 + w > width { flush() }
      used += (band.isEmpty ? 0 : 2) + w
      band.append(b)
    }
    flush()
    return lines
  }

  /// The first label under the first cell, the last one ending under the last cell (dropped
  /// when they would collide).
  static func axis(first: String, last: String, cells: Int) -> String {
    let lastEnd = cells  // column of the last cell (the strip starts with a border at 0)
    let gap = lastEnd - last.count + 1 - (1 + first.count)
    guard cells > 1, gap >= 1 else { return " " + first }
    return " " + first + String(repeating: " ", count: gap) + last
  }

  // MARK: cache

  /// Fed and held tokens by modality, then by image tile and video frame: `held` is the mean
  /// over the (layer, KV head) slots, `kept` its share of what was fed.
  public static func origins(_ view: RetentionView) -> [String] {
    guard !view.origins.isEmpty else { return [] }
    var rows = [["origin", "fed", "held", "kept"]]
    func row(_ label: String, _ positions: [Int]) -> [String] {
      let s = view.share(positions)
      let mean = Double(s.held) / Double(view.slots)
      return [
        label, "\(positions.count)", String(format: "%.1f", mean),
        String(format: "%.1f%%", 100 * Double(s.held) / Double(max(1, s.total))),
      ]
    }
    for m in TokenOrigin.Modality.allCases {
      let p = view.origins.indices.filter { view.origins[$0].modality == m }
      if !p.isEmpty { rows.append(row(m.rawValue, p)) }
    }
    for group in view.groups where group.key.modality == .image || group.key.modality == .video {
      let video = group.key.modality == .video
      rows.append(row("\(video ? "video" : "image") \(group.key.image)", group.positions))
      var parts: [Int: [Int]] = [:]
      for p in group.positions {
        let o = view.origins[p]
        if let k = video ? o.frame : o.tile { parts[k, default: []].append(p) }
      }
      let keys = parts.keys.sorted()
      for k in keys.prefix(maxParts) {
        rows.append(row("  \(video ? "frame" : "tile") \(k)", parts[k]!))
      }
      if keys.count > maxParts {
        rows.append([
          "  \(keys.count - maxParts) more \(video ? "frames" : "tiles") (cache map)", "", "", "",
        ])
      }
    }
    return Format.table(rows).map(trimmedRight)
  }

  // MARK: cache layer

  /// One layer: per KV head, entries held and their modalities, then the positions each head
  /// keeps as ranges.
  public static func layer(
    _ layer: Int, heads: [[EntryMeta]], capacity: Int, fed: [TokenOrigin]
  ) -> [String] {
    let counts = heads.map(\.count)
    let held =
      counts.min() == counts.max()
      ? "\(counts.first ?? 0)" : "\(counts.min()!) to \(counts.max()!)"
    var lines = ["layer \(layer): \(held) of \(capacity) tokens per KV head"]
    let modalities = TokenOrigin.Modality.allCases.filter { m in fed.contains { $0.modality == m } }
    var rows = [["head", "held"] + modalities.map(\.rawValue)]
    for (h, entries) in heads.enumerated() {
      var byModality: [TokenOrigin.Modality: Int] = [:]
      for e in entries { byModality[e.originModality, default: 0] += 1 }
      rows.append(["\(h)", "\(entries.count)"] + modalities.map { "\(byModality[$0] ?? 0)" })
    }
    lines += Format.table(rows)
    lines.append("positions kept\(fed.isEmpty ? "" : " (of 0-\(fed.count - 1))"):")
    for (h, entries) in heads.enumerated() {
      let ranges = compactRanges(entries.map { Int($0.position) })
      lines += wrapList(ranges.isEmpty ? ["none"] : ranges, first: "head \(h)  ", indent: 8)
    }
    return lines
  }

  // MARK: cache log

  /// The last eviction: per layer and KV head, how many entries left, the lowest score kept
  /// (among those the policy could have evicted) and the highest score that left, and which
  /// positions left.
  public static func log(
    event: EvictionEvent?, records: [EvictionRecord], layer: Int? = nil
  ) -> [String] {
    guard let event else { return ["nothing evicted yet"] }
    let shown = records.filter { layer == nil || $0.layer == layer }
    let left = Set(records.map(\.evicted.count))
    var head: String
    switch event {
    case .block(let index, let positions):
      head =
        positions.count == 1
        ? "block \(index), position \(positions.lowerBound)"
        : "block \(index), positions \(positions.lowerBound)-\(positions.upperBound)"
    case .compression(let budget):
      head = "compression to \(plural(budget, "token"))"
    }
    if records.allSatisfy({ $0.evicted.isEmpty }) { return [head + ": nothing left the cache"] }
    if left.count == 1 { head += ": \(left.first!) left each layer and KV head" }
    var lines = [head + (layer.map { "; layer \($0)" } ?? "")]
    let columns = ["layer", "head", "left", "lowest kept", "highest left"]
    var table = [columns]
    for r in shown {
      let top = r.evicted.map(\.score).max()
      table.append([
        "\(r.layer)", "\(r.kvHead)", "\(r.evicted.count)", r.lowestKept.map(score) ?? "-",
        top.map(score) ?? "-",
      ])
    }
    // Right-aligned columns, then the positions that left, wrapped under their own column.
    let widths = columns.indices.map { c in table.map { $0[c].count }.max()! }
    func render(_ cells: [String]) -> String {
      zip(cells, widths).map { String(repeating: " ", count: $1 - $0.count) + $0 }
        .joined(separator: "  ")
    }
    let indent = widths.reduce(0, +) + 2 * widths.count
    lines.append(render(columns) + "  positions that left")
    for (r, cells) in zip(shown, table.dropFirst()) {
      let ranges = compactRanges(r.evicted.map(\.position))
      lines += wrapList(
        ranges.isEmpty ? ["none"] : ranges, first: render(cells) + "  ", indent: indent)
    }
    return lines
  }

  static func score(_ s: Float) -> String { String(format: "%.4g", Double(s)) }

  // MARK: text helpers

  /// Sorted positions as ranges: `[0, 1, 2, 5, 7, 8]` → `0-2`, `5`, `7-8`.
  public static func compactRanges(_ positions: [Int]) -> [String] {
    let sorted = positions.sorted()
    var out: [String] = []
    var i = 0
    while i < sorted.count {
      var j = i
      while j + 1 < sorted.count, sorted[j + 1] == sorted[j] + 1 { j += 1 }
      out.append(i == j ? "\(sorted[i])" : "\(sorted[i])-\(sorted[j])")
      i = j + 1
    }
    return out
  }

  /// Items joined by ", ", after `first` on the first line and `indent` spaces on the next,
  /// wrapped at 80 columns.
  static func wrapList(_ items: [String], first: String, indent: Int) -> [String] {
    var lines: [String] = []
    var line = first
    var empty = true
    for (i, item) in items.enumerated() {
      let piece = item + (i + 1 < items.count ? "," : "")
      if !empty, line.count + 1 + piece.count > width {
        lines.append(line)
        line = String(repeating: " ", count: indent)
        empty = true
      }
      line += (empty ? "" : " ") + piece
      empty = false
    }
    lines.append(line)
    return lines
  }

  /// Per-layer budgets from layer 0 up, all of them for up to 12 layers, else the first three
  /// and the last two: `1536 1445 1354 … 605 512 tokens (layers 0-11)`.
  static func layerBudgets(_ budgets: [Int]) -> String {
    let shown =
      budgets.count <= 12
      ? budgets.map(String.init)
      : budgets.prefix(3).map(String.init) + ["…"] + budgets.suffix(2).map(String.init)
    return shown.joined(separator: " ") + " tokens (layers 0-\(budgets.count - 1))"
  }

  static func plural(_ n: Int, _ word: String, _ plural: String? = nil) -> String {
    "\(n) \(n == 1 ? word : plural ?? word + "s")"
  }

  static func trimmedRight(_ s: String) -> String {
    var s = s
    while s.last == " " { s.removeLast() }
    return s
  }
}

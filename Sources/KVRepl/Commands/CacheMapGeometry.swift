import Foundation
import KVCache
import KVEngine
import KVModels

/// What `cache map` adds to the retention view to draw inputs in their own geometry: each
/// image's tile grid, and the target of the synthetic input fed last.
extension CacheCommands {
  static func withGeometry(_ ctx: CommandContext, _ view: RetentionView) -> RetentionView {
    var view = view
    view.tileGrids = tileGrids(ctx.session, view.origins)
    if let fed = ctx.repl.syntheticFed, fed.index.input < ctx.session.nextVisualInput.input,
      let sample = try? fed.sample(ctx),
      let targets = try? ctx.session.syntheticTargets(sample, at: fed.index)
    {
      view.targetSource = targets.source
      for (p, o) in view.origins.enumerated() {
        guard o.input == fed.index.input, let image = o.image, let tile = o.tile, let row = o.row,
          let col = o.col
        else { continue }
        let key = PatchKey(input: o.input, image: image, tile: tile, row: row, col: col, frame: o.frame)
        if targets.keys.contains(key) { view.targets.insert(p) }
      }
    }
    return view
  }

  /// Each tiled image's grid, read from the `<row_r_col_c>` marker Idefics3 puts before each
  /// tile (the tokens between the previous tile's and this one's): rows × cols when
  /// every tile but the last (the global image) has its marker, at r·cols + c.
  static func tileGrids(_ session: Session, _ origins: [TokenOrigin]) -> [Int: (rows: Int, cols: Int)] {
    guard let tokenizer = session.tokenizer else { return [:] }
    let ids = session.context
    guard ids.count == origins.count else { return [:] }
    var found: [Int: [Int: (row: Int, col: Int)]] = [:]  // image → tile → (row, col), 1-based
    var textStart = 0
    var previous: (image: Int, tile: Int)?
    for (p, o) in origins.enumerated() {
      // Marker text (an image's tokens without a tile) and plain text lie between tiles.
      guard let tile = o.tile else { continue }
      guard o.modality == .image, let image = o.image else {
        textStart = p + 1
        continue
      }
      defer { textStart = p + 1 }
      if let previous, previous == (image, tile) { continue }
      previous = (image, tile)
      guard p > textStart else { continue }
      let text = tokenizer.decode(Array(ids[max(textStart, p - 32)..<p]))
      guard let r = text.range(of: #"<row_(\d+)_col_(\d+)>"#, options: [.regularExpression, .backwards])
      else { continue }
      let numbers = text[r].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
      if numbers.count == 2 { found[image, default: [:]][tile] = (numbers[0], numbers[1]) }
    }
    var grids: [Int: (rows: Int, cols: Int)] = [:]
    for (image, tiles) in found {
      let rows = tiles.values.map(\.row).max() ?? 0
      let cols = tiles.values.map(\.col).max() ?? 0
      guard rows > 0, cols > 0, tiles.count == rows * cols,
        tiles.allSatisfy({ $0.key == ($0.value.row - 1) * cols + $0.value.col - 1 })
      else { continue }
      grids[image] = (rows, cols)
    }
    return grids
  }
}

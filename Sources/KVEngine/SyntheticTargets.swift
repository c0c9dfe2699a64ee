import Foundation
import KVCache
import KVModels
import KVTasks

/// The visual tokens that carry a synthetic sample's target, as the oracle policy keeps them.
public struct SyntheticTargets: Sendable {
  public var keys: Set<PatchKey>
  /// "needle-image seed=3", for display.
  public var source: String
  /// The sample's indices in the session (what its tokens carry).
  public var index: VisualInputIndex

  /// The oracle over `fill` with these targets.
  public func oracle(fill: any EvictionPolicy) -> OraclePolicy {
    OraclePolicy(fill: fill, targets: keys, source: source)
  }
}

/// Which pixels of a sample the answer depends on, and where they land in Idefics3's layout.
public enum TargetGeometry {
  /// The shapes whose pixels carry the answer, and the frames they are drawn in (nil: the one
  /// image). needle-image: the needle; needle-video: the needle, in the frames that show it;
  /// count: every shape of the counted kind (the count depends on each); attribute: the shape
  /// asked about.
  public static func shapes(of sample: SyntheticSample) -> [(shape: PlacedShape, frames: [Int]?)] {
    switch sample.task {
    case .needleImage, .attribute: return [(sample.target, nil)]
    case .needleVideo:
      let span = sample.frameSpan.map { Array($0) } ?? Array(sample.images.indices)
      return [(sample.target, span.filter { sample.images.indices.contains($0) })]
    case .count:
      return sample.shapes.filter { $0.kind == sample.target.kind }.map { ($0, nil) }
    }
  }

  /// A shape's bounding box clipped to a `width × height` image, as half-open pixel ranges;
  /// nil when none of it is inside.
  static func box(_ s: PlacedShape, width: Int, height: Int) -> (x: Range<Int>, y: Range<Int>)? {
    let x0 = max(0, s.x - s.radius)
    let x1 = min(width, s.x + s.radius + 1)
    let y0 = max(0, s.y - s.radius)
    let y1 = min(height, s.y + s.radius + 1)
    guard x0 < x1, y0 < y1 else { return nil }
    return (x0..<x1, y0..<y1)
  }

  /// The patches (row, col) of a `side × side` token grid over the square [origin, origin +
  /// extent)² of a resized image that a pixel range covers, after scaling by `scale` (resized
  /// size / original size, per axis). A patch covers a pixel when their areas overlap.
  static func patches(
    x: Range<Int>, y: Range<Int>, scaleX: Double, scaleY: Double, originX: Double,
    originY: Double, extent: Double, side: Int
  ) -> [(row: Int, col: Int)] {
    let p = extent / Double(side)
    func cells(_ r: Range<Int>, _ scale: Double, _ origin: Double) -> [Int] {
      let a = Double(r.lowerBound) * scale - origin
      let b = Double(r.upperBound) * scale - origin
      return (0..<side).filter { j in a < Double(j + 1) * p && b > Double(j) * p }
    }
    let cols = cells(x, scaleX, originX)
    return cells(y, scaleY, originY).flatMap { r in cols.map { (r, $0) } }
  }

  /// The keys of the tokens covering the sample's target shapes, for Idefics3 with `splitter`,
  /// `tokensPerTile` tokens a tile, the sample fed at `index` (as `Session.feed` lays it out:
  /// count and attribute unsplit, clip frames unsplit).
  public static func keys(
    _ sample: SyntheticSample, splitter: Idefics3ImageSplitter, tokensPerTile: Int,
    at index: VisualInputIndex
  ) throws -> Set<PatchKey> {
    let side = Int(Double(tokensPerTile).squareRoot())
    guard side > 0, side * side == tokensPerTile else {
      throw EngineError.invalid("a tile of \(tokensPerTile) tokens is not a square grid")
    }
    var layout = splitter
    if sample.task.isClip || sample.task.isSingleTile { layout.splitting = false }
    let t = Double(splitter.tileSize)
    var keys: Set<PatchKey> = []
    for (shape, frames) in shapes(of: sample) {
      for f in frames ?? [0] {
        let image = sample.images[f]
        let w = image.width
        let h = image.height
        guard let b = box(shape, width: w, height: h) else { continue }
        let frame = frames == nil ? nil : f
        let grid = try layout.grid(height: h, width: w)
        if let cut = grid.cut {
          let sx = Double(cut.width) / Double(w)
          let sy = Double(cut.height) / Double(h)
          for r in 0..<grid.rows {
            for c in 0..<grid.cols {
              for p in patches(
                x: b.x, y: b.y, scaleX: sx, scaleY: sy, originX: Double(c) * t,
                originY: Double(r) * t, extent: t, side: side)
              {
                keys.insert(
                  PatchKey(
                    input: index.input, image: index.image, tile: r * grid.cols + c, row: p.row,
                    col: p.col, frame: frame))
              }
            }
          }
        }
        // The global tile (the only one when unsplit): the whole image resized to one tile.
        for p in patches(
          x: b.x, y: b.y, scaleX: t / Double(w), scaleY: t / Double(h), originX: 0, originY: 0,
          extent: t, side: side)
        {
          keys.insert(
            PatchKey(
              input: index.input, image: index.image, tile: grid.rows * grid.cols, row: p.row,
              col: p.col, frame: frame))
        }
      }
    }
    return keys
  }
}

extension Session {
  /// The oracle's targets for `sample` fed at `index` (default: as the next feed) with the
  /// loaded model's layout. Throws for a model whose layout it does not know: the targets are
  /// pixels carried through the family's resize and tiling to token cells, and only Idefics3's
  /// (square tiles of a square token grid plus a global tile) is written out; each other family
  /// resizes and cuts differently (InternVL's aspect-ratio grid and thumbnail, Qwen's
  /// whole-image grid and paired frames, LLaVA's centre crop) and would need its own.
  public func syntheticTargets(_ sample: SyntheticSample, at index: VisualInputIndex? = nil) throws
    -> SyntheticTargets
  {
    guard model != nil else { throw EngineError.noModel }
    guard let idefics = vision as? Idefics3Model, let perTile = idefics.tokensPerUnit else {
      let loaded = vision.map { "the loaded model is \($0.family)" } ?? "the loaded model has no vision tower"
      throw EngineError.invalid(
        "the oracle's targets follow Idefics3's tiles only; \(loaded) (load weights/kvlab-shapes or an Idefics3 / SmolVLM model)"
      )
    }
    let at = index ?? nextVisualInput
    let keys = try TargetGeometry.keys(
      sample, splitter: idefics.splitter, tokensPerTile: perTile, at: at)
    return SyntheticTargets(
      keys: keys, source: "\(sample.task.rawValue) seed=\(sample.seed)", index: at)
  }
}

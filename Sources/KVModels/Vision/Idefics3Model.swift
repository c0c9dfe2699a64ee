import Foundation
import KVTensor

/// Idefics3's image processor (SmolVLM): resize so the longest edge is `longestEdge`, then up to
/// multiples of the tile size, cut into rows × cols tiles plus the whole image downscaled to one
/// tile (the "global" image); or, without splitting, the image squashed to one tile. Every resize
/// works on 8-bit pixels like PIL, in transformers' order, so the tiles match bit for bit.
public struct Idefics3ImageSplitter: Sendable, Equatable {
  public var longestEdge: Int?
  public var tileSize: Int
  public var splitting: Bool
  /// Rescale and normalisation (its resize is unused).
  public var normalization: ImagePreprocessor

  /// transformers' MAX_IMAGE_SIZE for this processor.
  static let maxImageSize = 4096
  /// The most tiles one image may be split into (SmolVLM makes at most 4×4; a 4096-pixel image
  /// in 128-pixel tiles is 32×32): each tile is a visual unit with its own tokens, so a
  /// preprocessor_config.json of tiny tiles would lay out millions of them.
  public static let maxTilesPerImage = 1024

  public init(longestEdge: Int?, tileSize: Int, splitting: Bool, normalization: ImagePreprocessor) {
    self.longestEdge = longestEdge
    self.tileSize = tileSize
    self.splitting = splitting
    self.normalization = normalization
  }

  /// From preprocessor_config.json, with Idefics3ImageProcessor's class defaults.
  public init(config: [String: JSONValue], path: String) throws {
    func fail(_ m: String) -> ModelError { ModelError(path: path, message: m) }
    func int(_ dict: [String: JSONValue]?, _ key: String) throws -> Int? {
      guard let v = dict?[key], !v.isNull else { return nil }
      guard let i = v.int, i > 0, i <= Self.maxImageSize * 4 else {
        throw fail("\"\(key)\" must be a positive integer, got \(v.brief)")
      }
      return i
    }
    let doResize = config["do_resize"]?.bool ?? true
    longestEdge = doResize ? try int(config["size"]?.object, "longest_edge") ?? 4 * 364 : nil
    tileSize = try int(config["max_image_size"]?.object, "longest_edge") ?? 364
    splitting = config["do_image_splitting"]?.bool ?? true
    if let edge = longestEdge {
      // The longest side is resized to `edge` (at most MAX_IMAGE_SIZE), then rounded up to
      // whole tiles: the grid is at most n × n.
      let n = (min(edge, Self.maxImageSize) + tileSize - 1) / tileSize
      guard n * n <= Self.maxTilesPerImage else {
        throw fail(
          "size.longest_edge \(edge) in tiles of max_image_size.longest_edge \(tileSize) splits an image into up to \(n)×\(n) = \(n * n) tiles, more than the limit of \(Self.maxTilesPerImage)"
        )
      }
    }
    var resample = ResampleFilter.lanczos
    if let r = config["resample"]?.int {
      guard let f = ResampleFilter(rawValue: r) else { throw fail("unknown resample filter \(r)") }
      resample = f
    }
    func floats(_ key: String) throws -> [Float] {
      guard let v = config[key], !v.isNull else { return ImagePreprocessor.imagenetStandardMean }
      if let d = v.double { return [Float](repeating: Float(d), count: 3) }
      guard let a = v.array?.compactMap(\.double), a.count == 3 else {
        throw fail("\"\(key)\" must be a number or 3 numbers")
      }
      return a.map(Float.init)
    }
    let doRescale = config["do_rescale"]?.bool ?? true
    let factor = config["rescale_factor"]?.double ?? 1.0 / 255.0
    guard Float(factor).isFinite else {
      throw fail("\"rescale_factor\" \(factor) is not a finite number")
    }
    let doNormalize = config["do_normalize"]?.bool ?? true
    var statistics: ([Float], [Float])? = nil
    if doNormalize {
      let (mean, std) = (try floats("image_mean"), try floats("image_std"))
      if let why = ImagePreprocessor.badStatistics(mean: mean, std: std) { throw fail(why) }
      statistics = (mean, std)
    }
    normalization = ImagePreprocessor(
      resize: nil, resample: resample, rescaleFactor: doRescale ? factor : nil,
      normalization: statistics)
  }

  /// `_resize_output_size_rescale_to_max_len` then `_scale_below_upper_bound` (float64 ratios,
  /// `int()` truncation, odd sides bumped to even).
  static func longestEdgeSize(height: Int, width: Int, maxLength: Int) -> (Int, Int) {
    var h = height
    var w = width
    let aspect = Double(width) / Double(height)
    if w >= h {
      w = maxLength
      h = Int(Double(w) / aspect)
      if h % 2 != 0 { h += 1 }
    } else {
      h = maxLength
      w = Int(Double(h) * aspect)
      if w % 2 != 0 { w += 1 }
    }
    h = max(h, 1)
    w = max(w, 1)
    let aspect2 = Double(w) / Double(h)
    if w >= h, w > maxImageSize {
      w = maxImageSize
      h = Int(Double(w) / aspect2)
    } else if h > w, h > maxImageSize {
      h = maxImageSize
      w = Int(Double(h) * aspect2)
    }
    return (max(h, 1), max(w, 1))
  }

  /// The sizes the image goes through: after the longest-edge resize, after rounding up to
  /// whole tiles (nil without splitting), and the tile grid (0 × 0: the image is one tile).
  struct Plan: Equatable {
    var resized: (height: Int, width: Int)?
    var multiple: (height: Int, width: Int)?
    var rows: Int
    var cols: Int
    static func == (a: Plan, b: Plan) -> Bool {
      a.resized?.height == b.resized?.height && a.resized?.width == b.resized?.width
        && a.multiple?.height == b.multiple?.height && a.multiple?.width == b.multiple?.width
        && a.rows == b.rows && a.cols == b.cols
    }
  }

  func plan(height: Int, width: Int) throws -> Plan {
    guard width > 0, height > 0 else {
      throw ImageError(path: "\(width)×\(height) image", message: "has no pixels")
    }
    var h = height
    var w = width
    var resized: (Int, Int)?
    if let longestEdge {
      (h, w) = Self.longestEdgeSize(height: h, width: w, maxLength: longestEdge)
      resized = (h, w)
    }
    guard splitting else { return Plan(resized: resized, multiple: nil, rows: 0, cols: 0) }
    // resize_for_vision_encoder: both sides up to multiples of the tile size.
    let t = tileSize
    let aspect = Double(w) / Double(h)
    if w >= h {
      w = (w + t - 1) / t * t
      h = (Int(Double(w) / aspect) + t - 1) / t * t
    } else {
      h = (h + t - 1) / t * t
      w = (Int(Double(h) * aspect) + t - 1) / t * t
    }
    h = max(h, t)
    w = max(w, t)
    guard h > t || w > t else { return Plan(resized: resized, multiple: (h, w), rows: 0, cols: 0) }
    let (rows, cols) = ((h - t) / t + 1, (w - t) / t + 1)
    // Without a resize (do_resize false) the image's own size sets the grid.
    guard rows * cols <= Self.maxTilesPerImage else {
      throw ImageError(
        path: "\(width)×\(height) image",
        message:
          "splits into \(rows)×\(cols) = \(rows * cols) tiles of \(t)×\(t), more than the limit of \(Self.maxTilesPerImage)"
      )
    }
    return Plan(resized: resized, multiple: (h, w), rows: rows, cols: cols)
  }

  /// Where an image's pixels go: the size it is resized to before it is cut into the `rows ×
  /// cols` tiles (nil, with a 0 × 0 grid, when the whole image becomes one tile). The global
  /// tile (the last) is always the whole image resized to one tile. For mapping pixels to
  /// patches (the oracle policy's targets).
  public func grid(height: Int, width: Int) throws
    -> (cut: (width: Int, height: Int)?, rows: Int, cols: Int)
  {
    let p = try plan(height: height, width: width)
    guard p.rows > 0, let m = p.multiple else { return (nil, 0, 0) }
    return ((m.width, m.height), p.rows, p.cols)
  }

  /// The tiles, row-major, then the global image; rows = cols = 0 when the image is one tile.
  public func split(_ image: RGBImage) throws -> (tiles: [PixelValues], rows: Int, cols: Int) {
    let plan = try plan(height: image.height, width: image.width)
    var img = image.compositedOverWhite()
    let filter = normalization.resample
    let t = tileSize
    if let r = plan.resized { img = img.resized(width: r.width, height: r.height, filter: filter) }
    guard let m = plan.multiple else {
      return ([normalization.normalized(img.resized(width: t, height: t, filter: filter))], 0, 0)
    }
    img = img.resized(width: m.width, height: m.height, filter: filter)
    guard plan.rows > 0 else { return ([normalization.normalized(img)], 0, 0) }
    var tiles: [PixelValues] = []
    for r in 0..<plan.rows {
      for c in 0..<plan.cols {
        tiles.append(normalization.normalized(img.cropped(x: c * t, y: r * t, width: t, height: t)))
      }
    }
    tiles.append(normalization.normalized(img.resized(width: t, height: t, filter: filter)))
    return (tiles, plan.rows, plan.cols)
  }
}

/// The tiles of one image, split on the first request and let go once every tile has been
/// taken (so a re-prefill splits again rather than the session holding every tile).
final class TileMemo: @unchecked Sendable {
  private let lock = NSLock()
  private var tiles: [PixelValues]?
  private var taken = Set<Int>()
  private let make: () throws -> [PixelValues]

  init(make: @escaping () throws -> [PixelValues]) { self.make = make }

  func tile(_ i: Int) throws -> PixelValues {
    lock.lock()
    defer { lock.unlock() }
    let all = try tiles ?? make()
    taken.insert(i)
    if taken.count == all.count {
      tiles = nil
      taken = []
    } else {
      tiles = all
    }
    return all[i]
  }
}

extension RGBImage {
  /// The window at (x, y) of the given size (inside the image).
  public func cropped(x: Int, y: Int, width cw: Int, height ch: Int) -> RGBImage {
    precondition(x >= 0 && y >= 0 && x + cw <= width && y + ch <= height)
    var out = [UInt8](repeating: 0, count: cw * ch * 3)
    for row in 0..<ch {
      let s = ((y + row) * width + x) * 3
      out.replaceSubrange((row * cw * 3)..<((row + 1) * cw * 3), with: pixels[s..<(s + cw * 3)])
    }
    return RGBImage(width: cw, height: ch, pixels: out)
  }
}

/// Idefics3 / SmolVLM: a SigLIP vision transformer over 1 tile at a time (patch conv, learned
/// positions, pre-norm blocks, post-LayerNorm), a pixel-shuffle connector (s×s neighbouring
/// patches concatenated) with a linear projection, and a llama decoder. An image becomes
/// `<fake_token_around_image><row_r_col_c><image>×n` per tile, a newline per row, then the
/// global image between `<fake_token_around_image><global-img>` and `<fake_token_around_image>`.
public final class Idefics3Model: VisionLanguageFamily, StreamedClipFamily, @unchecked Sendable {
  public let family = "idefics3"
  public static let unitName = "tile"
  /// `split=on|off`: whether an image is cut into tiles (plus the global image).
  public static let feedOptions = ["split"]
  public let decoder: LlamaModel
  public let tokenizer: BPETokenizer
  public let chat: ChatLayout
  /// How images are cut into tiles (`splitting` can be turned off per session).
  public var splitter: Idefics3ImageSplitter

  let imageSize: Int
  let patchSize: Int
  let scaleFactor: Int
  let embedding: TileEmbedding  // no class token
  let encoder: VisionTransformer
  let postNorm: (weight: FloatBuffer, bias: FloatBuffer)
  let projection: WeightMatrix  // [text hidden][D·s²]
  let imageTokenID: Int
  let seqLen: Int  // tokens per tile

  public var splitting: Bool? {
    get { splitter.splitting }
    set { if let newValue { splitter.splitting = newValue } }
  }

  /// `modelType` changes nothing: idefics3 and smolvlm folders load alike.
  public init(folder: HFModelFolder, modelType _: String, meter: MemoryMeter?) throws {
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    let vc = try folder.decodeConfig(ViTConfig.self, at: "vision_config")
    let textConfig = try folder.decodeConfig(DecoderConfig.self, at: "text_config")
    try vc.validate(configPath: configPath)
    let s = folder.config["scale_factor"]?.int ?? 2
    let side = vc.image_size / vc.patch_size
    guard s > 0, side % s == 0 else {
      throw fail("scale_factor \(s) does not divide the \(side)×\(side) patch grid")
    }
    imageSize = vc.image_size
    patchSize = vc.patch_size
    scaleFactor = s
    seqLen = side * side / (s * s)

    tokenizer = try VisionLanguageModels.tokenizer(in: folder)
    imageTokenID =
      try folder.config["image_token_id"]?.int
      ?? VisionLanguageModels.id("<image>", in: tokenizer, folder: folder)
    for t in ["<fake_token_around_image>", "<global-img>"] {
      _ = try VisionLanguageModels.id(t, in: tokenizer, folder: folder)
    }
    let prep = (folder.path as NSString).appendingPathComponent("preprocessor_config.json")
    let prepConfig =
      FileManager.default.fileExists(atPath: prep) ? try HFModelFolder.readJSONObject(prep) : [:]
    splitter = try Idefics3ImageSplitter(config: prepConfig, path: prep)
    guard splitter.tileSize == imageSize else {
      throw ModelError(
        path: prep,
        message:
          "max_image_size \(splitter.tileSize) differs from the vision image_size \(imageSize)")
    }
    chat = ChatLayout(
      systemPrefix: "<|im_start|>", userPrefix: "User:", assistantPrefix: "Assistant:",
      turnEnd: "<end_of_utterance>\n",
      stopTokens: ["<end_of_utterance>"])

    let w = WeightReader(folder: folder, category: .weights, meter: meter)
    let d = vc.hidden_size
    let v = "model.vision_model."
    embedding = TileEmbedding(
      imageSize: imageSize, patchSize: patchSize, classToken: nil,
      patch: try w.flattened(
        v + "embeddings.patch_embedding.weight", shape: [d, 3, patchSize, patchSize]),
      patchBias: try w.vector(v + "embeddings.patch_embedding.bias", d),
      positions: try w.matrix(
        v + "embeddings.position_embedding.weight", rows: side * side, cols: d))
    encoder = try VisionTransformer.load(
      w, names: (0..<vc.num_hidden_layers).map { .siglip(v + "encoder.layers.\($0).") },
      hidden: d, heads: vc.num_attention_heads, intermediate: vc.intermediate_size,
      eps: vc.layer_norm_eps ?? 1e-6,
      activation: try VisionActivation(
        configName: vc.hidden_act ?? "gelu_pytorch_tanh", source: configPath))
    postNorm = (
      try w.vector(v + "post_layernorm.weight", d), try w.vector(v + "post_layernorm.bias", d)
    )
    projection = try w.weights(
      "model.connector.modality_projection.proj.weight", rows: textConfig.hiddenSize,
      cols: d * s * s)
    decoder = try LlamaModel.load(
      folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: textConfig,
      meter: meter)
  }

  public var visionParameterCount: Int {
    embedding.parameterCount + encoder.parameterCount
      + 2 * postNorm.weight.count + projection.rows * projection.cols
  }

  public var tokensPerUnit: Int? { seqLen }
  public var unitDescription: String {
    "tile \(imageSize)×\(imageSize) → \(seqLen) tokens"
      + (splitter.splitting ? " (images split into tiles + a global image)" : "")
  }

  public func layout(image: ImageSource, at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    let plan = try splitter.plan(height: image.height, width: image.width)
    let splitter = self.splitter
    let memo = TileMemo { try splitter.split(image.load()).tiles }
    return layout(rows: plan.rows, cols: plan.cols, at: index, frame: nil, start: start) {
      [try memo.tile($0)]
    }
  }

  /// The frames of a clip, a part at a time, each frame one unsplit tile. With `times`, as
  /// SmolVLM's processor lays out a video (transformers' `SmolVLMProcessor`): the opening text
  /// "You are provided the following series of {count in words} frames from a {H:MM:SS}
  /// [H:MM:SS] video.\n", one part per frame ("\nFrame from mm:ss:" and its tile; times are
  /// whole seconds, rounded down), the closing "\n\n". Without, one part per frame: its tile.
  public func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource, times: ClipTimes?,
    at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout {
    precondition(times.map { $0.seconds.count == count } ?? true)
    var noSplit = splitter
    noSplit.splitting = false
    let unsplit = noSplit
    let clip = TokenOrigin(modality: .video, input: index.input, image: index.image)
    // The parts are laid out by a @Sendable closure, so the helpers it calls are @Sendable too
    // (everything they capture is: the splitter, the times, the source, this model).
    @Sendable func text(_ s: String, frame: Int?, start: Int) -> [PromptSegment] {
      var origin = clip
      origin.frame = frame
      let seg = textSegment(s, origin: origin, start: start, mrope: false)
      return seg.count > 0 ? [seg] : []
    }
    @Sendable func frame(_ f: Int, start: Int) throws -> PromptLayout {
      let image = try source(f)
      var label: [PromptSegment] = []
      if let times {
        let t = Swift.max(0, times.seconds[f])
        label = text(
          String(format: "\nFrame from %02d:%02d:", Int(t / 60), Int(t.truncatingRemainder(dividingBy: 60))),
          frame: f, start: start)
      }
      let at = start + label.reduce(0) { $0 + $1.count }
      let l = layout(rows: 0, cols: 0, at: index, frame: f, start: at) { _ in
        try unsplit.split(image.load()).tiles
      }
      return PromptLayout(segments: label + l.segments, nextPosition: l.nextPosition)
    }
    @Sendable func whole(_ segments: [PromptSegment], _ start: Int) -> PromptLayout {
      PromptLayout(segments: segments, nextPosition: start + segments.reduce(0) { $0 + $1.count })
    }
    guard let times else {
      return StreamedLayout(parts: count) { i, start in try frame(i, start: start) }
    }
    let seconds = Swift.max(0, Int(times.duration.isFinite ? times.duration : 0))
    let opening =
      "You are provided the following series of \(NumberWords.english(count)) frames from a "
      + String(format: "%d:%02d:%02d", seconds / 3600, seconds / 60 % 60, seconds % 60)
      + " [H:MM:SS] video.\n"
    return StreamedLayout(parts: count + 2) { i, start in
      switch i {
      case 0: return whole(text(opening, frame: nil, start: start), start)
      case count + 1: return whole(text("\n\n", frame: nil, start: start), start)
      default: return try frame(i - 1, start: start)
      }
    }
  }

  /// The prompt of one image split `rows × cols` (0 × 0: the global image alone); `tile(i)`
  /// gives tile i's pixels (the global image is the last).
  func layout(
    rows: Int, cols: Int, at index: VisualInputIndex, frame: Int?, start: Int,
    tile: @escaping @Sendable (Int) throws -> [PixelValues]
  ) -> PromptLayout {
    var segments: [PromptSegment] = []
    var position = start
    let marker = TokenOrigin(
      modality: frame == nil ? .image : .video, input: index.input, image: index.image,
      frame: frame)
    func text(_ s: String) {
      let seg = textSegment(s, origin: marker, start: position, mrope: false)
      segments.append(seg)
      position += seg.count
    }
    func unit(_ i: Int) {
      segments.append(
        .squareUnit(
          id: imageTokenID, count: seqLen, origin: marker, tile: i, start: position,
          pixels: { try tile(i) }))
      position += seqLen
    }
    if rows > 0 {
      for r in 0..<rows {
        for c in 0..<cols {
          text("<fake_token_around_image><row_\(r + 1)_col_\(c + 1)>")
          unit(r * cols + c)
        }
        text("\n")
      }
      text("\n<fake_token_around_image><global-img>")
    } else {
      text("<fake_token_around_image><global-img>")
    }
    unit(rows * cols)
    text("<fake_token_around_image>")
    return PromptLayout(segments: segments.filter { $0.count > 0 }, nextPosition: position)
  }

  /// SigLIP over one tile, post-norm, pixel shuffle, projection.
  public func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    let hidden = try visionHiddenStates(frames[0], meter: meter)
    return connect(hidden, meter: meter)
  }

  /// The vision tower's output for one tile (`patches × D`), after the post-LayerNorm.
  public func visionHiddenStates(_ tile: PixelValues, meter: MemoryMeter?) throws -> Matrix {
    // A full tile's patches take positions 0..<n in order: Idefics3's bucketised position ids
    // are the identity when every patch is real (the processor's tiles always are).
    let x = try embedding(tile, family: family, unit: "a tile", meter: meter)
    encoder.run(x, groups: [0..<x.rows], meter: meter)
    Kernels.layerNorm(
      x.pointer, weight: postNorm.weight.pointer, bias: postNorm.bias.pointer, eps: encoder.eps,
      rows: x.rows, cols: x.cols, out: x.pointer)
    return x
  }

  /// Pixel shuffle then projection.
  func connect(_ hidden: Matrix, meter: MemoryMeter?) -> Matrix {
    let shuffled = pixelShuffle(
      hidden, side: imageSize / patchSize, by: scaleFactor, meter: meter)
    let features = Matrix(
      uninitializedRows: shuffled.rows, cols: projection.rows, category: .vision, meter: meter)
    projection.apply(shuffled, into: features, category: .vision, meter: meter)
    return features
  }
}

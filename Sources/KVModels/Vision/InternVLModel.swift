import Foundation
import KVTensor

/// InternVL's dynamic tiling (transformers' GotOcr2ImageProcessorPil with the crop_to_patches
/// InternVLProcessor always asks for): the grid of tiles whose aspect ratio is closest to the
/// image's among those of `minTiles...maxTiles` tiles, the image resized (Pillow, 8-bit) to the
/// grid and cut row-major, plus the whole image resized to one tile (the thumbnail) when there is
/// more than one tile.
public struct InternVLTiler: Sendable, Equatable {
  public var tileSize: Int
  public var minTiles: Int
  public var maxTiles: Int
  /// Resample filter, rescale and normalisation (its resize is unused).
  public var normalization: ImagePreprocessor

  /// From preprocessor_config.json, with GotOcr2ImageProcessor's class defaults.
  init(config: [String: JSONValue], path: String) throws {
    func fail(_ m: String) -> ModelError { ModelError(path: path, message: m) }
    var dict = config
    dict["image_processor_type"] = nil
    if dict["size"] == nil { dict["size"] = .object(["height": .int(384), "width": .int(384)]) }
    if dict["resample"] == nil { dict["resample"] = .int(3) }
    if dict["do_normalize"] == nil { dict["do_normalize"] = .bool(true) }
    let prep = try ImagePreprocessor(config: dict, path: path)
    guard case .exact(let h, let w)? = prep.resize, h == w else {
      throw fail("\"size\" must be one square tile {\"height\": n, \"width\": n}")
    }
    func count(_ key: String, _ fallback: Int) throws -> Int {
      guard let v = config[key], !v.isNull else { return fallback }
      guard let n = v.int, (1...Self.maxTilesLimit).contains(n) else {
        throw fail("\"\(key)\" must be an integer in 1...\(Self.maxTilesLimit), got \(v.brief)")
      }
      return n
    }
    tileSize = h
    minTiles = try count("min_patches", 1)
    maxTiles = try count("max_patches", 12)
    guard minTiles <= maxTiles else {
      throw fail("min_patches \(minTiles) is more than max_patches \(maxTiles)")
    }
    normalization = prep
  }

  /// The most tiles one image may take (each tile is a visual unit with its own tokens).
  static let maxTilesLimit = 64

  /// `get_optimal_tiled_canvas`: (columns, rows).
  public func grid(height: Int, width: Int) -> (cols: Int, rows: Int) {
    guard maxTiles > 1 else { return (1, 1) }
    // get_all_supported_aspect_ratios: (w, h) pairs in loop order, stably sorted by area.
    var ratios: [(Int, Int)] = []
    for w in 1...maxTiles {
      for h in 1...maxTiles where w * h <= maxTiles && w * h >= minTiles { ratios.append((w, h)) }
    }
    ratios = ratios.enumerated().sorted { ($0.1.0 * $0.1.1, $0.0) < ($1.1.0 * $1.1.1, $1.0) }
      .map(\.1)
    let aspect = Double(width) / Double(height)
    let area = Double(width * height)
    var best = Double.infinity
    var grid = (1, 1)
    for g in ratios {
      let diff = abs(aspect - Double(g.0) / Double(g.1))
      if diff < best {
        best = diff
        grid = g
      } else if diff == best, area > 0.5 * Double(tileSize * tileSize * g.0 * g.1) {
        grid = g
      }
    }
    return grid
  }

  /// Tiles an image becomes (the thumbnail included).
  public func tileCount(height: Int, width: Int) -> Int {
    let g = grid(height: height, width: width)
    return g.cols * g.rows == 1 ? 1 : g.cols * g.rows + 1
  }

  /// The tiles, row-major, then the thumbnail.
  public func split(_ image: RGBImage) -> [PixelValues] {
    let img = image.compositedOverWhite()
    let t = tileSize
    let filter = normalization.resample
    let g = grid(height: img.height, width: img.width)
    if g.cols * g.rows == 1 || maxTiles <= 1 {
      return [normalization.normalized(img.resized(width: t, height: t, filter: filter))]
    }
    let resized = img.resized(width: t * g.cols, height: t * g.rows, filter: filter)
    var tiles: [PixelValues] = []
    for i in 0..<(g.cols * g.rows) {
      tiles.append(
        normalization.normalized(
          resized.cropped(x: (i % g.cols) * t, y: (i / g.cols) * t, width: t, height: t)))
    }
    tiles.append(normalization.normalized(img.resized(width: t, height: t, filter: filter)))
    return tiles
  }

  /// A video frame: one tile, resized only when it is not one already.
  public func frame(_ image: RGBImage) -> PixelValues {
    var img = image.compositedOverWhite()
    if img.width != tileSize || img.height != tileSize {
      img = img.resized(width: tileSize, height: tileSize, filter: normalization.resample)
    }
    return normalization.normalized(img)
  }
}

/// InternVL in transformers' layout (`model_type: internvl`, the `-hf` checkpoints): InternViT
/// over one tile at a time, the class token dropped, pixel shuffle (downsample_ratio 0.5: 2×2
/// patches per token), an MLP projector (LayerNorm, linear, GELU, linear), and a Qwen2 or Qwen3
/// decoder. An image is `<img>` + `<IMG_CONTEXT>` × tokens per tile × tiles + `</img>`; a clip is
/// "Frame{i}: <img>…</img>" lines, one tile per frame, as InternVLProcessor writes them.
public final class InternVLModel: VisionLanguageFamily, @unchecked Sendable {
  public let family = "internvl"
  public static let unitName = "tile"
  public let decoder: LlamaModel
  public let tokenizer: BPETokenizer
  public let chat: ChatLayout
  public let tiler: InternVLTiler

  let tower: InternViT
  /// Blocks run for the selected hidden state (all: the last, after the final norm if any).
  let blocks: Int
  /// Patches per side merged into one token (1 / downsample_ratio).
  let shuffle: Int
  let projectorNorm: (weight: FloatBuffer, bias: FloatBuffer)
  let projector1: WeightMatrix
  let projector1Bias: FloatBuffer
  let projector2: WeightMatrix
  let projector2Bias: FloatBuffer
  let projectorActivation: VisionActivation
  let imageTokenID: Int
  /// Tokens per tile.
  let seqLen: Int

  /// LayerNorm epsilon of the projector (nn.LayerNorm's default; the config has none for it).
  static let projectorEps: Float = 1e-5

  /// `modelType` changes nothing: the family has one layout.
  public init(folder: HFModelFolder, modelType _: String, meter: MemoryMeter?) throws {
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    let c = folder.config
    guard c["vision_config"]?.object != nil else { throw fail("no vision_config") }
    let vc = try folder.decodeConfig(InternViTConfig.self, at: "vision_config")
    try vc.validate(configPath: configPath)
    var textConfig = try folder.decodeConfig(DecoderConfig.self, at: "text_config")
    guard ["qwen2", "qwen3"].contains(textConfig.architecture) else {
      throw fail(
        "text_config.model_type '\(textConfig.architecture)' is not supported (qwen2, qwen3)")
    }
    // transformers ties the output head by the top-level flag (InternVLConfig's default: true).
    textConfig.tiedEmbeddings = c["tie_word_embeddings"]?.bool ?? true

    let ratio = c["downsample_ratio"]?.double ?? 0.5
    let s = ratio > 0 ? Int((1 / ratio).rounded()) : 0
    let side = vc.image_size / vc.patch_size
    guard s >= 1, abs(Double(s) * ratio - 1) < 1e-9, side % s == 0 else {
      throw fail(
        "downsample_ratio \(ratio) does not split the \(side)×\(side) patch grid into whole blocks")
    }
    shuffle = s
    seqLen = (side / s) * (side / s)
    if let n = c["image_seq_length"]?.int, n != seqLen {
      throw fail(
        "image_seq_length \(n) differs from the \(seqLen) tokens a \(vc.image_size)-pixel tile makes")
    }
    let layer = c["vision_feature_layer"]?.int ?? (c["vision_feature_layer"] == nil ? -1 : nil)
    guard let layer, (-(vc.num_hidden_layers + 1)...vc.num_hidden_layers).contains(layer) else {
      throw fail("vision_feature_layer must be one integer inside the vision tower")
    }
    blocks = layer < 0 ? vc.num_hidden_layers + 1 + layer : layer
    let strategy = c["vision_feature_select_strategy"]?.string ?? "default"
    guard strategy == "default" else {
      throw fail("vision_feature_select_strategy '\(strategy)' is not supported (default)")
    }
    projectorActivation = try VisionActivation(
      configName: c["projector_hidden_act"]?.string ?? "gelu", source: configPath)

    tokenizer = try VisionLanguageModels.tokenizer(in: folder)
    imageTokenID =
      try c["image_token_id"]?.int
      ?? VisionLanguageModels.id("<IMG_CONTEXT>", in: tokenizer, folder: folder)
    for t in ["<img>", "</img>"] { _ = try VisionLanguageModels.id(t, in: tokenizer, folder: folder) }
    let prepPath = (folder.path as NSString).appendingPathComponent("preprocessor_config.json")
    let prepConfig =
      FileManager.default.fileExists(atPath: prepPath)
      ? try HFModelFolder.readJSONObject(prepPath) : [:]
    tiler = try InternVLTiler(config: prepConfig, path: prepPath)
    guard tiler.tileSize == vc.image_size else {
      throw ModelError(
        path: prepPath,
        message:
          "tile size \(tiler.tileSize) differs from the vision tower's image_size \(vc.image_size)")
    }
    // ChatML; a default system prompt only when the folder's template states one.
    let templatePath = (folder.path as NSString).appendingPathComponent("chat_template.jinja")
    let template =
      (try? String(contentsOfFile: templatePath, encoding: .utf8)).flatMap { ChatTemplate(jinja: $0) }
      ?? ChatTemplate(defaultSystemPrompt: nil)
    var layout = ChatLayout(template)
    layout.afterVisual = "\n"
    chat = layout

    let w = WeightReader(folder: folder, category: .weights, meter: meter)
    let v = try w.prefix(["model.vision_tower.", "vision_tower."], probe: "embeddings.cls_token")
    tower = try InternViT(w, prefix: v, config: vc, configPath: configPath)
    let p = try w.prefix(
      ["model.multi_modal_projector.", "multi_modal_projector."], probe: "linear_1.weight")
    let wide = vc.hidden_size * s * s
    let text = textConfig.hiddenSize
    projectorNorm = (
      try w.vector(p + "layer_norm.weight", wide), try w.vector(p + "layer_norm.bias", wide)
    )
    projector1 = try w.weights(p + "linear_1.weight", rows: text, cols: wide)
    projector1Bias = try w.vector(p + "linear_1.bias", text)
    projector2 = try w.weights(p + "linear_2.weight", rows: text, cols: text)
    projector2Bias = try w.vector(p + "linear_2.bias", text)
    decoder = try LlamaModel.load(
      folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: textConfig,
      meter: meter)
  }

  public var visionParameterCount: Int {
    tower.parameterCount + 2 * projectorNorm.weight.count + projector1.rows * projector1.cols
      + projector1Bias.count + projector2.rows * projector2.cols + projector2Bias.count
  }

  public var tokensPerUnit: Int? { seqLen }
  public var unitDescription: String {
    "tile \(tiler.tileSize)×\(tiler.tileSize) → \(seqLen) tokens (images in \(tiler.minTiles)–\(tiler.maxTiles) tiles + a thumbnail)"
  }

  public func layout(image: ImageSource, at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    guard image.width > 0, image.height > 0 else {
      throw ImageError(path: "\(image.width)×\(image.height) image", message: "has no pixels")
    }
    let tiler = self.tiler
    let memo = TileMemo { tiler.split(try image.load()) }
    var l = Layout(model: self, index: index, frame: nil, position: start)
    l.text("<img>")
    for i in 0..<tiler.tileCount(height: image.height, width: image.width) {
      l.unit(tile: i) { [try memo.tile(i)] }
    }
    l.text("</img>")
    return PromptLayout(segments: l.segments, nextPosition: l.position)
  }

  /// A clip: per frame "Frame{i}: <img>" + one tile + "</img>", lines joined by "\n".
  public func layout(frames: [ImageSource], at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    let tiler = self.tiler
    var l = Layout(model: self, index: index, frame: nil, position: start)
    for (f, frame) in frames.enumerated() {
      l.frame = f
      l.text((f == 0 ? "" : "\n") + "Frame\(f + 1): <img>")
      l.unit(tile: nil) { [tiler.frame(try frame.load())] }
      l.text("</img>")
    }
    return PromptLayout(segments: l.segments, nextPosition: l.position)
  }

  /// Segments under construction: text markers and one visual unit per tile.
  struct Layout {
    let model: InternVLModel
    let index: VisualInputIndex
    var frame: Int?
    var position: Int
    var segments: [PromptSegment] = []

    init(model: InternVLModel, index: VisualInputIndex, frame: Int?, position: Int) {
      self.model = model
      self.index = index
      self.frame = frame
      self.position = position
    }

    var marker: TokenOrigin {
      TokenOrigin(
        modality: frame == nil ? .image : .video, input: index.input, image: index.image,
        frame: frame)
    }

    mutating func text(_ s: String) {
      let seg = model.textSegment(s, origin: marker, start: position, mrope: false)
      if seg.count > 0 { segments.append(seg) }
      position += seg.count
    }

    mutating func unit(tile: Int?, pixels: @escaping @Sendable () throws -> [PixelValues]) {
      segments.append(
        .squareUnit(
          id: model.imageTokenID, count: model.seqLen, origin: marker, tile: tile, start: position,
          pixels: pixels))
      position += model.seqLen
    }
  }

  /// InternViT over one tile, class token dropped, pixel shuffle, projector.
  public func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    guard frames.count == 1 else {
      throw ModelError(path: "internvl", message: "a unit is one tile, got \(frames.count) frames")
    }
    let hidden = try tower.run(frames[0], blocks: blocks, meter: meter)
    // Row 0 of `hidden` is the class token.
    let shuffled = pixelShuffle(hidden, from: 1, side: tower.side, by: shuffle, meter: meter)
    let (rows, wide) = (shuffled.rows, shuffled.cols)
    Kernels.layerNorm(
      shuffled.pointer, weight: projectorNorm.weight.pointer, bias: projectorNorm.bias.pointer,
      eps: Self.projectorEps, rows: rows, cols: wide, out: shuffled.pointer)
    let text = projector1.rows
    let h = Matrix(uninitializedRows: rows, cols: text, category: .vision, meter: meter)
    projector1.apply(shuffled, into: h, category: .vision, meter: meter)
    Kernels.addBias(h.pointer, bias: projector1Bias.pointer, rows: rows, cols: text)
    projectorActivation.apply(h.pointer, count: rows * text)
    let features = Matrix(uninitializedRows: rows, cols: text, category: .vision, meter: meter)
    projector2.apply(h, into: features, category: .vision, meter: meter)
    Kernels.addBias(features.pointer, bias: projector2Bias.pointer, rows: rows, cols: text)
    return features
  }
}

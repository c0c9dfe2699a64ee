import Foundation
import KVTensor

/// Qwen2-VL and Qwen2.5-VL: a ViT over 2·p×p×(2 frames) patches (one Conv3d = one matmul)
/// with 2-D rotary embeddings, a patch merger (norm, 2×2 neighbouring patches concatenated,
/// 2-layer MLP), and a qwen2 decoder with M-RoPE: visual tokens take (t, row, col) positions
/// offset by where the image starts, text continues after the image's largest spatial extent.
/// An image is one temporal patch (the frame twice); a clip is one temporal patch per two frames.
///
/// Qwen2.5-VL differs in the tower only: RMSNorms, gated (SwiGLU) MLPs, attention within
/// windows of merged units except in `fullatt_block_indexes` (the patches are reordered window
/// by window for the tower and the merged tokens put back after), an RMSNorm before the merger;
/// and a clip's temporal positions are spaced by its frame rate (`tokens_per_second`).
public final class Qwen2VLModel: VisionLanguageFamily, StreamedClipFamily, @unchecked Sendable {
  public let family: String
  /// A unit is a temporal patch: an image, or two consecutive frames of a clip.
  public static let unitName = "temporal patch"
  public let decoder: LlamaModel
  public let tokenizer: BPETokenizer
  public let chat: ChatLayout
  public let imagePreprocessor: ImagePreprocessor
  public let videoPreprocessor: ImagePreprocessor

  let patchSize: Int
  let mergeSize: Int
  let temporalPatch: Int
  let patchEmbedding: Matrix  // [E][3·t·p·p], no bias
  let encoder: VisionTransformer
  let mergerNorm: (weight: FloatBuffer, bias: FloatBuffer?)  // no bias: an RMSNorm
  let merger1: WeightMatrix  // [4E][4E]
  let merger1Bias: FloatBuffer
  let merger2: WeightMatrix  // [out][4E]
  let merger2Bias: FloatBuffer
  let inverseFrequencies: [Float]  // the vision RoPE's, head_dim/4 of them
  let windowing: QwenVisionConfig.Windowing?
  let imageTokenID: Int
  let videoTokenID: Int

  /// The frame rate transformers assumes for frames given without one (VideoMetadata's
  /// `sampled_fps` when the fps is unknown).
  public static let defaultFramesPerSecond = 24.0

  /// `modelType`: "qwen2_vl" or "qwen2_5_vl" (the folder's model_type; the tower differs).
  public init(folder: HFModelFolder, modelType family: String, meter: MemoryMeter?) throws {
    self.family = family
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    let vc = try QwenVisionConfig(folder: folder, family: family)
    // transformers 5 nests the decoder in text_config; 4.x kept it at the top level.
    let textConfig =
      folder.config["text_config"]?.object != nil
      ? try folder.decodeConfig(DecoderConfig.self, at: "text_config")
      : try folder.decodeConfig(DecoderConfig.self)
    guard textConfig.mropeSection != nil else {
      throw fail("text config has no rope_parameters.mrope_section (Qwen2-VL's M-RoPE)")
    }
    patchSize = vc.patchSize
    mergeSize = vc.mergeSize
    temporalPatch = vc.temporalPatch
    windowing = vc.windowed
    guard vc.outWidth == textConfig.hiddenSize else {
      throw fail(
        "vision \(vc.windowed == nil ? "hidden_size" : "out_hidden_size") \(vc.outWidth) differs from the decoder's \(textConfig.hiddenSize)"
      )
    }

    tokenizer = try VisionLanguageModels.tokenizer(in: folder)
    let c = folder.config
    imageTokenID =
      try c["image_token_id"]?.int
      ?? VisionLanguageModels.id("<|image_pad|>", in: tokenizer, folder: folder)
    videoTokenID =
      try c["video_token_id"]?.int
      ?? VisionLanguageModels.id("<|video_pad|>", in: tokenizer, folder: folder)
    for t in ["<|vision_start|>", "<|vision_end|>"] {
      _ = try VisionLanguageModels.id(t, in: tokenizer, folder: folder)
    }
    guard let prep = try folder.imagePreprocessor() else {
      throw ModelError(path: folder.path, message: "no preprocessor_config.json in this folder")
    }
    imagePreprocessor = prep
    let videoPath = (folder.path as NSString).appendingPathComponent(
      "video_preprocessor_config.json")
    if FileManager.default.fileExists(atPath: videoPath) {
      var video = try HFModelFolder.readJSONObject(videoPath)
      // The video processor's class name is not an image processor's: read it as Qwen2-VL's.
      video["image_processor_type"] = .string("Qwen2VLImageProcessor")
      do {
        videoPreprocessor = try ImagePreprocessor(config: video, path: videoPath)
      } catch let e as ImagePreprocessor.ConfigError {
        throw ModelError(path: videoPath, message: String(e.message.dropFirst(videoPath.count + 2)))
      }
    } else {
      videoPreprocessor = prep
    }
    chat = ChatLayout(ChatTemplate(defaultSystemPrompt: "You are a helpful assistant."))

    let w = WeightReader(folder: folder, category: .weights, meter: meter)
    let e = vc.width
    let v = try w.prefix(["model.visual.", "visual."], probe: "patch_embed.proj.weight")
    patchEmbedding = try w.flattened(
      v + "patch_embed.proj.weight", shape: [e, 3, temporalPatch, patchSize, patchSize])
    let windowed = vc.windowed != nil
    encoder = try VisionTransformer.load(
      w,
      names: (0..<vc.depth).map {
        windowed ? .qwen25VL(v + "blocks.\($0).") : .qwen2VL(v + "blocks.\($0).")
      }, hidden: e, heads: vc.heads, intermediate: vc.intermediate, eps: 1e-6,
      activation: windowed
        ? .gelu  // unused: the gated MLP applies SiLU itself
        : try VisionActivation(configName: vc.activation, source: configPath))
    let merged = e * mergeSize * mergeSize
    mergerNorm = (
      try w.vector(v + "merger.ln_q.weight", e),
      windowed ? nil : try w.vector(v + "merger.ln_q.bias", e)
    )
    merger1 = try w.weights(v + "merger.mlp.0.weight", rows: merged, cols: merged)
    merger1Bias = try w.vector(v + "merger.mlp.0.bias", merged)
    merger2 = try w.weights(v + "merger.mlp.2.weight", rows: vc.outWidth, cols: merged)
    merger2Bias = try w.vector(v + "merger.mlp.2.bias", vc.outWidth)
    let theta = Float(
      c["vision_config"]?.object?["rope_parameters"]?.object?["rope_theta"]?.double ?? 10000)
    inverseFrequencies =
      RotaryEmbedding(dimension: e / vc.heads / 2, base: theta)
      .inverseFrequencies
    decoder = try LlamaModel.load(
      folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: textConfig,
      meter: meter)
  }

  public var visionParameterCount: Int {
    patchEmbedding.rows * patchEmbedding.cols + encoder.parameterCount + mergerNorm.weight.count
      + (mergerNorm.bias?.count ?? 0)
      + merger1.rows * merger1.cols + merger1Bias.count + merger2.rows * merger2.cols
      + merger2Bias.count
  }

  public var tokensPerUnit: Int? { nil }  // depends on the image's size
  public var unitDescription: String {
    let f = patchSize * mergeSize
    return
      "one token per \(f)×\(f) pixels (\(temporalPatch) frames per temporal patch); images resized to multiples of \(f)"
  }

  public func layout(image: ImageSource, at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    let size = try imagePreprocessor.outputSize(height: image.height, width: image.width)
    let (prep, copies) = (imagePreprocessor, temporalPatch)
    let unit: @Sendable () throws -> [PixelValues] = {
      Array(repeating: try prep(image.load()), count: copies)
    }
    return try layout(
      size: size, units: [unit], token: imageTokenID, at: index, temporalStep: nil, start: start)
  }

  public func layout(
    frames: [ImageSource], framesPerSecond fps: Double, at index: VisualInputIndex, start: Int
  ) throws -> PromptLayout {
    try streamedLayout(
      frames: frames.count, source: { frames[$0] }, framesPerSecond: fps, at: index, start: start
    ).collect(start: start)
  }

  /// A clip a temporal patch at a time (`<|vision_start|>`, one part per unit of
  /// `temporalPatch` frames, `<|vision_end|>`): with `times`, Qwen2.5-VL spaces temporal
  /// positions by the frames' rate (frames over the video's length, transformers'
  /// `sampled_fps`); Qwen2-VL does not use it.
  public func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource, times: ClipTimes?,
    at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout {
    let fps =
      times.map { $0.duration > 0 && $0.duration.isFinite ? Double(count) / $0.duration : nil }
      ?? nil
    return try streamedLayout(
      frames: count, source: source, framesPerSecond: fps ?? Self.defaultFramesPerSecond,
      at: index, start: start)
  }

  func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource,
    framesPerSecond fps: Double, at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout {
    guard count > 0 else {
      throw ModelError(path: family, message: "a clip needs frames")
    }
    guard fps > 0, fps.isFinite else {
      throw ModelError(path: family, message: "a clip's frame rate must be positive, got \(fps)")
    }
    let first = try source(0)
    let (width, height) = (first.width, first.height)
    let size = try videoPreprocessor.outputSize(height: height, width: width)
    // The last frame repeats up to a whole temporal patch.
    let (patch, family) = (temporalPatch, self.family)
    let units = (count + patch - 1) / patch
    let prep = videoPreprocessor
    // Qwen2.5-VL: temporal patch t sits at ⌊t · tokens_per_second · seconds per patch⌋, in
    // float32 as transformers computes it (the processor's second_per_grid_ts is a float32
    // tensor); Qwen2-VL: at t.
    let step = windowing.map { w in
      Float(w.tokensPerSecond) * Float(Double(patch) / fps)
    }
    // A frame rate near zero (a hostile video length) must not push positions past Int.
    if let step, !(step.isFinite && Float(units) * step < 1e9) {
      throw ModelError(
        path: family,
        message:
          "a clip of \(count) frames at \(fps) frames a second spreads its temporal positions too far"
      )
    }
    return try streamedLayout(
      size: size, units: units, token: videoTokenID, at: index, temporalStep: step ?? 1
    ) { t in
      let group = try (t * patch..<((t + 1) * patch)).map { try source(Swift.min($0, count - 1)) }
      for f in group where f.width != width || f.height != height {
        throw ModelError(
          path: family,
          message:
            "the frames of a clip must share one size (\(width)×\(height), then \(f.width)×\(f.height))"
        )
      }
      return { @Sendable in try group.map { try prep($0.load()) } }
    }
  }

  /// `<|vision_start|>`, the units' tokens with 3-D positions, `<|vision_end|>`. `temporalStep`
  /// is nil for an image, else the temporal position step per unit of a clip.
  func layout(
    size: (height: Int, width: Int), units: [@Sendable () throws -> [PixelValues]], token: Int,
    at index: VisualInputIndex, temporalStep: Float?, start: Int
  ) throws -> PromptLayout {
    try streamedLayout(
      size: size, units: units.count, token: token, at: index, temporalStep: temporalStep
    ) { units[$0] }.collect(start: start)
  }

  /// The same a part at a time: the start marker, one part per unit (`unit(t)` gives unit t's
  /// pixels; its tokens sit at the position after the start marker, which the part passes
  /// on), the end marker.
  func streamedLayout(
    size: (height: Int, width: Int), units: Int, token: Int, at index: VisualInputIndex,
    temporalStep: Float?, unit: @escaping @Sendable (Int) throws -> @Sendable () throws -> [PixelValues]
  ) throws -> StreamedLayout {
    let f = patchSize * mergeSize
    guard size.height % f == 0, size.width % f == 0, size.height > 0, size.width > 0 else {
      throw ModelError(
        path: family,
        message:
          "the preprocessor makes \(size.width)×\(size.height) images, not a multiple of \(f)")
    }
    let video = temporalStep != nil
    let rows = size.height / f
    let cols = size.width / f
    let marker = TokenOrigin(
      modality: video ? .video : .image, input: index.input, image: index.image)
    let patch = temporalPatch
    return StreamedLayout(parts: units + 2) { [self] i, start in
      switch i {
      case 0:
        let open = textSegment("<|vision_start|>", origin: marker, start: start, mrope: true)
        return PromptLayout(segments: [open], nextPosition: start + open.count)
      case units + 1:
        // transformers 5.24's get_rope_index: text resumes max(rows, cols) after the image
        // start.
        let next = start + max(rows, cols)
        let close = textSegment("<|vision_end|>", origin: marker, start: next, mrope: true)
        return PromptLayout(segments: [close], nextPosition: next + close.count)
      default:
        let t = i - 1
        let origin = start
        var origins: [TokenOrigin] = []
        var axes: [[Int]] = [[], [], []]
        let time = temporalStep.map { Int((Float(t) * $0).rounded(.towardZero)) } ?? t
        for r in 0..<rows {
          for c in 0..<cols {
            var o = marker
            o.row = r
            o.col = c
            if video { o.frame = t * patch }
            origins.append(o)
            axes[0].append(origin + time)
            axes[1].append(origin + r)
            axes[2].append(origin + c)
          }
        }
        let segment = PromptSegment(
          tokens: Array(repeating: token, count: rows * cols), origins: origins,
          positions: axes[0], ropeAxes: axes,
          visual: VisualUnit(tokenRows: rows, tokenCols: cols, pixels: try unit(t)))
        // The units' tokens sit after the start marker; the next part starts there too.
        return PromptLayout(segments: [segment], nextPosition: start)
      }
    }
  }

  /// Patches in merge-block order: for each m×m block of the patch grid (row-major), its
  /// patches row-major — the order the processor flattens them and the merger groups them.
  func patchOrder(gridRows: Int, gridCols: Int) -> [(y: Int, x: Int)] {
    let m = mergeSize
    var order: [(y: Int, x: Int)] = []
    for by in 0..<(gridRows / m) {
      for bx in 0..<(gridCols / m) {
        for i in 0..<m {
          for j in 0..<m { order.append((by * m + i, bx * m + j)) }
        }
      }
    }
    return order
  }

  /// The order the tower sees a frame's merged units in, and the row ranges attention is
  /// confined to in each block: Qwen2-VL, the units in order and the whole frame everywhere;
  /// Qwen2.5-VL, window by window and each window except in the full-attention blocks.
  func towerLayout(gridRows: Int, gridCols: Int) -> (
    units: [Int], groups: (_ block: Int) -> [Range<Int>]
  ) {
    let (rows, cols) = (gridRows / mergeSize, gridCols / mergeSize)
    let whole = [0..<(rows * cols * mergeSize * mergeSize)]
    guard let windowing else { return (Array(0..<(rows * cols)), { _ in whole }) }
    let (units, windows) = qwenWindows(rows: rows, cols: cols, side: windowing.units)
    let group = mergeSize * mergeSize
    let ranges = windows.map { ($0.lowerBound * group)..<($0.upperBound * group) }
    let full = windowing.fullAttentionBlocks
    return (units, { full.contains($0) ? whole : ranges })
  }

  public func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    guard frames.count == temporalPatch else {
      throw ModelError(
        path: family, message: "a unit needs \(temporalPatch) frames, got \(frames.count)")
    }
    let gridRows = frames[0].height / patchSize
    let gridCols = frames[0].width / patchSize
    let patches = patchMatrix(
      frames, patch: patchSize, order: patchOrder(gridRows: gridRows, gridCols: gridCols),
      category: .vision, meter: meter)
    return try encode(patches: patches, gridRows: gridRows, gridCols: gridCols, meter: meter)
  }

  /// The decoder-space tokens of one temporal patch from already flattened patches (the
  /// processor's `pixel_values` rows, merge-block order), one row per merged unit, row-major.
  public func encode(patches: Matrix, gridRows: Int, gridCols: Int, meter: MemoryMeter?) throws
    -> Matrix
  {
    guard gridRows % mergeSize == 0, gridCols % mergeSize == 0,
      patches.cols == patchEmbedding.cols, patches.rows == gridRows * gridCols
    else {
      throw ModelError(
        path: family,
        message:
          "expected \(gridRows * gridCols) patches of \(patchEmbedding.cols) values in a grid of whole \(mergeSize)×\(mergeSize) blocks, got \(patches.rows) of \(patches.cols)"
      )
    }
    let (units, groups) = towerLayout(gridRows: gridRows, gridCols: gridCols)
    let group = mergeSize * mergeSize
    let blockOrder = patchOrder(gridRows: gridRows, gridCols: gridCols)
    // The tower's row i holds patch `order[i]` (windows reorder whole merged units).
    let order = units.flatMap { u in blockOrder[(u * group)..<((u + 1) * group)] }
    let reordered: Matrix
    if units == Array(0..<units.count) {
      reordered = patches
    } else {
      reordered = Matrix(
        uninitializedRows: patches.rows, cols: patches.cols, category: .vision, meter: meter)
      for (i, u) in units.enumerated() {
        (reordered.row(i * group)).update(from: patches.row(u * group), count: group * patches.cols)
      }
    }
    let e = encoder.hidden
    let x = Matrix(uninitializedRows: patches.rows, cols: e, category: .vision, meter: meter)
    Linear.apply(reordered, patchEmbedding, into: x)
    // 2-D RoPE: the first quarter of frequencies turn with the row, the second with the column
    // (then the halves repeat, rotate-half style).
    let quarter = inverseFrequencies.count
    let half = 2 * quarter
    var cos = [Float](repeating: 0, count: order.count * half)
    var sin = [Float](repeating: 0, count: order.count * half)
    for (r, cell) in order.enumerated() {
      for i in 0..<half {
        let angle = Float(i < quarter ? cell.y : cell.x) * inverseFrequencies[i % quarter]
        cos[r * half + i] = Foundation.cos(angle)
        sin[r * half + i] = Foundation.sin(angle)
      }
    }
    encoder.run(
      x, groups: groups, rotary: RotaryTable(half: half, cos: cos, sin: sin), meter: meter)
    let merged = merge(x, meter: meter)
    guard units != Array(0..<units.count) else { return merged }
    // Back to row-major: merged row i is unit units[i].
    let out = Matrix(
      uninitializedRows: merged.rows, cols: merged.cols, category: .vision, meter: meter)
    for (i, u) in units.enumerated() {
      out.row(u).update(from: merged.row(i), count: merged.cols)
    }
    return out
  }

  /// The merger: normalise each patch, concatenate each m×m block's patches, MLP.
  public func merge(_ hidden: Matrix, meter: MemoryMeter?) -> Matrix {
    let e = encoder.hidden
    let group = mergeSize * mergeSize
    let n = hidden.rows / group
    let normed = Matrix(uninitializedRows: n, cols: e * group, category: .vision, meter: meter)
    // Rows are consecutive in memory, so the m×m concatenation is a reinterpretation.
    if let bias = mergerNorm.bias {
      Kernels.layerNorm(
        hidden.pointer, weight: mergerNorm.weight.pointer, bias: bias.pointer, eps: 1e-6,
        rows: hidden.rows, cols: e, out: normed.pointer)
    } else {
      Kernels.rmsNorm(
        hidden.pointer, weight: mergerNorm.weight.pointer, eps: 1e-6, rows: hidden.rows, cols: e,
        out: normed.pointer)
    }
    let h = Matrix(uninitializedRows: n, cols: merger1.rows, category: .vision, meter: meter)
    merger1.apply(normed, into: h, category: .vision, meter: meter)
    Kernels.addBias(h.pointer, bias: merger1Bias.pointer, rows: n, cols: merger1.rows)
    Kernels.gelu(h.pointer, count: n * merger1.rows)
    let out = Matrix(uninitializedRows: n, cols: merger2.rows, category: .vision, meter: meter)
    merger2.apply(h, into: out, category: .vision, meter: meter)
    Kernels.addBias(out.pointer, bias: merger2Bias.pointer, rows: n, cols: merger2.rows)
    return out
  }
}

import Foundation
import KVTensor

/// Qwen2-VL: a ViT over 2·p×p×(2 frames) patches (one Conv3d = one matmul) with 2-D rotary
/// embeddings, a patch merger (LayerNorm, 2×2 neighbouring patches concatenated, 2-layer MLP),
/// and a qwen2 decoder with M-RoPE: visual tokens take (t, row, col) positions offset by where the
/// image starts, text continues after the image's largest spatial extent. An image is one
/// temporal patch (the frame twice); a clip is one temporal patch per two frames.
public final class Qwen2VLModel: VisionLanguageModel, @unchecked Sendable {
  public let family = "qwen2_vl"
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
  let mergerNorm: (weight: FloatBuffer, bias: FloatBuffer)
  let merger1: Matrix  // [4E][4E]
  let merger1Bias: FloatBuffer
  let merger2: Matrix  // [out][4E]
  let merger2Bias: FloatBuffer
  let inverseFrequencies: [Float]  // the vision RoPE's, head_dim/4 of them
  let imageTokenID: Int
  let videoTokenID: Int

  struct VisionConfig: Decodable {
    var depth: Int
    var embed_dim: Int
    var hidden_size: Int
    var mlp_ratio: Double?
    var num_heads: Int
    var patch_size: Int?
    var spatial_merge_size: Int?
    var temporal_patch_size: Int?
    var hidden_act: String?
    var in_channels: Int?
    var in_chans: Int?
  }

  init(folder: HFModelFolder, meter: MemoryMeter?) throws {
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    let vc = try folder.decodeConfig(VisionConfig.self, at: "vision_config")
    // transformers 5 nests the decoder in text_config; 4.x kept it at the top level.
    let textConfig =
      folder.config["text_config"]?.object != nil
      ? try folder.decodeConfig(DecoderConfig.self, at: "text_config")
      : try folder.decodeConfig(DecoderConfig.self)
    guard textConfig.mropeSection != nil else {
      throw fail("text config has no rope_parameters.mrope_section (Qwen2-VL's M-RoPE)")
    }
    patchSize = vc.patch_size ?? 14
    mergeSize = vc.spatial_merge_size ?? 2
    temporalPatch = vc.temporal_patch_size ?? 2
    for (name, v, limit) in [
      ("depth", vc.depth, 1024), ("embed_dim", vc.embed_dim, 1 << 20),
      ("hidden_size", vc.hidden_size, 1 << 20), ("num_heads", vc.num_heads, 1024),
      ("patch_size", patchSize, 1024), ("spatial_merge_size", mergeSize, 64),
      ("temporal_patch_size", temporalPatch, 64),
    ] where !(1...limit).contains(v) {
      throw fail("vision_config.\(name) \(v) is out of range (1...\(limit))")
    }
    if let r = vc.mlp_ratio, !(r > 0 && r <= 64) {
      throw fail("vision_config.mlp_ratio \(r) is out of range (0...64]")
    }
    guard (vc.in_channels ?? vc.in_chans ?? 3) == 3 else {
      throw fail("only 3-channel vision towers are supported")
    }
    guard patchSize > 0, mergeSize > 0, temporalPatch > 0, vc.num_heads > 0,
      vc.embed_dim % vc.num_heads == 0, (vc.embed_dim / vc.num_heads) % 4 == 0
    else {
      throw fail("vision embed_dim \(vc.embed_dim) / \(vc.num_heads) heads must be a multiple of 4")
    }
    guard vc.hidden_size == textConfig.hiddenSize else {
      throw fail(
        "vision hidden_size \(vc.hidden_size) differs from the decoder's \(textConfig.hiddenSize)")
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
    let e = vc.embed_dim
    let v = try w.prefix(["model.visual.", "visual."], probe: "patch_embed.proj.weight")
    patchEmbedding = try w.flattened(
      v + "patch_embed.proj.weight", shape: [e, 3, temporalPatch, patchSize, patchSize])
    let ratio = vc.mlp_ratio ?? 4
    encoder = try VisionTransformer.load(
      w, names: (0..<vc.depth).map { .qwen2VL(v + "blocks.\($0).") }, hidden: e,
      heads: vc.num_heads, intermediate: Int(Double(e) * ratio), eps: 1e-6,
      activation: try VisionActivation(
        configName: vc.hidden_act ?? "quick_gelu", source: configPath))
    let merged = e * mergeSize * mergeSize
    mergerNorm = (
      try w.vector(v + "merger.ln_q.weight", e), try w.vector(v + "merger.ln_q.bias", e)
    )
    merger1 = try w.matrix(v + "merger.mlp.0.weight", rows: merged, cols: merged)
    merger1Bias = try w.vector(v + "merger.mlp.0.bias", merged)
    merger2 = try w.matrix(v + "merger.mlp.2.weight", rows: vc.hidden_size, cols: merged)
    merger2Bias = try w.vector(v + "merger.mlp.2.bias", vc.hidden_size)
    let theta = Float(
      c["vision_config"]?.object?["rope_parameters"]?.object?["rope_theta"]?.double ?? 10000)
    inverseFrequencies =
      RotaryEmbedding(dimension: e / vc.num_heads / 2, base: theta)
      .inverseFrequencies
    decoder = try LlamaModel.load(
      folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: textConfig,
      meter: meter)
  }

  public var visionParameterCount: Int {
    patchEmbedding.rows * patchEmbedding.cols + encoder.parameterCount + 2 * mergerNorm.weight.count
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
      size: size, units: [unit], token: imageTokenID, at: index, video: false, start: start)
  }

  public func layout(frames: [ImageSource], at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    guard let first = frames.first else {
      throw ModelError(path: "qwen2_vl", message: "a clip needs frames")
    }
    let size = try videoPreprocessor.outputSize(height: first.height, width: first.width)
    for f in frames where f.width != first.width || f.height != first.height {
      throw ModelError(
        path: "qwen2_vl",
        message:
          "the frames of a clip must share one size (\(first.width)×\(first.height), then \(f.width)×\(f.height))"
      )
    }
    // The last frame repeats up to a whole temporal patch.
    var padded = frames
    while padded.count % temporalPatch != 0 { padded.append(padded[padded.count - 1]) }
    let prep = videoPreprocessor
    let units = stride(from: 0, to: padded.count, by: temporalPatch).map { i in
      let group = Array(padded[i..<(i + temporalPatch)])
      return { @Sendable in try group.map { try prep($0.load()) } }
    }
    return try layout(
      size: size, units: units, token: videoTokenID, at: index, video: true, start: start)
  }

  /// `<|vision_start|>`, the units' tokens with 3-D positions, `<|vision_end|>`.
  func layout(
    size: (height: Int, width: Int), units: [@Sendable () throws -> [PixelValues]], token: Int,
    at index: VisualInputIndex, video: Bool, start: Int
  ) throws -> PromptLayout {
    let f = patchSize * mergeSize
    guard size.height % f == 0, size.width % f == 0, size.height > 0, size.width > 0 else {
      throw ModelError(
        path: "qwen2_vl",
        message:
          "the preprocessor makes \(size.width)×\(size.height) images, not a multiple of \(f)")
    }
    let rows = size.height / f
    let cols = size.width / f
    let marker = TokenOrigin(
      modality: video ? .video : .image, input: index.input, image: index.image)
    var segments = [textSegment("<|vision_start|>", origin: marker, start: start, mrope: true)]
    let origin = start + segments[0].count
    for (t, pixels) in units.enumerated() {
      var origins: [TokenOrigin] = []
      var axes: [[Int]] = [[], [], []]
      for r in 0..<rows {
        for c in 0..<cols {
          var o = marker
          o.row = r
          o.col = c
          if video { o.frame = t * temporalPatch }
          origins.append(o)
          axes[0].append(origin + t)
          axes[1].append(origin + r)
          axes[2].append(origin + c)
        }
      }
      segments.append(
        PromptSegment(
          tokens: Array(repeating: token, count: rows * cols), origins: origins,
          positions: axes[0], ropeAxes: axes,
          visual: VisualUnit(tokenRows: rows, tokenCols: cols, pixels: pixels)))
    }
    // transformers 5.24's get_rope_index: text resumes max(rows, cols) after the image start.
    let next = origin + max(rows, cols)
    segments.append(textSegment("<|vision_end|>", origin: marker, start: next, mrope: true))
    return PromptLayout(segments: segments, nextPosition: next + segments.last!.count)
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

  public func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    let hidden = try visionHiddenStates(frames, meter: meter)
    return merge(hidden, meter: meter)
  }

  /// The patch embeddings after every block (`patches × E`, merge-block order).
  public func visionHiddenStates(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    guard frames.count == temporalPatch else {
      throw ModelError(
        path: "qwen2_vl", message: "a unit needs \(temporalPatch) frames, got \(frames.count)")
    }
    let gridRows = frames[0].height / patchSize
    let gridCols = frames[0].width / patchSize
    let order = patchOrder(gridRows: gridRows, gridCols: gridCols)
    let patches = patchMatrix(
      frames, patch: patchSize, order: order, category: .vision, meter: meter)
    return try visionHiddenStates(
      patches: patches, gridRows: gridRows, gridCols: gridCols, meter: meter)
  }

  /// The same from already flattened patches (the processor's `pixel_values` rows for one
  /// temporal patch).
  public func visionHiddenStates(patches: Matrix, gridRows: Int, gridCols: Int, meter: MemoryMeter?)
    throws -> Matrix
  {
    let e = encoder.hidden
    guard patches.cols == patchEmbedding.cols, patches.rows == gridRows * gridCols else {
      throw ModelError(
        path: "qwen2_vl",
        message:
          "expected \(gridRows * gridCols) patches of \(patchEmbedding.cols) values, got \(patches.rows) of \(patches.cols)"
      )
    }
    let x = Matrix(uninitializedRows: patches.rows, cols: e, category: .vision, meter: meter)
    Linear.apply(patches, patchEmbedding, into: x)
    // 2-D RoPE: the first quarter of frequencies turn with the row, the second with the column
    // (then the halves repeat, rotate-half style).
    let order = patchOrder(gridRows: gridRows, gridCols: gridCols)
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
      x, groups: [0..<x.rows], rotary: RotaryTable(half: half, cos: cos, sin: sin), meter: meter)
    return x
  }

  /// The merger: LayerNorm each patch, concatenate each m×m block's patches, MLP.
  public func merge(_ hidden: Matrix, meter: MemoryMeter?) -> Matrix {
    let e = encoder.hidden
    let group = mergeSize * mergeSize
    let n = hidden.rows / group
    let normed = Matrix(uninitializedRows: n, cols: e * group, category: .vision, meter: meter)
    // Rows are consecutive in memory, so the m×m concatenation is a reinterpretation.
    Kernels.layerNorm(
      hidden.pointer, weight: mergerNorm.weight.pointer, bias: mergerNorm.bias.pointer, eps: 1e-6,
      rows: hidden.rows, cols: e, out: normed.pointer)
    let h = Matrix(uninitializedRows: n, cols: merger1.rows, category: .vision, meter: meter)
    Linear.apply(normed, merger1, into: h)
    Kernels.addBias(h.pointer, bias: merger1Bias.pointer, rows: n, cols: merger1.rows)
    Kernels.gelu(h.pointer, count: n * merger1.rows)
    let out = Matrix(uninitializedRows: n, cols: merger2.rows, category: .vision, meter: meter)
    Linear.apply(h, merger2, into: out)
    Kernels.addBias(out.pointer, bias: merger2Bias.pointer, rows: n, cols: merger2.rows)
    return out
  }
}

import Foundation
import KVTensor

/// LLaVA(-1.5 style): a CLIP vision transformer (class token, learned positions, pre-LayerNorm,
/// the hidden state of `vision_feature_layer`, the class token dropped under the "default"
/// strategy), a two-layer MLP projector, and a llama decoder. An image is one `<image>` token
/// expanded to one token per patch.
public final class LlavaModel: VisionLanguageFamily, StreamedClipFamily, @unchecked Sendable {
  public let family = "llava"
  public static let unitName = "image"
  public let decoder: LlamaModel
  public let tokenizer: BPETokenizer
  public let chat: ChatLayout
  public let preprocessor: ImagePreprocessor

  let imageSize: Int
  let patchSize: Int
  let embedding: TileEmbedding  // a class token, no patch bias
  let preNorm: (weight: FloatBuffer, bias: FloatBuffer)
  let encoder: VisionTransformer
  /// Blocks to run: the output of block `layersToRun` is the selected hidden state.
  let layersToRun: Int
  let keepClassToken: Bool
  let projector1: WeightMatrix
  let projector1Bias: FloatBuffer?
  let projector2: WeightMatrix
  let projector2Bias: FloatBuffer?
  let projectorActivation: VisionActivation
  let imageTokenID: Int

  /// `modelType` changes nothing: the family has one layout.
  public init(folder: HFModelFolder, modelType _: String, meter: MemoryMeter?) throws {
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    let vc = try folder.decodeConfig(ViTConfig.self, at: "vision_config")
    let textConfig = try folder.decodeConfig(DecoderConfig.self, at: "text_config")
    try vc.validate(configPath: configPath)
    imageSize = vc.image_size
    patchSize = vc.patch_size
    let c = folder.config
    guard
      let layer = c["vision_feature_layer"]?.int ?? (c["vision_feature_layer"] == nil ? -2 : nil)
    else {
      throw fail("vision_feature_layer must be one integer (several layers are not supported)")
    }
    let layers = vc.num_hidden_layers
    // hidden_states[0] is the embedding output, [k] the output of block k.
    let selected = layer < 0 ? layers + 1 + layer : layer
    guard selected >= 0, selected <= layers else {
      throw fail("vision_feature_layer \(layer) is outside the \(layers)-layer vision tower")
    }
    layersToRun = selected
    let strategy = c["vision_feature_select_strategy"]?.string ?? "default"
    guard ["default", "full"].contains(strategy) else {
      throw fail("vision_feature_select_strategy '\(strategy)' is not supported (default, full)")
    }
    keepClassToken = strategy == "full"
    projectorActivation = try VisionActivation(
      configName: c["projector_hidden_act"]?.string ?? "gelu", source: configPath)

    tokenizer = try VisionLanguageModels.tokenizer(in: folder)
    imageTokenID =
      try c["image_token_id"]?.int ?? c["image_token_index"]?.int
      ?? VisionLanguageModels.id("<image>", in: tokenizer, folder: folder)
    guard let prep = try folder.imagePreprocessor() else {
      throw ModelError(path: folder.path, message: "no preprocessor_config.json in this folder")
    }
    preprocessor = prep
    chat = ChatLayout(
      systemPrefix: "", userPrefix: "USER: ", assistantPrefix: "ASSISTANT:", turnEnd: " ",
      stopTokens: ["</s>"], afterVisual: "\n")

    let w = WeightReader(folder: folder, category: .weights, meter: meter)
    let d = vc.hidden_size
    let side = imageSize / patchSize
    // Published checkpoints nest the CLIP tower in `vision_model.`; transformers 5.24 saves a
    // model it built from a config without it.
    let v = try w.prefix(
      [
        "model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
        "vision_tower.",
      ], probe: "embeddings.class_embedding")
    embedding = TileEmbedding(
      imageSize: imageSize, patchSize: patchSize, classToken: try w.vector(v + "embeddings.class_embedding", d),
      patch: try w.flattened(
        v + "embeddings.patch_embedding.weight", shape: [d, 3, patchSize, patchSize]),
      patchBias: nil,
      positions: try w.matrix(
        v + "embeddings.position_embedding.weight", rows: side * side + 1, cols: d))
    preNorm = (try w.vector(v + "pre_layrnorm.weight", d), try w.vector(v + "pre_layrnorm.bias", d))
    encoder = try VisionTransformer.load(
      w, names: (0..<selected).map { .siglip(v + "encoder.layers.\($0).") }, hidden: d,
      heads: vc.num_attention_heads, intermediate: vc.intermediate_size,
      eps: vc.layer_norm_eps ?? 1e-5,
      activation: try VisionActivation(
        configName: vc.hidden_act ?? "quick_gelu", source: configPath))
    let text = textConfig.hiddenSize
    let p = try w.prefix(
      ["model.multi_modal_projector.", "multi_modal_projector."], probe: "linear_1.weight")
    projector1 = try w.weights(p + "linear_1.weight", rows: text, cols: d)
    projector1Bias = w.has(p + "linear_1.bias") ? try w.vector(p + "linear_1.bias", text) : nil
    projector2 = try w.weights(p + "linear_2.weight", rows: text, cols: text)
    projector2Bias = w.has(p + "linear_2.bias") ? try w.vector(p + "linear_2.bias", text) : nil
    decoder = try LlamaModel.load(
      folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: textConfig,
      meter: meter)
  }

  var side: Int { imageSize / patchSize }

  public var visionParameterCount: Int {
    embedding.parameterCount + 2 * preNorm.weight.count
      + encoder.parameterCount + projector1.rows * projector1.cols + (projector1Bias?.count ?? 0)
      + projector2.rows * projector2.cols + (projector2Bias?.count ?? 0)
  }

  public var tokensPerUnit: Int? { side * side + (keepClassToken ? 1 : 0) }
  public var unitDescription: String {
    "image \(imageSize)×\(imageSize) → \(tokensPerUnit ?? 0) tokens"
  }

  public func layout(image: ImageSource, at index: VisualInputIndex, start: Int) throws
    -> PromptLayout
  {
    try layout(image, at: index, frame: nil, start: start)
  }

  /// Frames of a clip, a frame at a time: one image each (LLaVA states no times).
  public func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource, times: ClipTimes?,
    at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout {
    StreamedLayout(parts: count) { [self] f, start in
      try layout(source(f), at: index, frame: f, start: start)
    }
  }

  func layout(_ image: ImageSource, at index: VisualInputIndex, frame: Int?, start: Int) throws
    -> PromptLayout
  {
    let (h, w) = try preprocessor.outputSize(height: image.height, width: image.width)
    guard h == imageSize, w == imageSize else {
      throw ModelError(
        path: "llava",
        message:
          "the preprocessor makes \(w)×\(h) images; the vision tower takes \(imageSize)×\(imageSize)"
      )
    }
    let n = tokensPerUnit!
    var origins: [TokenOrigin] = []
    for i in 0..<n {
      // With the class token kept, it comes first and has no grid cell.
      let cell = keepClassToken ? i - 1 : i
      origins.append(
        TokenOrigin(
          modality: frame == nil ? .image : .video, input: index.input, image: index.image,
          row: cell >= 0 ? cell / side : nil, col: cell >= 0 ? cell % side : nil, frame: frame))
    }
    let preprocessor = self.preprocessor
    let segment = PromptSegment(
      tokens: Array(repeating: imageTokenID, count: n), origins: origins,
      positions: Array(start..<(start + n)),
      visual: VisualUnit(
        tokenRows: keepClassToken ? 1 : side, tokenCols: keepClassToken ? n : side
      ) { [try preprocessor(image.load())] })
    return PromptLayout(segments: [segment], nextPosition: start + n)
  }

  public func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix {
    let hidden = try visionHiddenStates(frames[0], meter: meter)
    let first = keepClassToken ? 0 : 1
    let n = hidden.rows - first
    let text = projector1.rows
    let h = Matrix(uninitializedRows: n, cols: text, category: .vision, meter: meter)
    projector1.apply(
      hidden.row(first), rows: n, ldx: hidden.cols, out: h.pointer, ldo: text,
      scratch: WeightMatrix.tiles(for: [projector1], rows: n, category: .vision, meter: meter))
    if let b = projector1Bias { Kernels.addBias(h.pointer, bias: b.pointer, rows: n, cols: text) }
    projectorActivation.apply(h.pointer, count: n * text)
    let out = Matrix(uninitializedRows: n, cols: text, category: .vision, meter: meter)
    projector2.apply(h, into: out, category: .vision, meter: meter)
    if let b = projector2Bias { Kernels.addBias(out.pointer, bias: b.pointer, rows: n, cols: text) }
    return out
  }

  /// The selected hidden state (`1 + patches` rows, class token first).
  public func visionHiddenStates(_ image: PixelValues, meter: MemoryMeter?) throws -> Matrix {
    let x = try embedding(image, family: family, unit: "an image", meter: meter)
    Kernels.layerNorm(
      x.pointer, weight: preNorm.weight.pointer, bias: preNorm.bias.pointer, eps: encoder.eps,
      rows: x.rows, cols: x.cols, out: x.pointer)
    encoder.run(x, groups: [0..<x.rows], meter: meter)
    return x
  }
}

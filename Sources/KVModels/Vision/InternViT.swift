import Foundation
import KVTensor

/// The `vision_config` of an InternVL model (`internvl_vision`), as transformers writes it.
struct InternViTConfig: Decodable {
  var hidden_size: Int
  var num_hidden_layers: Int
  var num_attention_heads: Int
  var intermediate_size: Int
  var image_size: Int
  var patch_size: Int
  var attention_bias: Bool
  var use_qk_norm: Bool
  var norm_type: String
  var layer_norm_eps: Float
  var hidden_act: String
  var use_mean_pooling: Bool
  var use_absolute_position_embeddings: Bool
  var num_channels: Int

  enum CodingKeys: String, CodingKey {
    case hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, image_size
    case patch_size, attention_bias, use_qk_norm, norm_type, layer_norm_eps, hidden_act
    case use_mean_pooling, use_absolute_position_embeddings, num_channels
  }

  /// Square sizes only: `image_size` / `patch_size` are an integer or [h, w] with h = w.
  init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    func square(_ key: CodingKeys) throws -> Int {
      if let n = try? c.decode(Int.self, forKey: key) { return n }
      let pair = try c.decode([Int].self, forKey: key)
      guard pair.count == 2, pair[0] == pair[1] else {
        throw DecodingError.dataCorruptedError(
          forKey: key, in: c, debugDescription: "\(pair) is not a square size (only h = w is supported)")
      }
      return pair[0]
    }
    hidden_size = try c.decode(Int.self, forKey: .hidden_size)
    num_hidden_layers = try c.decode(Int.self, forKey: .num_hidden_layers)
    num_attention_heads = try c.decode(Int.self, forKey: .num_attention_heads)
    intermediate_size = try c.decode(Int.self, forKey: .intermediate_size)
    image_size = try square(.image_size)
    patch_size = try square(.patch_size)
    // InternVLVisionConfig's class defaults for the rest.
    attention_bias = try c.decodeIfPresent(Bool.self, forKey: .attention_bias) ?? false
    use_qk_norm = try c.decodeIfPresent(Bool.self, forKey: .use_qk_norm) ?? false
    norm_type = try c.decodeIfPresent(String.self, forKey: .norm_type) ?? "layer_norm"
    layer_norm_eps = try c.decodeIfPresent(Float.self, forKey: .layer_norm_eps) ?? 1e-6
    hidden_act = try c.decodeIfPresent(String.self, forKey: .hidden_act) ?? "gelu"
    use_mean_pooling = try c.decodeIfPresent(Bool.self, forKey: .use_mean_pooling) ?? true
    use_absolute_position_embeddings =
      try c.decodeIfPresent(Bool.self, forKey: .use_absolute_position_embeddings) ?? true
    num_channels = try c.decodeIfPresent(Int.self, forKey: .num_channels) ?? 3
  }

  func validate(configPath: String) throws {
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    for (name, v, limit) in [
      ("hidden_size", hidden_size, 1 << 16), ("intermediate_size", intermediate_size, 1 << 18),
      ("num_hidden_layers", num_hidden_layers, 1024),
      ("num_attention_heads", num_attention_heads, 1024), ("image_size", image_size, 4096),
    ] where !(1...limit).contains(v) {
      throw fail("vision_config.\(name) \(v) is out of range (1...\(limit))")
    }
    guard patch_size > 0, image_size % patch_size == 0 else {
      throw fail("vision_config.image_size \(image_size) is not a multiple of patch_size \(patch_size)")
    }
    guard hidden_size % num_attention_heads == 0 else {
      throw fail(
        "vision_config.hidden_size \(hidden_size) is not a multiple of \(num_attention_heads) heads")
    }
    guard ["layer_norm", "rms_norm"].contains(norm_type) else {
      throw fail("vision_config.norm_type '\(norm_type)' is not supported (layer_norm, rms_norm)")
    }
    guard num_channels == 3 else { throw fail("only 3-channel vision towers are supported") }
    guard use_absolute_position_embeddings else {
      throw fail("vision_config.use_absolute_position_embeddings false is not supported")
    }
    guard layer_norm_eps > 0 else { throw fail("vision_config.layer_norm_eps must be positive") }
  }
}

/// InternVL's vision tower over one tile: patch convolution, a class token, learned positions,
/// the blocks (the shared encoder with layer scales, and Q/K norms when the config asks), and a
/// final LayerNorm unless the config mean-pools (then none). Its output keeps the class token
/// (row 0).
struct InternViT {
  let config: InternViTConfig
  let embedding: TileEmbedding
  let encoder: VisionTransformer
  let finalNorm: (weight: FloatBuffer, bias: FloatBuffer)?

  var side: Int { config.image_size / config.patch_size }

  init(_ w: WeightReader, prefix v: String, config c: InternViTConfig, configPath: String) throws {
    config = c
    let d = c.hidden_size
    let p = c.patch_size
    let classToken = try w.vector(v + "embeddings.cls_token", d, shape: [1, 1, d])
    let patch = try w.flattened(
      v + "embeddings.patch_embeddings.projection.weight", shape: [d, 3, p, p])
    let patchBias = try w.vector(v + "embeddings.patch_embeddings.projection.bias", d)
    let n = (c.image_size / p) * (c.image_size / p) + 1
    try w.check([(v + "embeddings.position_embeddings", [1, n, d])])
    let positions = Matrix(uninitializedRows: n, cols: d, category: w.category, meter: w.meter)
    try w.fill(v + "embeddings.position_embeddings", shape: [1, n, d], into: positions.pointer)
    embedding = TileEmbedding(
      imageSize: c.image_size, patchSize: p, classToken: classToken, patch: patch, patchBias: patchBias,
      positions: positions)
    encoder = try VisionTransformer.load(
      w,
      names: (0..<c.num_hidden_layers).map {
        .internViT(
          "\(v)encoder.layer.\($0).", rmsNorm: c.norm_type == "rms_norm",
          qkvBias: c.attention_bias, qkNorm: c.use_qk_norm)
      }, hidden: d, heads: c.num_attention_heads, intermediate: c.intermediate_size,
      eps: c.layer_norm_eps,
      activation: try VisionActivation(configName: c.hidden_act, source: configPath))
    finalNorm =
      c.use_mean_pooling
      ? nil : (try w.vector(v + "layernorm.weight", d), try w.vector(v + "layernorm.bias", d))
  }

  var parameterCount: Int {
    embedding.parameterCount + encoder.parameterCount + 2 * (finalNorm?.weight.count ?? 0)
  }

  /// The hidden state after `blocks` blocks (`1 + patches` rows, class token first); with every
  /// block, after the final LayerNorm when there is one.
  func run(_ tile: PixelValues, blocks: Int, meter: MemoryMeter?) throws -> Matrix {
    let x = try embedding(tile, family: "internvl", unit: "a tile", meter: meter)
    encoder.run(x, groups: [0..<x.rows], count: blocks, meter: meter)
    if blocks == encoder.layers.count, let f = finalNorm {
      Kernels.layerNorm(
        x.pointer, weight: f.weight.pointer, bias: f.bias.pointer, eps: encoder.eps, rows: x.rows,
        cols: x.cols, out: x.pointer)
    }
    return x
  }
}

extension WeightReader {
  /// A vector stored with leading 1s (`[1, 1, D]`).
  func vector(_ name: String, _ count: Int, shape: [Int]) throws -> FloatBuffer {
    try check([(name, shape)])
    let b = FloatBuffer(uninitializedCount: count, category: category, meter: meter)
    try fill(name, shape: shape, into: b.pointer)
    return b
  }
}

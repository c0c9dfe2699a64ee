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

/// One InternViT block: x += λ₁ ⊙ attn(N₁(x)); x += λ₂ ⊙ fc₂(act(fc₁(N₂(x)))), with N a LayerNorm
/// or an RMSNorm (`bias` nil), Q and K optionally RMS-normalised over the whole width.
struct InternViTLayer {
  var norm1: (weight: FloatBuffer, bias: FloatBuffer?)
  var qkv: WeightMatrix  // [3D][D]
  var qkvBias: FloatBuffer?
  var qNorm: FloatBuffer?
  var kNorm: FloatBuffer?
  var out: WeightMatrix
  var outBias: FloatBuffer
  var scale1: FloatBuffer
  var norm2: (weight: FloatBuffer, bias: FloatBuffer?)
  var fc1: WeightMatrix
  var fc1Bias: FloatBuffer
  var fc2: WeightMatrix
  var fc2Bias: FloatBuffer
  var scale2: FloatBuffer
}

/// InternVL's vision tower over one tile: patch convolution, a class token, learned positions,
/// the blocks, and a final LayerNorm unless the config mean-pools (then none). Its output keeps
/// the class token (row 0).
struct InternViT {
  let config: InternViTConfig
  let classToken: FloatBuffer  // [D]
  let patchEmbedding: Matrix  // [D][3·p·p]
  let patchBias: FloatBuffer
  let positions: Matrix  // [1 + (image/p)²][D]
  let layers: [InternViTLayer]
  let finalNorm: (weight: FloatBuffer, bias: FloatBuffer)?
  let activation: VisionActivation

  /// RMSNorm epsilon of the Q/K norms: InternVLVisionRMSNorm's default (the config's
  /// layer_norm_eps is not passed to them).
  static let qkNormEps: Float = 1e-6

  var side: Int { config.image_size / config.patch_size }

  init(_ w: WeightReader, prefix v: String, config c: InternViTConfig, configPath: String) throws {
    config = c
    let d = c.hidden_size
    let p = c.patch_size
    let rms = c.norm_type == "rms_norm"
    activation = try VisionActivation(configName: c.hidden_act, source: configPath)
    classToken = try w.vector(v + "embeddings.cls_token", d, shape: [1, 1, d])
    patchEmbedding = try w.flattened(
      v + "embeddings.patch_embeddings.projection.weight", shape: [d, 3, p, p])
    patchBias = try w.vector(v + "embeddings.patch_embeddings.projection.bias", d)
    let n = (c.image_size / p) * (c.image_size / p) + 1
    try w.check([(v + "embeddings.position_embeddings", [1, n, d])])
    positions = Matrix(uninitializedRows: n, cols: d, category: w.category, meter: w.meter)
    try w.fill(v + "embeddings.position_embeddings", shape: [1, n, d], into: positions.pointer)
    var layers: [InternViTLayer] = []
    for i in 0..<c.num_hidden_layers {
      let l = "\(v)encoder.layer.\(i)."
      func norm(_ name: String) throws -> (weight: FloatBuffer, bias: FloatBuffer?) {
        (try w.vector(l + name + ".weight", d), rms ? nil : try w.vector(l + name + ".bias", d))
      }
      let names = ["q_proj", "k_proj", "v_proj"].map { l + "attention." + $0 }
      let qkv = try w.weights(names.map { ($0 + ".weight", d) }, cols: d)
      var qkvBias: FloatBuffer?
      if c.attention_bias {
        try w.check(names.map { ($0 + ".bias", [d]) })
        let b = FloatBuffer(uninitializedCount: 3 * d, category: w.category, meter: w.meter)
        for (k, name) in names.enumerated() {
          try w.fill(name + ".bias", shape: [d], into: b.pointer + k * d)
        }
        qkvBias = b
      }
      layers.append(
        InternViTLayer(
          norm1: try norm("layernorm_before"), qkv: qkv, qkvBias: qkvBias,
          qNorm: c.use_qk_norm ? try w.vector(l + "attention.q_norm.weight", d) : nil,
          kNorm: c.use_qk_norm ? try w.vector(l + "attention.k_norm.weight", d) : nil,
          out: try w.weights(l + "attention.projection_layer.weight", rows: d, cols: d),
          outBias: try w.vector(l + "attention.projection_layer.bias", d),
          scale1: try w.vector(l + "lambda_1", d), norm2: try norm("layernorm_after"),
          fc1: try w.weights(l + "mlp.fc1.weight", rows: c.intermediate_size, cols: d),
          fc1Bias: try w.vector(l + "mlp.fc1.bias", c.intermediate_size),
          fc2: try w.weights(l + "mlp.fc2.weight", rows: d, cols: c.intermediate_size),
          fc2Bias: try w.vector(l + "mlp.fc2.bias", d), scale2: try w.vector(l + "lambda_2", d)))
    }
    self.layers = layers
    finalNorm =
      c.use_mean_pooling
      ? nil : (try w.vector(v + "layernorm.weight", d), try w.vector(v + "layernorm.bias", d))
  }

  var parameterCount: Int {
    var n = classToken.count + patchEmbedding.rows * patchEmbedding.cols + patchBias.count
    n += positions.rows * positions.cols + 2 * (finalNorm?.weight.count ?? 0)
    for l in layers {
      n += l.qkv.rows * l.qkv.cols + (l.qkvBias?.count ?? 0) + (l.qNorm?.count ?? 0)
      n += (l.kNorm?.count ?? 0) + l.out.rows * l.out.cols + l.outBias.count + l.scale1.count
      n += l.fc1.rows * l.fc1.cols + l.fc1Bias.count + l.fc2.rows * l.fc2.cols + l.fc2Bias.count
      n += l.scale2.count + l.norm1.weight.count + (l.norm1.bias?.count ?? 0)
      n += l.norm2.weight.count + (l.norm2.bias?.count ?? 0)
    }
    return n
  }

  /// The hidden state after `blocks` blocks (`1 + patches` rows, class token first); with every
  /// block, after the final LayerNorm when there is one.
  func run(_ tile: PixelValues, blocks: Int, meter: MemoryMeter?) -> Matrix {
    let d = config.hidden_size
    let patches = patchMatrix([tile], patch: config.patch_size, category: .vision, meter: meter)
    let n = patches.rows + 1
    let x = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    x.storage.pointer.update(from: positions.pointer, count: n * d)
    for c in 0..<d { x.pointer[c] += classToken.pointer[c] }
    Linear.apply(
      patches.pointer, rows: patches.rows, ldx: patches.cols, weight: patchEmbedding.pointer,
      outFeatures: d, inFeatures: patches.cols, beta: 1, out: x.row(1), ldo: d)
    Kernels.addBias(x.row(1), bias: patchBias.pointer, rows: patches.rows, cols: d)

    let heads = config.num_attention_heads
    let headDim = d / heads
    let ff = config.intermediate_size
    let h = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    let qkv = Matrix(uninitializedRows: n, cols: 3 * d, category: .vision, meter: meter)
    let attended = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    let mlp = Matrix(uninitializedRows: n, cols: ff, category: .vision, meter: meter)
    let attention = TiledAttention(heads: heads, kvHeads: heads, headDim: headDim)
    let threads = BLAS.threads
    let scratch = FloatBuffer(
      uninitializedCount: attention.scratchCount(threads: threads), category: .vision, meter: meter)
    let tiles = WeightMatrix.tiles(
      for: layers.flatMap { [$0.qkv, $0.out, $0.fc1, $0.fc2] }, rows: n, category: .vision,
      meter: meter)
    let eps = config.layer_norm_eps
    func norm(_ p: (weight: FloatBuffer, bias: FloatBuffer?), into out: Matrix) {
      if let bias = p.bias {
        Kernels.layerNorm(
          x.pointer, weight: p.weight.pointer, bias: bias.pointer, eps: eps, rows: n, cols: d,
          out: out.pointer)
      } else {
        Kernels.rmsNorm(
          x.pointer, weight: p.weight.pointer, eps: eps, rows: n, cols: d, out: out.pointer)
      }
    }
    /// x += scale ⊙ y, row by row.
    func addScaled(_ y: Matrix, _ scale: FloatBuffer) {
      for r in 0..<n {
        let dst = x.row(r)
        let src = y.row(r)
        for c in 0..<d { dst[c] += scale.pointer[c] * src[c] }
      }
    }

    for layer in layers.prefix(blocks) {
      norm(layer.norm1, into: h)
      layer.qkv.apply(h, into: qkv, scratch: tiles)
      if let b = layer.qkvBias {
        Kernels.addBias(qkv.pointer, bias: b.pointer, rows: n, cols: 3 * d)
      }
      if let qn = layer.qNorm, let kn = layer.kNorm {
        // Over the whole width of Q (and of K), before the split into heads.
        for r in 0..<n {
          for (offset, weight) in [(0, qn), (d, kn)] {
            let row = qkv.row(r) + offset
            Kernels.rmsNormRow(row, weight: weight.pointer, eps: Self.qkNormEps, count: d, out: row)
          }
        }
      }
      attention.run(
        q: qkv.pointer, ldq: 3 * d, n: n,
        segments: [
          KVSegment(
            keys: qkv.pointer + d, values: qkv.pointer + 2 * d, count: n, headStride: headDim,
            rowStride: 3 * d, causal: false)
        ], scale: 1 / Float(headDim).squareRoot(), out: attended.pointer, ldo: d,
        scratch: scratch.pointer, threads: threads)
      layer.out.apply(attended, into: h, scratch: tiles)
      Kernels.addBias(h.pointer, bias: layer.outBias.pointer, rows: n, cols: d)
      addScaled(h, layer.scale1)

      norm(layer.norm2, into: h)
      layer.fc1.apply(h, into: mlp, scratch: tiles)
      Kernels.addBias(mlp.pointer, bias: layer.fc1Bias.pointer, rows: n, cols: ff)
      activation.apply(mlp.pointer, count: n * ff)
      layer.fc2.apply(mlp, into: h, scratch: tiles)
      Kernels.addBias(h.pointer, bias: layer.fc2Bias.pointer, rows: n, cols: d)
      addScaled(h, layer.scale2)
    }
    if blocks == layers.count, let f = finalNorm {
      Kernels.layerNorm(
        x.pointer, weight: f.weight.pointer, bias: f.bias.pointer, eps: eps, rows: n, cols: d,
        out: x.pointer)
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

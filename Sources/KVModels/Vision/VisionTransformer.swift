import Foundation
import KVTensor

/// The activation of a vision MLP, as config.json names it.
public enum VisionActivation: String, Sendable {
  case geluTanh = "gelu_pytorch_tanh"
  case quickGelu = "quick_gelu"
  case gelu = "gelu"

  public init(configName: String, source: String) throws {
    switch configName {
    case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": self = .geluTanh
    case "quick_gelu": self = .quickGelu
    case "gelu": self = .gelu
    default:
      throw ModelError(
        path: source,
        message:
          "vision hidden_act '\(configName)' is not supported (gelu, gelu_pytorch_tanh, quick_gelu)"
      )
    }
  }

  func apply(_ x: UnsafeMutablePointer<Float>, count: Int) {
    switch self {
    case .geluTanh: Kernels.geluTanh(x, count: count)
    case .quickGelu: Kernels.quickGelu(x, count: count)
    case .gelu: Kernels.gelu(x, count: count)
    }
  }
}

/// The `vision_config` of a SigLIP or CLIP tower (Idefics3, LLaVA), as config.json writes it.
struct ViTConfig: Decodable {
  var hidden_size: Int
  var intermediate_size: Int
  var num_hidden_layers: Int
  var num_attention_heads: Int
  var image_size: Int
  var patch_size: Int
  var layer_norm_eps: Float?
  var hidden_act: String?
  var num_channels: Int?

  /// The checks both towers need before sizing anything from these numbers.
  func validate(configPath: String) throws {
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    for (name, v, limit) in [
      ("hidden_size", hidden_size, 1 << 20), ("intermediate_size", intermediate_size, 1 << 20),
      ("num_hidden_layers", num_hidden_layers, 1024),
      ("num_attention_heads", num_attention_heads, 1024), ("image_size", image_size, 4096),
    ] where !(1...limit).contains(v) {
      throw fail("vision_config.\(name) \(v) is out of range (1...\(limit))")
    }
    guard patch_size > 0, image_size % patch_size == 0, image_size <= 4096 else {
      throw fail("vision image_size \(image_size) is not a multiple of patch_size \(patch_size)")
    }
    guard (num_channels ?? 3) == 3 else {
      throw fail("only 3-channel vision towers are supported")
    }
  }
}

/// One pre-norm ViT block: x += attn(N₁(x)); x += MLP(N₂(x)). Q, K and V are one fused [3D][D]
/// matrix (Qwen2-VL stores them so; SigLIP, CLIP and InternViT are fused on load). N is a
/// LayerNorm, or an RMSNorm (Qwen2.5-VL, InternViT's `rms_norm`: `bias` nil); the MLP is
/// fc₂(act(fc₁(x))), or with a gate (Qwen2.5-VL) down(silu(gate(x)) · up(x)) with `fc1` the fused
/// [gate; up] rows and `fc2` down. InternViT adds a layer scale to each branch
/// (x += λ ⊙ branch) and optionally RMS-normalises Q and K over the whole width.
struct VisionLayer {
  var norm1: (weight: FloatBuffer, bias: FloatBuffer?)
  var qkv: WeightMatrix
  /// nil: no Q/K/V biases (InternViT without `attention_bias`).
  var qkvBias: FloatBuffer?
  var qNorm: FloatBuffer? = nil
  var kNorm: FloatBuffer? = nil
  var out: WeightMatrix
  var outBias: FloatBuffer
  /// λ₁: the attention branch's layer scale.
  var scale1: FloatBuffer? = nil
  var norm2: (weight: FloatBuffer, bias: FloatBuffer?)
  var fc1: WeightMatrix
  var fc1Bias: FloatBuffer
  var fc2: WeightMatrix
  var fc2Bias: FloatBuffer
  /// λ₂: the MLP branch's layer scale.
  var scale2: FloatBuffer? = nil
}

/// Tensor names of one block, for the checkpoint layouts kvlab reads.
struct VisionLayerNames {
  var norm1, norm2, fc1, fc2, out: String
  /// Separate q/k/v projections (SigLIP, CLIP), or nil with `qkv` set (Qwen2-VL).
  var q, k, v: String?
  var qkv: String?
  /// The gated MLP's gate projection (Qwen2.5-VL: `fc1` is then up, `fc2` down).
  var gate: String? = nil
  /// RMSNorms with a weight only (Qwen2.5-VL) instead of LayerNorms with a bias.
  var rmsNorm = false
  /// Whether Q, K and V have biases (InternViT: `attention_bias`).
  var qkvBias = true
  /// RMSNorm weights of Q and K over the whole width (InternViT: `use_qk_norm`).
  var qNorm: String? = nil
  var kNorm: String? = nil
  /// The layer scales λ₁ and λ₂ (InternViT), whole tensor names.
  var scale1: String? = nil
  var scale2: String? = nil

  /// SigLIP / Idefics3 and CLIP: `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `mlp.fc1/fc2`.
  static func siglip(_ p: String) -> VisionLayerNames {
    VisionLayerNames(
      norm1: p + "layer_norm1", norm2: p + "layer_norm2", fc1: p + "mlp.fc1", fc2: p + "mlp.fc2",
      out: p + "self_attn.out_proj", q: p + "self_attn.q_proj", k: p + "self_attn.k_proj",
      v: p + "self_attn.v_proj", qkv: nil)
  }

  /// Qwen2-VL: `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1/fc2`.
  static func qwen2VL(_ p: String) -> VisionLayerNames {
    VisionLayerNames(
      norm1: p + "norm1", norm2: p + "norm2", fc1: p + "mlp.fc1", fc2: p + "mlp.fc2",
      out: p + "attn.proj", q: nil, k: nil, v: nil, qkv: p + "attn.qkv")
  }

  /// Qwen2.5-VL: Qwen2-VL's attention names, RMSNorms, `mlp.{gate,up,down}_proj` with biases.
  static func qwen25VL(_ p: String) -> VisionLayerNames {
    VisionLayerNames(
      norm1: p + "norm1", norm2: p + "norm2", fc1: p + "mlp.up_proj", fc2: p + "mlp.down_proj",
      out: p + "attn.proj", q: nil, k: nil, v: nil, qkv: p + "attn.qkv",
      gate: p + "mlp.gate_proj", rmsNorm: true)
  }

  /// InternViT: `layernorm_before/after`, `attention.{q,k,v}_proj`, `attention.projection_layer`,
  /// `mlp.fc1/fc2`, `lambda_1/2`, and with `qkNorm` `attention.{q,k}_norm`.
  static func internViT(_ p: String, rmsNorm: Bool, qkvBias: Bool, qkNorm: Bool)
    -> VisionLayerNames
  {
    VisionLayerNames(
      norm1: p + "layernorm_before", norm2: p + "layernorm_after", fc1: p + "mlp.fc1",
      fc2: p + "mlp.fc2", out: p + "attention.projection_layer", q: p + "attention.q_proj",
      k: p + "attention.k_proj", v: p + "attention.v_proj", qkv: nil, rmsNorm: rmsNorm,
      qkvBias: qkvBias, qNorm: qkNorm ? p + "attention.q_norm" : nil,
      kNorm: qkNorm ? p + "attention.k_norm" : nil, scale1: p + "lambda_1", scale2: p + "lambda_2")
  }
}

/// The transformer encoder shared by the vision towers (SigLIP, CLIP, InternViT, Qwen2-VL's and
/// Qwen2.5-VL's ViT): bidirectional multi-head attention within groups of rows (one tile, one
/// image, one frame), optionally with a rotary table (Qwen2-VL's 2-D RoPE). Reads top to bottom
/// in `run`.
struct VisionTransformer {
  let hidden: Int
  let heads: Int
  let intermediate: Int
  let eps: Float
  let activation: VisionActivation
  let layers: [VisionLayer]
  /// Whether the MLPs are gated (`fc1` holds gate and up).
  let gated: Bool

  var headDim: Int { hidden / heads }

  /// RMSNorm epsilon of the Q/K norms: InternVLVisionRMSNorm's default (the config's
  /// layer_norm_eps is not passed to them).
  static let qkNormEps: Float = 1e-6

  static func load(
    _ w: WeightReader, names: [VisionLayerNames], hidden: Int, heads: Int, intermediate: Int,
    eps: Float, activation: VisionActivation
  ) throws -> VisionTransformer {
    let d = hidden
    // Beyond any real tower, and 3·d² must not overflow.
    guard (1...(1 << 20)).contains(d), (1...(1 << 20)).contains(intermediate) else {
      throw ModelError(
        path: w.folder.path,
        message: "vision hidden size \(d) or intermediate size \(intermediate) is out of range")
    }
    guard heads > 0, d % heads == 0, (d / heads) % 2 == 0 || names.first?.qkv == nil else {
      throw ModelError(
        path: w.folder.path, message: "vision hidden size \(d) is not a multiple of \(heads) heads")
    }
    var layers: [VisionLayer] = []
    for n in names {
      func norm(_ name: String) throws -> (weight: FloatBuffer, bias: FloatBuffer?) {
        (try w.vector(name + ".weight", d), n.rmsNorm ? nil : try w.vector(name + ".bias", d))
      }
      // Shapes first: a config claiming a larger hidden size than the weights have must not
      // allocate for it.
      if let fused = n.qkv {
        try w.check(
          [(fused + ".weight", [3 * d, d])] + (n.qkvBias ? [(fused + ".bias", [3 * d])] : []))
      } else if let q = n.q, let k = n.k, let v = n.v {
        try w.check(
          [q, k, v].flatMap { [($0 + ".weight", [d, d])] + (n.qkvBias ? [($0 + ".bias", [d])] : []) })
      }
      if let gate = n.gate {
        try w.check(
          [gate, n.fc1].flatMap {
            [($0 + ".weight", [intermediate, d]), ($0 + ".bias", [intermediate])]
          })
      }
      // Q, K and V (and a gated MLP's gate and up, gate rows first as Kernels.siluGate reads
      // them) are one product each: a stack of the stored tensors.
      let qkvBias =
        n.qkvBias
        ? FloatBuffer(uninitializedCount: 3 * d, category: w.category, meter: w.meter) : nil
      let qkv: WeightMatrix
      if let fused = n.qkv {
        qkv = try w.weights(fused + ".weight", rows: 3 * d, cols: d)
        if let qkvBias { try w.fill(fused + ".bias", shape: [3 * d], into: qkvBias.pointer) }
      } else if let q = n.q, let k = n.k, let v = n.v {
        qkv = try w.weights([q, k, v].map { ($0 + ".weight", d) }, cols: d)
        for (i, name) in [q, k, v].enumerated() {
          if let qkvBias { try w.fill(name + ".bias", shape: [d], into: qkvBias.pointer + i * d) }
        }
      } else {
        preconditionFailure("VisionLayerNames has q, k and v, or qkv")
      }
      let fc1: WeightMatrix
      let fc1Bias: FloatBuffer
      if let gate = n.gate {
        fc1 = try w.weights([(gate + ".weight", intermediate), (n.fc1 + ".weight", intermediate)], cols: d)
        fc1Bias = FloatBuffer(
          uninitializedCount: 2 * intermediate, category: w.category, meter: w.meter)
        for (i, name) in [gate, n.fc1].enumerated() {
          try w.fill(
            name + ".bias", shape: [intermediate], into: fc1Bias.pointer + i * intermediate)
        }
      } else {
        fc1 = try w.weights(n.fc1 + ".weight", rows: intermediate, cols: d)
        fc1Bias = try w.vector(n.fc1 + ".bias", intermediate)
      }
      func vector(_ name: String?) throws -> FloatBuffer? { try name.map { try w.vector($0, d) } }
      layers.append(
        VisionLayer(
          norm1: try norm(n.norm1), qkv: qkv, qkvBias: qkvBias,
          qNorm: try vector(n.qNorm.map { $0 + ".weight" }),
          kNorm: try vector(n.kNorm.map { $0 + ".weight" }),
          out: try w.weights(n.out + ".weight", rows: d, cols: d),
          outBias: try w.vector(n.out + ".bias", d), scale1: try vector(n.scale1),
          norm2: try norm(n.norm2), fc1: fc1, fc1Bias: fc1Bias,
          fc2: try w.weights(n.fc2 + ".weight", rows: d, cols: intermediate),
          fc2Bias: try w.vector(n.fc2 + ".bias", d), scale2: try vector(n.scale2)))
    }
    return VisionTransformer(
      hidden: hidden, heads: heads, intermediate: intermediate, eps: eps, activation: activation,
      layers: layers, gated: names.first?.gate != nil)
  }

  var parameterCount: Int {
    layers.reduce(0) { n, l in
      n + l.qkv.rows * l.qkv.cols + (l.qkvBias?.count ?? 0) + l.out.rows * l.out.cols
        + l.outBias.count + l.fc1.rows * l.fc1.cols + l.fc1Bias.count + l.fc2.rows * l.fc2.cols
        + l.fc2Bias.count + l.norm1.weight.count + (l.norm1.bias?.count ?? 0)
        + l.norm2.weight.count + (l.norm2.bias?.count ?? 0)
        + [l.qNorm, l.kNorm, l.scale1, l.scale2].reduce(0) { $0 + ($1?.count ?? 0) }
    }
  }

  /// Runs the first `count` blocks (all by default) on `x` (`n × hidden`) in place. Rows attend
  /// only within their group; `rotary` (one row per row of x) rotates Q and K.
  func run(
    _ x: Matrix, groups: [Range<Int>], rotary: RotaryTable? = nil, count: Int? = nil,
    meter: MemoryMeter?
  ) {
    run(x, groups: { _ in groups }, rotary: rotary, count: count, meter: meter)
  }

  /// The same with the groups chosen per block (Qwen2.5-VL: windows in most blocks, the whole
  /// frame in a few).
  func run(
    _ x: Matrix, groups: (_ block: Int) -> [Range<Int>], rotary: RotaryTable? = nil,
    count: Int? = nil, meter: MemoryMeter?
  ) {
    let n = x.rows
    let d = hidden
    let h = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    let qkv = Matrix(uninitializedRows: n, cols: 3 * d, category: .vision, meter: meter)
    let attended = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    let mlp = Matrix(uninitializedRows: n, cols: intermediate, category: .vision, meter: meter)
    let gateUp =
      gated
      ? Matrix(uninitializedRows: n, cols: 2 * intermediate, category: .vision, meter: meter) : nil
    // Tiles of 256 queries × 1024 keys: a SigLIP tile's 1024 patches in one key tile, so each
    // query's softmax is one pass with no rescaling, and K and V packed by sgemm once per 256
    // queries rather than per 64 (17% less CPU time than 64 × 512, `kvlab-bench --vision-serve`
    // stages on one thread). Never larger than the input, whose scratch would be charged for
    // nothing (a 64×64 frame has 16 patches).
    var attention = TiledAttention(
      heads: heads, kvHeads: heads, headDim: headDim, queryTile: max(1, min(256, n)),
      keyTile: max(1, min(1024, n)))
    // Under the bf16 prefill kernel, 16-bit towers take it for attention's products too: they
    // are a third of a tile's time, the linears already run in bfloat16, and a float32 tower
    // (whose linears stay exact) stays exact.
    attention.bfloat16Products =
      PrefillKernel.current == .bf16 && layers.allSatisfy { $0.qkv.takesBFloat16 }
    let threads = BLAS.threads
    let scratch = FloatBuffer(
      uninitializedCount: attention.scratchCount(threads: threads), category: .vision, meter: meter)
    // Dequantized weight tiles when the matrices are 16-bit (the decoder's prefill products).
    let tiles = WeightMatrix.tiles(
      for: layers.flatMap { [$0.qkv, $0.out, $0.fc1, $0.fc2] }, rows: n, category: .vision,
      meter: meter)
    let scale = 1 / Float(headDim).squareRoot()
    let rope = RotaryEmbedding(dimension: headDim, base: 10000)  // only its layout is used
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

    /// x += λ ⊙ (W·a + b), or x += W·a + b without a layer scale λ. `h` is free by then.
    func addBranch(_ weight: WeightMatrix, _ a: Matrix, bias: FloatBuffer, scale: FloatBuffer?) {
      guard let scale else {
        weight.apply(a, beta: 1, into: x, scratch: tiles)
        Kernels.addBias(x.pointer, bias: bias.pointer, rows: n, cols: d)
        return
      }
      weight.apply(a, into: h, scratch: tiles)
      Kernels.addBias(h.pointer, bias: bias.pointer, rows: n, cols: d)
      for r in 0..<n {
        let dst = x.row(r)
        let src = h.row(r)
        for c in 0..<d { dst[c] += scale.pointer[c] * src[c] }
      }
    }

    for (index, layer) in layers.prefix(count ?? layers.count).enumerated() {
      // Attention: h = N₁(x); q,k,v = h·Wᵀ + b; normalise and rotate q,k; attend within each group
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
      if let rotary {
        // Q's heads then K's: 2·heads contiguous heads per row.
        rope.apply(qkv.pointer, rows: n, ld: 3 * d, heads: 2 * heads, table: rotary)
      }
      for g in groups(index) where !g.isEmpty {
        let k = qkv.row(g.lowerBound) + d
        let v = qkv.row(g.lowerBound) + 2 * d
        attention.run(
          q: qkv.row(g.lowerBound), ldq: 3 * d, n: g.count,
          segments: [
            KVSegment(
              keys: k, values: v, count: g.count, headStride: headDim, rowStride: 3 * d,
              causal: false)
          ], scale: scale, out: attended.row(g.lowerBound), ldo: d, scratch: scratch.pointer,
          threads: threads)
      }
      addBranch(layer.out, attended, bias: layer.outBias, scale: layer.scale1)

      // MLP: x += fc₂(act(fc₁(N₂(x)))), or x += down(silu(gate(N₂(x))) · up(N₂(x))) (each times
      // λ₂ with a layer scale)
      norm(layer.norm2, into: h)
      if let gateUp {
        layer.fc1.apply(h, into: gateUp, scratch: tiles)
        Kernels.addBias(
          gateUp.pointer, bias: layer.fc1Bias.pointer, rows: n, cols: 2 * intermediate)
        Kernels.siluGate(gateUp.pointer, rows: n, cols: intermediate, out: mlp.pointer)
      } else {
        layer.fc1.apply(h, into: mlp, scratch: tiles)
        Kernels.addBias(mlp.pointer, bias: layer.fc1Bias.pointer, rows: n, cols: intermediate)
        activation.apply(mlp.pointer, count: n * intermediate)
      }
      addBranch(layer.fc2, mlp, bias: layer.fc2Bias, scale: layer.scale2)
    }
  }
}

import Foundation
import KVTensor

/// Reads weights out of a Hugging Face folder, each after checking its shape against what
/// config.json implies, charged to one meter category: matrices at their stored precision
/// (`weights`), vectors and element-wise tables as float32. The vision towers and the decoder
/// share it so that every "shape mismatch between config and weights" reads the same way.
public struct WeightReader {
  public let folder: HFModelFolder
  public let category: MemoryCategory
  public let meter: MemoryMeter?

  public init(folder: HFModelFolder, category: MemoryCategory, meter: MemoryMeter?) {
    self.folder = folder
    self.category = category
    self.meter = meter
  }

  /// Converts `name` (of exactly `shape`) into `dst`.
  public func fill(_ name: String, shape: [Int], into dst: UnsafeMutablePointer<Float>) throws {
    let (file, _) = try folder.checkedTensor(name, shape: shape)
    try file.convert(name, into: dst, count: shape.reduce(1, *))
  }

  /// Throws unless every tensor has its shape: called before allocating what they fill, so
  /// that a config.json claiming larger shapes than the weights have allocates nothing.
  public func check(_ shapes: [(name: String, shape: [Int])]) throws {
    for (name, shape) in shapes { try folder.checkedTensor(name, shape: shape) }
  }

  /// A `rows × cols` matrix (a Linear's weight is [out][in]).
  public func matrix(_ name: String, rows: Int, cols: Int) throws -> Matrix {
    try check([(name, [rows, cols])])
    let m = Matrix(uninitializedRows: rows, cols: cols, category: category, meter: meter)
    try fill(name, shape: [rows, cols], into: m.pointer)
    return m
  }

  /// The tensors `names` (each `rows × cols`) stacked row-wise into one matrix of products,
  /// as stored. All float32: a float32 `Matrix` (the reference path). Otherwise (F16 or BF16,
  /// exact in float32) one part per tensor read where it lies in the file's mapping, charged
  /// as `.mapped`; a tensor whose bytes are not aligned to its element size (a header of odd
  /// length) is copied to the heap.
  public func weights(_ names: [(name: String, rows: Int)], cols: Int) throws -> WeightMatrix {
    try check(names.map { ($0.name, [$0.rows, cols]) })
    let tensors = try names.map { try folder.tensor($0.name) }
    if tensors.allSatisfy({ $0.info.dtype == .F32 }) {
      let m = Matrix(
        uninitializedRows: names.reduce(0) { $0 + $1.rows }, cols: cols, category: category,
        meter: meter)
      var row = 0
      for n in names {
        try fill(n.name, shape: [n.rows, cols], into: m.row(row))
        row += n.rows
      }
      return WeightMatrix(m)
    }
    var parts: [WeightMatrix.Part] = []
    var mapped: [Bool] = []
    var owners: [AnyObject] = []
    for ((file, info), n) in zip(tensors, names) {
      let format: WeightFormat
      switch info.dtype {
      case .F32: format = .f32
      case .F16: format = .f16
      case .BF16: format = .bf16
      default:
        throw SafetensorsError(
          path: file.path,
          message:
            "tensor \(GGUFFile.quoted(n.name)) is \(info.dtype.rawValue); kvlab reads F32, F16 and BF16 weights"
        )
      }
      let bytes = try file.bytes(n.name)
      let start = bytes.baseAddress!
      owners.append(file)
      if Int(bitPattern: start) % info.dtype.byteSize == 0 {
        parts.append(WeightMatrix.Part(format: format, bytes: start, rows: n.rows))
        mapped.append(true)
      } else {
        let copy = WeightBytes(count: bytes.count, meter: meter)
        copy.pointer.copyMemory(from: start, byteCount: bytes.count)
        parts.append(WeightMatrix.Part(format: format, bytes: copy.pointer, rows: n.rows))
        mapped.append(false)
        owners.append(copy)
      }
    }
    return WeightMatrix(cols: cols, parts: parts, mapped: mapped, owners: owners, meter: meter)
  }

  /// One tensor (`rows × cols`) as `weights` holds it.
  public func weights(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
    try weights([(name, rows)], cols: cols)
  }

  /// A matrix whose tensor has more dimensions (a convolution kernel [out][c][kh][kw]) read as
  /// `shape[0] × (the rest)`.
  public func flattened(_ name: String, shape: [Int]) throws -> Matrix {
    try check([(name, shape)])
    let m = Matrix(
      uninitializedRows: shape[0], cols: shape.dropFirst().reduce(1, *), category: category,
      meter: meter)
    try fill(name, shape: shape, into: m.pointer)
    return m
  }

  public func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
    try check([(name, [count])])
    let b = FloatBuffer(uninitializedCount: count, category: category, meter: meter)
    try fill(name, shape: [count], into: b.pointer)
    return b
  }

  public func has(_ name: String) -> Bool { (try? folder.tensor(name)) != nil }

  /// The first of `prefixes` under which `probe` exists: checkpoints name the same module
  /// `model.visual.` (transformers 5's layout) or `visual.` (the published one).
  public func prefix(_ prefixes: [String], probe: String) throws -> String {
    guard let p = prefixes.first(where: { has($0 + probe) }) else {
      throw SafetensorsError(
        path: folder.path,
        message: "no tensor \(probe) under \(prefixes.map { "'\($0)'" }.joined(separator: " or "))")
    }
    return p
  }
}

extension LlamaModel {
  /// Where a decoder's tensors live in a Hugging Face checkpoint: `model.` for a plain
  /// llama/qwen2, `model.language_model.` (LLaVA, Qwen2-VL) or `model.text_model.` (Idefics3)
  /// inside a vision-language model.
  public static func tensorPrefix(in folder: HFModelFolder) throws -> String {
    let candidates = [
      "model.language_model.", "model.text_model.", "model.", "language_model.model.",
    ]
    guard
      let p = candidates.first(where: { folder.hasTensor($0 + "embed_tokens.weight") })
    else {
      throw ModelError(
        path: folder.path,
        message:
          "no decoder embedding (embed_tokens.weight under \(candidates.joined(separator: ", ")))")
    }
    return p
  }

  /// Loads a llama/qwen2/qwen3 decoder from Hugging Face tensors under `prefix` (see `tensorPrefix`)
  /// with `config` (the text part of config.json). The output head is `lm_head.weight` (or
  /// `language_model.lm_head.weight`), or the embedding when tied.
  public static func load(
    folder: HFModelFolder, prefix: String, config: DecoderConfig, meter: MemoryMeter?
  ) throws -> LlamaModel {
    try config.validate(source: (folder.path as NSString).appendingPathComponent("config.json"))
    let c = config
    let w = WeightReader(folder: folder, category: .weights, meter: meter)
    let d = c.hiddenSize
    let qDim = c.heads * c.headDim
    let kvDim = c.kvHeads * c.headDim

    let embedding = try w.weights(
      prefix + "embed_tokens.weight", rows: c.vocabularySize, cols: d)
    var layers: [LlamaLayer] = []
    for i in 0..<c.layers {
      let p = "\(prefix)layers.\(i)."
      // Q|K|V and gate|up are one product each: a stack of the stored tensors.
      let qkv = try w.weights(
        [
          (p + "self_attn.q_proj.weight", qDim), (p + "self_attn.k_proj.weight", kvDim),
          (p + "self_attn.v_proj.weight", kvDim),
        ], cols: d)
      let gateUp = try w.weights(
        [(p + "mlp.gate_proj.weight", c.intermediateSize), (p + "mlp.up_proj.weight", c.intermediateSize)],
        cols: d)
      var qkvBias: FloatBuffer?
      if c.attentionBias || w.has(p + "self_attn.q_proj.bias") {
        try w.check([
          (p + "self_attn.q_proj.bias", [qDim]), (p + "self_attn.k_proj.bias", [kvDim]),
          (p + "self_attn.v_proj.bias", [kvDim]),
        ])
        let b = FloatBuffer(uninitializedCount: qDim + 2 * kvDim, category: .weights, meter: meter)
        try w.fill(p + "self_attn.q_proj.bias", shape: [qDim], into: b.pointer)
        try w.fill(p + "self_attn.k_proj.bias", shape: [kvDim], into: b.pointer + qDim)
        try w.fill(p + "self_attn.v_proj.bias", shape: [kvDim], into: b.pointer + qDim + kvDim)
        qkvBias = b
      }
      var qNorm: FloatBuffer?
      var kNorm: FloatBuffer?
      if c.qkNorm {
        qNorm = try w.vector(p + "self_attn.q_norm.weight", c.headDim)
        kNorm = try w.vector(p + "self_attn.k_norm.weight", c.headDim)
      }
      layers.append(
        LlamaLayer(
          attentionNorm: try w.vector(p + "input_layernorm.weight", d),
          qkv: qkv, qkvBias: qkvBias,
          attentionOutput: try w.weights(p + "self_attn.o_proj.weight", rows: d, cols: qDim),
          attentionOutputBias: w.has(p + "self_attn.o_proj.bias")
            ? try w.vector(p + "self_attn.o_proj.bias", d) : nil,
          ffnNorm: try w.vector(p + "post_attention_layernorm.weight", d),
          gateUp: gateUp,
          down: try w.weights(p + "mlp.down_proj.weight", rows: d, cols: c.intermediateSize),
          qNorm: qNorm, kNorm: kNorm))
    }
    let outputNorm = try w.vector(prefix + "norm.weight", d)
    let head = ["lm_head.weight", "language_model.lm_head.weight"].first(where: w.has)
    let output: WeightMatrix
    if let head, !c.tiedEmbeddings {
      output = try w.weights(head, rows: c.vocabularySize, cols: d)
    } else if c.tiedEmbeddings {
      output = embedding
    } else {
      throw ModelError(
        path: folder.path, message: "no lm_head.weight and tie_word_embeddings is false")
    }
    return LlamaModel(
      config: config, embedding: embedding, layers: layers, outputNorm: outputNorm, output: output)
  }
}

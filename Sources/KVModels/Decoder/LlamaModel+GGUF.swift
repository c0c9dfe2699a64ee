import Foundation
import KVTensor

extension DecoderConfig {
  /// Reads `<arch>.*` hyper-parameters from GGUF metadata (llama, qwen2 and qwen3 layouts).
  public init(gguf: GGUFFile) throws {
    func fail(_ why: String) -> ModelError { ModelError(path: gguf.path, message: why) }
    guard let arch = gguf.metadata["general.architecture"]?.string else {
      throw fail("no general.architecture in metadata")
    }
    guard ModelRegistry.family(ggufArchitecture: arch) != nil else {
      throw fail(
        "architecture '\(arch)' is not supported (\(ModelRegistry.ggufArchitectures.joined(separator: ", ")))"
      )
    }
    func int(_ key: String) throws -> Int {
      guard let v = gguf.metadata["\(arch).\(key)"]?.int else {
        throw fail("missing metadata \(arch).\(key)")
      }
      return v
    }
    func float(_ key: String, _ fallback: Float) -> Float {
      gguf.metadata["\(arch).\(key)"]?.double.map(Float.init) ?? fallback
    }
    let hidden = try int("embedding_length")
    let heads = try int("attention.head_count")
    let vocab =
      gguf.metadata["\(arch).vocab_size"]?.int
      ?? gguf.metadata["tokenizer.ggml.tokens"]?.stringArray?.count ?? 0
    // The head size is attention.key_length when the converter wrote it (an explicit head_dim,
    // e.g. heads·head_dim ≠ hidden), else hidden / heads, as llama.cpp reads it; RoPE must cover
    // the whole head (rope.dimension_count is the rotated part).
    let headDim =
      gguf.metadata["\(arch).attention.key_length"]?.int ?? (heads > 0 ? hidden / heads : 0)
    if let v = gguf.metadata["\(arch).attention.value_length"]?.int, v != headDim {
      throw fail("value length \(v) differs from key length \(headDim): not supported")
    }
    if let r = gguf.metadata["\(arch).rope.dimension_count"]?.int, r != headDim {
      throw fail("partial RoPE (\(r) of \(headDim) head dimensions) is not supported")
    }
    // Scaled RoPE (llama 3.1+ ships rope_freqs.weight; yarn/linear set rope.scaling.type) would
    // change every angle: refuse it rather than run wrong.
    if gguf.tensors["rope_freqs.weight"] != nil {
      throw fail("RoPE frequency factors (rope_freqs.weight) are not supported")
    }
    if let s = gguf.metadata["\(arch).rope.scaling.type"]?.string, !["none", ""].contains(s) {
      throw fail("RoPE scaling '\(s)' is not supported")
    }
    if let name = ["ffn_gate", "ffn_up", "ffn_down"].map({ "blk.0.\($0).bias" })
      .first(where: { gguf.tensors[$0] != nil })
    {
      throw fail("MLP biases (\(name)) are not supported")
    }
    self.init(
      architecture: arch, hiddenSize: hidden, intermediateSize: try int("feed_forward_length"),
      layers: try int("block_count"), heads: heads,
      kvHeads: gguf.metadata["\(arch).attention.head_count_kv"]?.int ?? heads,
      headDim: headDim, vocabularySize: vocab, ropeTheta: float("rope.freq_base", 10000),
      rmsNormEps: float("attention.layer_norm_rms_epsilon", 1e-5),
      contextLength: gguf.metadata["\(arch).context_length"]?.int ?? 2048,
      tiedEmbeddings: gguf.tensors["output.weight"] == nil,
      attentionBias: gguf.tensors["blk.0.attn_q.bias"] != nil)
    try validate(source: gguf.path)
  }
}

/// How a model's matrices are held once loaded.
public enum WeightPrecision: String, CaseIterable, Sendable {
  /// As the file stores them (a GGUF's quant types, read in place from its mapping).
  case stored
  /// Dequantized to float32: the reference path, whose numerics match transformers'.
  case f32
}

extension LlamaModel {
  /// Loads a llama/qwen2/qwen3 GGUF: its matrices in place in the file's mapping (`.stored`), or
  /// dequantized to float32 (`.f32`); norms and biases always float32. Charges `meter`.
  public static func load(
    gguf: GGUFFile, precision: WeightPrecision = .stored, meter: MemoryMeter?
  ) throws -> LlamaModel {
    let config = try DecoderConfig(gguf: gguf)
    let c = config
    let qDim = c.heads * c.headDim
    let kvDim = c.kvHeads * c.headDim

    /// Throws unless `name`'s shape is [cols (ne0), rows (ne1)] (trailing 1s allowed): checked
    /// before anything is allocated for it.
    func check(_ name: String, rows: Int, cols: Int) throws {
      let info = try gguf.tensor(name)
      let expected = rows == 1 ? [cols] : [cols, rows]
      let dims =
        info.dims.count > expected.count
          && info.dims.dropFirst(expected.count).allSatisfy({ $0 == 1 })
        ? Array(info.dims.prefix(expected.count)) : info.dims
      guard dims == expected else {
        throw ModelError(
          path: gguf.path, message: "tensor \(name) has shape \(info.dims), expected \(expected)")
      }
    }
    /// Dequantizes `name` into `dst` after checking its shape.
    func fill(_ name: String, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) throws {
      try check(name, rows: rows, cols: cols)
      try gguf.dequantize(name, into: dst, count: rows * cols)
    }
    func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
      try check(name, rows: 1, cols: count)
      let b = FloatBuffer(count: count, category: .weights, meter: meter)
      try fill(name, rows: 1, cols: count, into: b.pointer)
      return b
    }
    // llama.cpp's converter interleaves the rotary halves of llama's Q and K rows (its RoPE
    // rotates adjacent pairs); those are put back in the Hugging Face rotate-half layout, so
    // every decoder uses one RoPE.
    let permuted = c.architecture == "llama"
    /// The tensors `names` (each `rows` × `cols`) stacked into one matrix; `heads` > 0 marks a
    /// Q or K part whose rows are un-permuted (a heap copy; the other parts stay mapped).
    func matrix(_ names: [(name: String, rows: Int, heads: Int)], cols: Int) throws -> WeightMatrix {
      for n in names { try check(n.name, rows: n.rows, cols: cols) }
      let total = names.reduce(0) { $0 + $1.rows }
      if precision == .f32 {
        let m = Matrix(rows: total, cols: cols, category: .weights, meter: meter)
        var row = 0
        for n in names {
          try fill(n.name, rows: n.rows, cols: cols, into: m.row(row))
          if permuted && n.heads > 0 {
            unpermuteRotary(
              UnsafeMutableRawPointer(m.row(row)), heads: n.heads, headDim: c.headDim,
              rowBytes: cols * MemoryLayout<Float>.stride)
          }
          row += n.rows
        }
        return WeightMatrix(m)
      }
      var parts: [WeightMatrix.Part] = []
      var mapped: [Bool] = []
      var owners: [AnyObject] = [gguf]
      for n in names {
        let info = try gguf.tensor(n.name)
        let data = try gguf.tensorData(n.name)  // refuses a type kvlab cannot read
        guard let format = WeightFormat(ggml: info.type) else {
          preconditionFailure("every dequantizable ggml type has a WeightFormat")
        }
        if permuted && n.heads > 0 {
          let copy = WeightBytes(count: info.byteCount, meter: meter)
          copy.pointer.copyMemory(from: data, byteCount: info.byteCount)
          unpermuteRotary(
            copy.pointer, heads: n.heads, headDim: c.headDim, rowBytes: format.rowBytes(cols: cols))
          parts.append(WeightMatrix.Part(format: format, bytes: copy.pointer, rows: n.rows))
          mapped.append(false)
          owners.append(copy)
        } else {
          parts.append(WeightMatrix.Part(format: format, bytes: data, rows: n.rows))
          mapped.append(true)
        }
      }
      return WeightMatrix(cols: cols, parts: parts, mapped: mapped, owners: owners, meter: meter)
    }

    let embedding = try matrix(
      [("token_embd.weight", c.vocabularySize, 0)], cols: c.hiddenSize)
    var layers: [LlamaLayer] = []
    for i in 0..<c.layers {
      let p = "blk.\(i)."
      let qkv = try matrix(
        [
          (p + "attn_q.weight", qDim, c.heads), (p + "attn_k.weight", kvDim, c.kvHeads),
          (p + "attn_v.weight", kvDim, 0),
        ], cols: c.hiddenSize)
      var bias: FloatBuffer?
      if c.attentionBias {
        let b = FloatBuffer(count: qDim + 2 * kvDim, category: .weights, meter: meter)
        try fill(p + "attn_q.bias", rows: 1, cols: qDim, into: b.pointer)
        try fill(p + "attn_k.bias", rows: 1, cols: kvDim, into: b.pointer + qDim)
        try fill(p + "attn_v.bias", rows: 1, cols: kvDim, into: b.pointer + qDim + kvDim)
        if permuted {
          let floatBytes = MemoryLayout<Float>.stride
          unpermuteRotary(
            UnsafeMutableRawPointer(b.pointer), heads: c.heads, headDim: c.headDim,
            rowBytes: floatBytes)
          unpermuteRotary(
            UnsafeMutableRawPointer(b.pointer + qDim), heads: c.kvHeads, headDim: c.headDim,
            rowBytes: floatBytes)
        }
        bias = b
      }
      // llama with attention_bias also has an o_proj bias (qwen2 does not).
      let outputBias =
        gguf.tensors[p + "attn_output.bias"] != nil
        ? try vector(p + "attn_output.bias", c.hiddenSize) : nil
      let gateUp = try matrix(
        [(p + "ffn_gate.weight", c.intermediateSize, 0), (p + "ffn_up.weight", c.intermediateSize, 0)],
        cols: c.hiddenSize)
      // Qwen3's per-head Q/K norms (llama.cpp does not permute qwen3's Q/K, so they apply as
      // stored).
      let qNorm = c.qkNorm ? try vector(p + "attn_q_norm.weight", c.headDim) : nil
      let kNorm = c.qkNorm ? try vector(p + "attn_k_norm.weight", c.headDim) : nil
      layers.append(
        LlamaLayer(
          attentionNorm: try vector(p + "attn_norm.weight", c.hiddenSize),
          qkv: qkv, qkvBias: bias,
          attentionOutput: try matrix([(p + "attn_output.weight", c.hiddenSize, 0)], cols: qDim),
          attentionOutputBias: outputBias,
          ffnNorm: try vector(p + "ffn_norm.weight", c.hiddenSize),
          gateUp: gateUp,
          down: try matrix(
            [(p + "ffn_down.weight", c.hiddenSize, 0)], cols: c.intermediateSize),
          qNorm: qNorm, kNorm: kNorm))
    }
    let outputNorm = try vector("output_norm.weight", c.hiddenSize)
    let output =
      c.tiedEmbeddings
      ? embedding : try matrix([("output.weight", c.vocabularySize, 0)], cols: c.hiddenSize)
    return LlamaModel(
      config: config, embedding: embedding, layers: layers, outputNorm: outputNorm, output: output)
  }

  /// Within each head, GGUF row 2i+half holds Hugging Face row half·(d/2)+i. Rows are
  /// `rowBytes` long (any storage format: a row is permuted whole).
  static func unpermuteRotary(
    _ rows: UnsafeMutableRawPointer, heads: Int, headDim: Int, rowBytes: Int
  ) {
    let half = headDim / 2
    var tmp = [UInt8](repeating: 0, count: headDim * rowBytes)
    for h in 0..<heads {
      let head = rows + h * headDim * rowBytes
      tmp.withUnsafeMutableBytes { tmp in
        for i in 0..<half {
          for part in 0..<2 {
            (tmp.baseAddress! + (part * half + i) * rowBytes).copyMemory(
              from: head + (2 * i + part) * rowBytes, byteCount: rowBytes)
          }
        }
        head.copyMemory(from: tmp.baseAddress!, byteCount: headDim * rowBytes)
      }
    }
  }
}

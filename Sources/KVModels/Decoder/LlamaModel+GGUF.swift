import Foundation
import KVTensor

extension DecoderConfig {
  /// Reads `<arch>.*` hyper-parameters from GGUF metadata (llama and qwen2 layouts).
  public init(gguf: GGUFFile) throws {
    func fail(_ why: String) -> ModelError { ModelError(path: gguf.path, message: why) }
    guard let arch = gguf.metadata["general.architecture"]?.string else {
      throw fail("no general.architecture in metadata")
    }
    guard ["llama", "qwen2"].contains(arch) else {
      throw fail("architecture '\(arch)' is not supported (llama, qwen2)")
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

extension LlamaModel {
  /// Loads and dequantizes a llama/qwen2 GGUF to float32, charging the weights to `meter`.
  public static func load(gguf: GGUFFile, meter: MemoryMeter?) throws -> LlamaModel {
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
    func matrix(_ name: String, rows: Int, cols: Int) throws -> Matrix {
      try check(name, rows: rows, cols: cols)
      let m = Matrix(rows: rows, cols: cols, category: .weights, meter: meter)
      try fill(name, rows: rows, cols: cols, into: m.pointer)
      return m
    }
    func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
      try check(name, rows: 1, cols: count)
      let b = FloatBuffer(count: count, category: .weights, meter: meter)
      try fill(name, rows: 1, cols: count, into: b.pointer)
      return b
    }

    let embedding = try matrix("token_embd.weight", rows: c.vocabularySize, cols: c.hiddenSize)
    var layers: [LlamaLayer] = []
    for i in 0..<c.layers {
      let p = "blk.\(i)."
      try check(p + "attn_q.weight", rows: qDim, cols: c.hiddenSize)
      try check(p + "attn_k.weight", rows: kvDim, cols: c.hiddenSize)
      try check(p + "attn_v.weight", rows: kvDim, cols: c.hiddenSize)
      try check(p + "ffn_gate.weight", rows: c.intermediateSize, cols: c.hiddenSize)
      try check(p + "ffn_up.weight", rows: c.intermediateSize, cols: c.hiddenSize)
      let qkv = Matrix(rows: qDim + 2 * kvDim, cols: c.hiddenSize, category: .weights, meter: meter)
      try fill(p + "attn_q.weight", rows: qDim, cols: c.hiddenSize, into: qkv.pointer)
      try fill(p + "attn_k.weight", rows: kvDim, cols: c.hiddenSize, into: qkv.row(qDim))
      try fill(p + "attn_v.weight", rows: kvDim, cols: c.hiddenSize, into: qkv.row(qDim + kvDim))
      if c.architecture == "llama" {
        // llama.cpp's converter interleaves the rotary halves of Q and K rows (its RoPE rotates
        // adjacent pairs); undo that so every decoder uses the Hugging Face rotate-half layout.
        unpermuteRotary(qkv.pointer, heads: c.heads, headDim: c.headDim, cols: c.hiddenSize)
        unpermuteRotary(qkv.row(qDim), heads: c.kvHeads, headDim: c.headDim, cols: c.hiddenSize)
      }
      var bias: FloatBuffer?
      if c.attentionBias {
        let b = FloatBuffer(count: qDim + 2 * kvDim, category: .weights, meter: meter)
        try fill(p + "attn_q.bias", rows: 1, cols: qDim, into: b.pointer)
        try fill(p + "attn_k.bias", rows: 1, cols: kvDim, into: b.pointer + qDim)
        try fill(p + "attn_v.bias", rows: 1, cols: kvDim, into: b.pointer + qDim + kvDim)
        if c.architecture == "llama" {
          unpermuteRotary(b.pointer, heads: c.heads, headDim: c.headDim, cols: 1)
          unpermuteRotary(b.pointer + qDim, heads: c.kvHeads, headDim: c.headDim, cols: 1)
        }
        bias = b
      }
      // llama with attention_bias also has an o_proj bias (qwen2 does not).
      let outputBias =
        gguf.tensors[p + "attn_output.bias"] != nil
        ? try vector(p + "attn_output.bias", c.hiddenSize) : nil
      let gateUp = Matrix(
        rows: 2 * c.intermediateSize, cols: c.hiddenSize, category: .weights, meter: meter)
      try fill(
        p + "ffn_gate.weight", rows: c.intermediateSize, cols: c.hiddenSize, into: gateUp.pointer)
      try fill(
        p + "ffn_up.weight", rows: c.intermediateSize, cols: c.hiddenSize,
        into: gateUp.row(c.intermediateSize))
      layers.append(
        LlamaLayer(
          attentionNorm: try vector(p + "attn_norm.weight", c.hiddenSize),
          qkv: qkv, qkvBias: bias,
          attentionOutput: try matrix(p + "attn_output.weight", rows: c.hiddenSize, cols: qDim),
          attentionOutputBias: outputBias,
          ffnNorm: try vector(p + "ffn_norm.weight", c.hiddenSize),
          gateUp: gateUp,
          down: try matrix(p + "ffn_down.weight", rows: c.hiddenSize, cols: c.intermediateSize)))
    }
    let outputNorm = try vector("output_norm.weight", c.hiddenSize)
    let output =
      c.tiedEmbeddings
      ? embedding : try matrix("output.weight", rows: c.vocabularySize, cols: c.hiddenSize)
    return LlamaModel(
      config: config, embedding: embedding, layers: layers, outputNorm: outputNorm, output: output)
  }

  /// Within each head, GGUF row 2i+half holds Hugging Face row half·(d/2)+i. Rows are `cols` long.
  static func unpermuteRotary(
    _ rows: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, cols: Int
  ) {
    let half = headDim / 2
    var tmp = [Float](repeating: 0, count: headDim * cols)
    for h in 0..<heads {
      let head = rows + h * headDim * cols
      for i in 0..<half {
        for part in 0..<2 {
          let src = head + (2 * i + part) * cols
          let dstRow = part * half + i
          for x in 0..<cols { tmp[dstRow * cols + x] = src[x] }
        }
      }
      tmp.withUnsafeBufferPointer { head.update(from: $0.baseAddress!, count: headDim * cols) }
    }
  }
}

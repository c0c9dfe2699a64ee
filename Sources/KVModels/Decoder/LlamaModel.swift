import Foundation
import KVTensor

/// Which positions of a forward block need logits.
public enum LogitRows: Sendable {
  case none, last, all
}

/// One decoder block's weights. Q, K and V are fused into one matrix (and gate with up) so each
/// projection is a single large matmul.
struct LlamaLayer {
  var attentionNorm: FloatBuffer
  var qkv: Matrix  // [(heads + 2·kvHeads)·headDim][hidden]
  var qkvBias: FloatBuffer?
  var attentionOutput: Matrix  // [hidden][heads·headDim]
  var ffnNorm: FloatBuffer
  var gateUp: Matrix  // [2·intermediate][hidden]: gate rows first, then up
  var down: Matrix  // [hidden][intermediate]
}

/// A llama-style decoder (llama, qwen2) in float32: RMSNorm → GQA attention with RoPE →
/// RMSNorm → SwiGLU MLP, residuals around both. Knows nothing of budgets: it reads and feeds a
/// `KeyValueCache`.
public final class LlamaModel: @unchecked Sendable {
  public let config: DecoderConfig
  let embedding: Matrix  // [vocab][hidden]
  let layers: [LlamaLayer]
  let outputNorm: FloatBuffer
  let output: Matrix  // [vocab][hidden]; the embedding itself when tied
  let rope: RotaryEmbedding
  let attention: TiledAttention

  init(
    config: DecoderConfig, embedding: Matrix, layers: [LlamaLayer], outputNorm: FloatBuffer,
    output: Matrix
  ) {
    self.config = config
    self.embedding = embedding
    self.layers = layers
    self.outputNorm = outputNorm
    self.output = output
    rope = RotaryEmbedding(dimension: config.headDim, base: config.ropeTheta)
    attention = TiledAttention(heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim)
  }

  public var parameterCount: Int {
    var n = embedding.rows * embedding.cols + outputNorm.count
    if output.storage !== embedding.storage { n += output.rows * output.cols }
    for l in layers {
      n += l.attentionNorm.count + l.ffnNorm.count + (l.qkvBias?.count ?? 0)
      n += l.qkv.rows * l.qkv.cols + l.attentionOutput.rows * l.attentionOutput.cols
      n += l.gateUp.rows * l.gateUp.cols + l.down.rows * l.down.cols
    }
    return n
  }

  /// Token embeddings, `tokens.count × hidden`.
  public func embed(_ tokens: [Int], meter: MemoryMeter?) -> Matrix {
    let d = config.hiddenSize
    let x = Matrix(rows: tokens.count, cols: d, category: .activations, meter: meter)
    for (i, t) in tokens.enumerated() {
      x.row(i).update(from: embedding.row(t), count: d)
    }
    return x
  }

  /// Runs one block of `x.rows` positions through every layer, attending to what `cache` holds
  /// plus the block itself, and commits the block's K/V to the cache layer by layer.
  /// Returns logits for the requested rows (`rows × vocab`), or nil for `.none`.
  public func forward(
    _ x: Matrix, positions: [Int], origins: [TokenOrigin], cache: KeyValueCache,
    logits: LogitRows, meter: MemoryMeter?
  ) throws -> Matrix? {
    let n = x.rows
    let c = config
    let d = c.hiddenSize
    let qDim = c.heads * c.headDim
    let kvDim = c.kvHeads * c.headDim
    let qkvDim = qDim + 2 * kvDim
    let ff = c.intermediateSize

    let h = Matrix(rows: n, cols: d, category: .activations, meter: meter)
    let qkv = Matrix(rows: n, cols: qkvDim, category: .activations, meter: meter)
    let attended = Matrix(rows: n, cols: qDim, category: .activations, meter: meter)
    let gateUp = Matrix(rows: n, cols: 2 * ff, category: .activations, meter: meter)
    let act = Matrix(rows: n, cols: ff, category: .activations, meter: meter)
    let scratch = FloatBuffer(count: attention.scratchCount, category: .activations, meter: meter)
    let scale = 1 / Float(c.headDim).squareRoot()

    for (index, layer) in layers.enumerated() {
      // Attention: h = norm(x); q,k,v = h·Wqkvᵀ; rotate q,k; attend; x += attended·Woᵀ
      Kernels.rmsNorm(
        x.pointer, weight: layer.attentionNorm.pointer, eps: c.rmsNormEps, rows: n, cols: d,
        out: h.pointer)
      BLAS.sgemm(
        transB: true, m: n, n: qkvDim, k: d, a: h.pointer, lda: d, b: layer.qkv.pointer, ldb: d,
        c: qkv.pointer, ldc: qkvDim)
      if let bias = layer.qkvBias {
        Kernels.addBias(qkv.pointer, bias: bias.pointer, rows: n, cols: qkvDim)
      }
      let q = qkv.pointer
      let k = qkv.pointer + qDim
      let v = qkv.pointer + qDim + kvDim
      rope.apply(q, rows: n, ld: qkvDim, heads: c.heads, positions: positions)
      rope.apply(k, rows: n, ld: qkvDim, heads: c.kvHeads, positions: positions)

      let past = cache.cached(layer: index)
      var segments: [KVSegment] = []
      if past.count > 0 {
        segments.append(
          KVSegment(
            keys: past.keys, values: past.values, count: past.count, headStride: past.headStride,
            rowStride: past.rowStride, causal: false))
      }
      segments.append(
        KVSegment(
          keys: k, values: v, count: n, headStride: c.headDim, rowStride: qkvDim, causal: true))
      attention.run(
        q: q, ldq: qkvDim, n: n, segments: segments, scale: scale, out: attended.pointer,
        ldo: qDim, scratch: scratch.pointer)
      try cache.commit(
        layer: index,
        block: KVBlock(
          keys: k, values: v, queries: q, ld: qkvDim, queryLD: qkvDim, count: n,
          positions: positions, origins: origins))
      BLAS.sgemm(
        transB: true, m: n, n: d, k: qDim, a: attended.pointer, lda: qDim,
        b: layer.attentionOutput.pointer, ldb: qDim, beta: 1, c: x.pointer, ldc: d)

      // MLP: x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ with h = norm(x)
      Kernels.rmsNorm(
        x.pointer, weight: layer.ffnNorm.pointer, eps: c.rmsNormEps, rows: n, cols: d,
        out: h.pointer)
      BLAS.sgemm(
        transB: true, m: n, n: 2 * ff, k: d, a: h.pointer, lda: d, b: layer.gateUp.pointer,
        ldb: d, c: gateUp.pointer, ldc: 2 * ff)
      Kernels.siluGate(gateUp.pointer, rows: n, cols: ff, out: act.pointer)
      BLAS.sgemm(
        transB: true, m: n, n: d, k: ff, a: act.pointer, lda: ff, b: layer.down.pointer, ldb: ff,
        beta: 1, c: x.pointer, ldc: d)
    }
    try cache.finishBlock()

    let first: Int
    switch logits {
    case .none: return nil
    case .last: first = n - 1
    case .all: first = 0
    }
    let rows = n - first
    Kernels.rmsNorm(
      x.row(first), weight: outputNorm.pointer, eps: c.rmsNormEps, rows: rows, cols: d,
      out: h.pointer)
    let out = Matrix(rows: rows, cols: c.vocabularySize, category: .activations, meter: meter)
    BLAS.sgemm(
      transB: true, m: rows, n: c.vocabularySize, k: d, a: h.pointer, lda: d,
      b: output.pointer, ldb: d, c: out.pointer, ldc: c.vocabularySize)
    return out
  }
}

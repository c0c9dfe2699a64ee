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
  var qkv: WeightMatrix  // [(heads + 2·kvHeads)·headDim][hidden]
  var qkvBias: FloatBuffer?
  var attentionOutput: WeightMatrix  // [hidden][heads·headDim]
  var attentionOutputBias: FloatBuffer? = nil  // [hidden]: llama attention_bias's o_proj bias
  var ffnNorm: FloatBuffer
  var gateUp: WeightMatrix  // [2·intermediate][hidden]: gate rows first, then up
  var down: WeightMatrix  // [hidden][intermediate]
  /// Qwen3's per-head RMSNorm weights for Q and K (`[headDim]` each), applied before RoPE.
  var qNorm: FloatBuffer? = nil
  var kNorm: FloatBuffer? = nil

  var matrices: [WeightMatrix] { [qkv, attentionOutput, gateUp, down] }
}

/// A llama-style decoder (llama, qwen2, qwen3): RMSNorm → GQA attention with RoPE (Qwen3: each
/// Q and K head RMS-normalised first) → RMSNorm → SwiGLU MLP, residuals around both. Activations are float32; the matrices stay in the precision they
/// were loaded in (`WeightMatrix`). Knows nothing of budgets: it reads and feeds a
/// `KeyValueCache`.
public final class LlamaModel: @unchecked Sendable {
  public let config: DecoderConfig
  let embedding: WeightMatrix  // [vocab][hidden]
  let layers: [LlamaLayer]
  let outputNorm: FloatBuffer
  let output: WeightMatrix  // [vocab][hidden]; the embedding itself when tied
  let rope: RotaryEmbedding
  let attention: TiledAttention

  init(
    config: DecoderConfig, embedding: WeightMatrix, layers: [LlamaLayer], outputNorm: FloatBuffer,
    output: WeightMatrix
  ) {
    self.config = config
    self.embedding = embedding
    self.layers = layers
    self.outputNorm = outputNorm
    self.output = output
    rope = RotaryEmbedding(dimension: config.headDim, base: config.ropeTheta)
    attention = TiledAttention(heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim)
  }

  /// The stored formats of the matrices ("Q4_1+Q8_0", "F32").
  public var weightFormat: String {
    var names: [String] = []
    for m in [embedding] + layers.flatMap(\.matrices) + [output] {
      for n in m.formatName.split(separator: "+").map(String.init) where !names.contains(n) {
        names.append(n)
      }
    }
    return names.joined(separator: "+")
  }

  public var parameterCount: Int {
    var n = embedding.rows * embedding.cols + outputNorm.count
    if output !== embedding { n += output.rows * output.cols }
    for l in layers {
      n += l.attentionNorm.count + l.ffnNorm.count
      n += (l.qkvBias?.count ?? 0) + (l.attentionOutputBias?.count ?? 0)
      n += (l.qNorm?.count ?? 0) + (l.kNorm?.count ?? 0)
      n += l.qkv.rows * l.qkv.cols + l.attentionOutput.rows * l.attentionOutput.cols
      n += l.gateUp.rows * l.gateUp.cols + l.down.rows * l.down.cols
    }
    return n
  }

  /// Token embeddings, `tokens.count × hidden`.
  public func embed(_ tokens: [Int], meter: MemoryMeter?) -> Matrix {
    let x = Matrix(rows: tokens.count, cols: config.hiddenSize, category: .activations, meter: meter)
    embed(tokens, into: x, at: 0)
    return x
  }

  /// Writes the embeddings of `tokens` into rows `row ..< row + tokens.count` of `x`.
  public func embed(_ tokens: [Int], into x: Matrix, at row: Int) {
    for (i, t) in tokens.enumerated() { embedding.dequantizeRow(t, into: x.row(row + i)) }
  }

  /// Runs one block of `x.rows` positions through every layer, attending to what `cache` holds
  /// plus the block itself, and commits the block's K/V to the cache layer by layer.
  /// Returns logits for the requested rows (`rows × vocab`), or nil for `.none`.
  ///
  /// `positions` are what the cache records (and, for 1-D RoPE, the rotary positions);
  /// `ropeAxes` (temporal, height, width rows, for a model with M-RoPE) rotate instead.
  /// The last `proxyRows` rows of `x` (with their positions) are proxy queries: they attend to
  /// the cache and the block, are handed to the cache as `KVBlock.proxyQueries`, and are
  /// neither cached nor part of the logits.
  public func forward(
    _ x: Matrix, positions: [Int], ropeAxes: [[Int]]? = nil, origins: [TokenOrigin],
    cache: KeyValueCache, logits: LogitRows, proxyRows: Int = 0, meter: MemoryMeter?
  ) throws -> Matrix? {
    let all = x.rows
    let n = all - proxyRows
    let c = config
    let d = c.hiddenSize
    let qDim = c.heads * c.headDim
    let kvDim = c.kvHeads * c.headDim
    let qkvDim = qDim + 2 * kvDim
    let ff = c.intermediateSize

    // Scratch activations: every one is fully written before it is read.
    let h = Matrix(uninitializedRows: all, cols: d, category: .activations, meter: meter)
    let qkv = Matrix(uninitializedRows: all, cols: qkvDim, category: .activations, meter: meter)
    let attended = Matrix(uninitializedRows: all, cols: qDim, category: .activations, meter: meter)
    let gateUp = Matrix(uninitializedRows: all, cols: 2 * ff, category: .activations, meter: meter)
    let act = Matrix(uninitializedRows: all, cols: ff, category: .activations, meter: meter)
    let threads = BLAS.threads
    let scratch = FloatBuffer(
      uninitializedCount: attention.scratchCount(threads: threads), category: .activations,
      meter: meter)
    // Dequantized weight tiles for the sgemm of a block (decode reads the stored weights).
    let tiles = WeightMatrix.tiles(
      for: layers.flatMap(\.matrices) + [output], rows: all, category: .activations, meter: meter)
    let scale = 1 / Float(c.headDim).squareRoot()
    // cos/sin once per block, for every layer. A model with M-RoPE given 1-D positions (text
    // only) uses them on every axis, which is what M-RoPE reduces to.
    let rotary =
      c.mropeSection.map { rope.table(axes: ropeAxes ?? [positions], sections: $0) }
      ?? rope.table(positions: positions)

    for (index, layer) in layers.enumerated() {
      // Attention: h = norm(x); q,k,v = h·Wqkvᵀ; rotate q,k; attend; x += attended·Woᵀ
      Kernels.rmsNorm(
        x.pointer, weight: layer.attentionNorm.pointer, eps: c.rmsNormEps, rows: all, cols: d,
        out: h.pointer)
      layer.qkv.apply(h, into: qkv, scratch: tiles)
      if let bias = layer.qkvBias {
        Kernels.addBias(qkv.pointer, bias: bias.pointer, rows: all, cols: qkvDim)
      }
      let q = qkv.pointer
      let k = qkv.pointer + qDim
      let v = qkv.pointer + qDim + kvDim
      if let qNorm = layer.qNorm, let kNorm = layer.kNorm {
        Self.headNorm(
          qkv.pointer, rows: all, ld: qkvDim, heads: c.heads, kvHeads: c.kvHeads,
          headDim: c.headDim, q: qNorm, k: kNorm, eps: c.rmsNormEps)
      }
      // K's heads follow Q's in each row: rotate all of them in one pass.
      rope.apply(q, rows: all, ld: qkvDim, heads: c.heads + c.kvHeads, table: rotary)

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
          keys: k, values: v, count: all, headStride: c.headDim, rowStride: qkvDim, causal: true))
      attention.run(
        q: q, ldq: qkvDim, n: all, segments: segments, scale: scale, out: attended.pointer,
        ldo: qDim, scratch: scratch.pointer, threads: threads)
      var block = KVBlock(
        keys: k, values: v, queries: q, ld: qkvDim, queryLD: qkvDim, count: n,
        positions: proxyRows > 0 ? Array(positions.prefix(n)) : positions, origins: origins)
      if proxyRows > 0 {
        block.proxyQueries = UnsafePointer(q + n * qkvDim)
        block.proxyCount = proxyRows
      }
      try cache.commit(layer: index, block: block)
      layer.attentionOutput.apply(attended, beta: 1, into: x, scratch: tiles)
      if let bias = layer.attentionOutputBias {
        Kernels.addBias(x.pointer, bias: bias.pointer, rows: all, cols: d)
      }

      // MLP: x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ with h = norm(x)
      Kernels.rmsNorm(
        x.pointer, weight: layer.ffnNorm.pointer, eps: c.rmsNormEps, rows: all, cols: d,
        out: h.pointer)
      layer.gateUp.apply(h, into: gateUp, scratch: tiles)
      Kernels.siluGate(gateUp.pointer, rows: all, cols: ff, out: act.pointer)
      layer.down.apply(act, beta: 1, into: x, scratch: tiles)
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
    let out = Matrix(
      uninitializedRows: rows, cols: c.vocabularySize, category: .activations, meter: meter)
    output.apply(
      h.pointer, rows: rows, ldx: d, out: out.pointer, ldo: c.vocabularySize, scratch: tiles)
    return out
  }

  /// RMSNorm over each head of Q (weights `q`) and of K (`k`) in place, rows `ld` apart with
  /// Q's heads then K's at the start of each row.
  static func headNorm(
    _ x: UnsafeMutablePointer<Float>, rows: Int, ld: Int, heads: Int, kvHeads: Int, headDim: Int,
    q: FloatBuffer, k: FloatBuffer, eps: Float
  ) {
    Parallel.rows(rows, grain: 8, threads: BLAS.threads) { range in
      for r in range {
        for h in 0..<(heads + kvHeads) {
          let head = x + r * ld + h * headDim
          Kernels.rmsNormRow(
            head, weight: (h < heads ? q : k).pointer, eps: eps, count: headDim, out: head)
        }
      }
    }
  }
}

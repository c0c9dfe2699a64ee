import Foundation

/// Row-wise kernels on row-major Float32 data. Each takes raw pointers so that callers can run
/// them on slices of larger buffers without copying; loops are written so the compiler vectorises.
public enum Kernels {
  /// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `cols` (in place allowed).
  /// Rows are split across `threads` (results do not depend on the split).
  public static func rmsNorm(
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
    rows: Int, cols: Int, out: UnsafeMutablePointer<Float>, threads: Int = BLAS.threads
  ) {
    Parallel.rows(rows, grain: 16, threads: threads) { range in
      for r in range {
        rmsNormRow(x + r * cols, weight: weight, eps: eps, count: cols, out: out + r * cols)
      }
    }
  }

  /// One row of `rmsNorm` (in place allowed): for rows that are not contiguous, such as the
  /// heads of a Q/K/V row normalised one by one.
  @inline(__always)
  public static func rmsNormRow(
    _ src: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float, count: Int,
    out dst: UnsafeMutablePointer<Float>
  ) {
    let sum = FastMath.sumOfSquares(src, count: count)
    let scale = 1 / (sum / Float(count) + eps).squareRoot()
    for c in 0..<count { dst[c] = weight[c] * (src[c] * scale) }
  }

  /// LayerNorm with optional bias (for the ViT towers): mean and variance in float32 over
  /// each row, rows split across `threads` (in place allowed).
  public static func layerNorm(
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    eps: Float, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>, threads: Int = BLAS.threads
  ) {
    Parallel.rows(rows, grain: 8, threads: threads) { range in
      for r in range {
        let src = x + r * cols
        let dst = out + r * cols
        let mean = FastMath.sum(src, count: cols) / Float(cols)
        let variance = FastMath.sumOfSquaredDeviations(src, count: cols, mean: mean) / Float(cols)
        let inv = 1 / (variance + eps).squareRoot()
        if let bias {
          for c in 0..<cols { dst[c] = (src[c] - mean) * inv * weight[c] + bias[c] }
        } else {
          for c in 0..<cols { dst[c] = (src[c] - mean) * inv * weight[c] }
        }
      }
    }
  }

  /// Applies `f` to every element of `x` (8 lanes at a time), split across `threads`.
  static func elementwise(
    _ x: UnsafeMutablePointer<Float>, count: Int, threads: Int,
    _ f: (FastMath.Vector) -> FastMath.Vector
  ) {
    let chunk = 4096
    let chunks = (count + chunk - 1) / chunk
    Parallel.rows(chunks, grain: 4, threads: threads) { range in
      for ch in range {
        var i = ch * chunk
        let end = min(count, i + chunk)
        while i + 8 <= end {
          FastMath.store(f(FastMath.load(x + i)), x + i)
          i += 8
        }
        if i < end {
          let n = end - i
          FastMath.store(f(FastMath.loadPartial(x + i, n, fill: 0)), x + i, n)
        }
      }
    }
  }

  /// out[r][c] = silu(gate[r][c]) * up[r][c]; gate and up are the two halves of each row of `gu`
  /// (`rows × 2·cols`), as produced by one fused gate|up matmul. silu(g) = g / (1 + e^−g), with
  /// the vectorised exp; rows are split across `threads`.
  public static func siluGate(
    _ gu: UnsafePointer<Float>, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>,
    threads: Int = BLAS.threads
  ) {
    Parallel.rows(rows, grain: 4, threads: threads) { range in
      for r in range {
        let g = gu + r * 2 * cols
        let u = g + cols
        let dst = out + r * cols
        var c = 0
        while c + 8 <= cols {
          let x = FastMath.load(g + c)
          FastMath.store(x / (1 + FastMath.exp(-x)) * FastMath.load(u + c), dst + c)
          c += 8
        }
        if c < cols {
          let n = cols - c
          let x = FastMath.loadPartial(g + c, n, fill: 0)
          let y = x / (1 + FastMath.exp(-x)) * FastMath.loadPartial(u + c, n, fill: 0)
          FastMath.store(y, dst + c, n)
        }
      }
    }
  }

  /// GELU, exact (erf) form (Foundation's erf: not vectorised), split across `threads`.
  public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int, threads: Int = BLAS.threads) {
    let chunk = 4096
    Parallel.rows((count + chunk - 1) / chunk, grain: 4, threads: threads) { range in
      for i in (range.lowerBound * chunk)..<min(count, range.upperBound * chunk) {
        let v = x[i]
        x[i] = 0.5 * v * (1 + Foundation.erf(v / Float(2).squareRoot()))
      }
    }
  }

  /// GELU, tanh approximation (gelu_pytorch_tanh), with tanh(z) = 1 − 2 / (e^{2z} + 1) on the
  /// vectorised exp.
  public static func geluTanh(_ x: UnsafeMutablePointer<Float>, count: Int, threads: Int = BLAS.threads) {
    let k = FastMath.Vector(repeating: Float((2 / Double.pi).squareRoot()))
    let c = FastMath.Vector(repeating: 0.044715)
    elementwise(x, count: count, threads: threads) { v in
      let z = k * (v + c * v * v * v)
      let tanh = 1 - 2 / (FastMath.exp(2 * z) + 1)
      return 0.5 * v * (1 + tanh)
    }
  }

  /// quick_gelu (CLIP, Qwen2-VL's vision MLP): x · sigmoid(1.702 x).
  public static func quickGelu(_ x: UnsafeMutablePointer<Float>, count: Int, threads: Int = BLAS.threads) {
    elementwise(x, count: count, threads: threads) { v in v / (1 + FastMath.exp(-1.702 * v)) }
  }

  /// In-place numerically stable softmax over each row (the kernel path's vectors; rows split across
  /// `threads`).
  public static func softmax(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, threads: Int = BLAS.threads
  ) {
    guard cols > 0 else { return }
    Parallel.rows(rows, grain: 8, threads: threads) { range in
      for r in range {
        let row = x + r * cols
        let m = SoftmaxRow.max(row, count: cols)
        let inv = 1 / SoftmaxRow.expShiftSum(row, count: cols, shift: m)
        for c in 0..<cols { row[c] *= inv }
      }
    }
  }

  /// x[i] += bias[i % cols] for each row.
  public static func addBias(
    _ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int,
    ld: Int? = nil
  ) {
    let stride = ld ?? cols
    for r in 0..<rows {
      let row = x + r * stride
      for c in 0..<cols { row[c] += bias[c] }
    }
  }
}

/// Rotary position embedding in the "rotate half" (GPT-NeoX / Hugging Face) layout: dimension i
/// pairs with i + d/2. Frequencies are computed as transformers does (float32 inverse frequencies,
/// float32 angle = position · inv_freq), so logits agree to float rounding.
public struct RotaryEmbedding: Sendable {
  public let dimension: Int
  public let base: Float
  public let inverseFrequencies: [Float]

  public init(dimension: Int, base: Float) {
    self.dimension = dimension
    self.base = base
    inverseFrequencies = (0..<(dimension / 2)).map { i in
      Float(1.0 / pow(Double(base), Double(2 * i) / Double(dimension)))
    }
  }

  /// cos and sin of every (position, frequency) pair: compute once per forward, use for every
  /// layer and head.
  public func table(positions: [Int]) -> RotaryTable {
    let half = dimension / 2
    var cos = [Float](repeating: 0, count: positions.count * half)
    var sin = [Float](repeating: 0, count: positions.count * half)
    for (r, position) in positions.enumerated() {
      let p = Float(position)
      for i in 0..<half {
        let angle = p * inverseFrequencies[i]
        cos[r * half + i] = Foundation.cos(angle)
        sin[r * half + i] = Foundation.sin(angle)
      }
    }
    return RotaryTable(half: half, cos: cos, sin: sin)
  }

  /// Multimodal RoPE (Qwen2-VL's M-RoPE): frequency i takes its position from axis
  /// `a(i) = s mod axes.count`, where s is the section of `sections` (sizes summing to d/2) that
  /// holds i. `axes[a][r]` is row r's position on axis a (temporal, height, width).
  public func table(axes: [[Int]], sections: [Int]) -> RotaryTable {
    let half = dimension / 2
    precondition(sections.reduce(0, +) == half && !axes.isEmpty, "M-RoPE sections must cover d/2")
    var axisOf = [Int](repeating: 0, count: half)
    var i = 0
    for (s, size) in sections.enumerated() {
      for _ in 0..<size {
        axisOf[i] = s % axes.count
        i += 1
      }
    }
    let rows = axes[0].count
    var cos = [Float](repeating: 0, count: rows * half)
    var sin = [Float](repeating: 0, count: rows * half)
    for r in 0..<rows {
      for i in 0..<half {
        let angle = Float(axes[axisOf[i]][r]) * inverseFrequencies[i]
        cos[r * half + i] = Foundation.cos(angle)
        sin[r * half + i] = Foundation.sin(angle)
      }
    }
    return RotaryTable(half: half, cos: cos, sin: sin)
  }

  /// Rotates `heads` heads of each row of `x` (row stride `ld`, head h at column h·dimension),
  /// row r at position `positions[r]`.
  public func apply(
    _ x: UnsafeMutablePointer<Float>, rows: Int, ld: Int, heads: Int, positions: [Int]
  ) {
    apply(x, rows: rows, ld: ld, heads: heads, table: table(positions: positions))
  }

  /// Rotates `heads` heads of each row of `x`, row r with row r of `table`; rows are split
  /// across `threads`.
  public func apply(
    _ x: UnsafeMutablePointer<Float>, rows: Int, ld: Int, heads: Int, table: RotaryTable,
    threads: Int = BLAS.threads
  ) {
    let half = dimension / 2
    guard rows > 0, half > 0 else { return }
    precondition(table.half == half && table.cos.count >= rows * half, "rotary table too small")
    table.cos.withUnsafeBufferPointer { cosBuffer in
      table.sin.withUnsafeBufferPointer { sinBuffer in
        let cosBase = cosBuffer.baseAddress!
        let sinBase = sinBuffer.baseAddress!
        Parallel.rows(rows, grain: 16, threads: threads) { range in
          for r in range {
            let cs = cosBase + r * half
            let sn = sinBase + r * half
            for h in 0..<heads {
              let v = x + r * ld + h * dimension
              for i in 0..<half {
                let a = v[i]
                let b = v[i + half]
                v[i] = a * cs[i] - b * sn[i]
                v[i + half] = b * cs[i] + a * sn[i]
              }
            }
          }
        }
      }
    }
  }
}

/// Per-row cos/sin tables for `RotaryEmbedding` (`rows × half` each).
public struct RotaryTable: Sendable {
  public let half: Int
  public let cos: [Float]
  public let sin: [Float]

  public init(half: Int, cos: [Float], sin: [Float]) {
    precondition(cos.count == sin.count && cos.count % max(1, half) == 0, "cos/sin tables differ")
    self.half = half
    self.cos = cos
    self.sin = sin
  }
}

import Foundation

/// Row-wise kernels on row-major Float32 data. Each takes raw pointers so that callers can run
/// them on slices of larger buffers without copying; loops are written so the compiler vectorises.
public enum Kernels {
  /// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `cols` (in place allowed).
  public static func rmsNorm(
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
    rows: Int, cols: Int, out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      let src = x + r * cols
      let dst = out + r * cols
      var sum: Float = 0
      for c in 0..<cols { sum += src[c] * src[c] }
      let scale = 1 / (sum / Float(cols) + eps).squareRoot()
      for c in 0..<cols { dst[c] = weight[c] * (src[c] * scale) }
    }
  }

  /// LayerNorm with optional bias (for the ViT towers).
  public static func layerNorm(
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    eps: Float, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      let src = x + r * cols
      let dst = out + r * cols
      var mean: Float = 0
      for c in 0..<cols { mean += src[c] }
      mean /= Float(cols)
      var variance: Float = 0
      for c in 0..<cols {
        let d = src[c] - mean
        variance += d * d
      }
      let inv = 1 / (variance / Float(cols) + eps).squareRoot()
      for c in 0..<cols {
        let y = (src[c] - mean) * inv * weight[c]
        dst[c] = bias.map { y + $0[c] } ?? y
      }
    }
  }

  /// out[r][c] = silu(gate[r][c]) * up[r][c]; gate and up are the two halves of each row of `gu`
  /// (`rows × 2·cols`), as produced by one fused gate|up matmul.
  public static func siluGate(
    _ gu: UnsafePointer<Float>, rows: Int, cols: Int, out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      let g = gu + r * 2 * cols
      let u = g + cols
      let dst = out + r * cols
      for c in 0..<cols {
        let x = g[c]
        dst[c] = x / (1 + Foundation.exp(-x)) * u[c]
      }
    }
  }

  /// GELU, exact (erf) form.
  public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
      let v = x[i]
      x[i] = 0.5 * v * (1 + Foundation.erf(v / Float(2).squareRoot()))
    }
  }

  /// GELU, tanh approximation (gelu_pytorch_tanh).
  public static func geluTanh(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let k = Float((2 / Double.pi).squareRoot())
    for i in 0..<count {
      let v = x[i]
      x[i] = 0.5 * v * (1 + Foundation.tanh(k * (v + 0.044715 * v * v * v)))
    }
  }

  /// In-place numerically stable softmax over each row.
  public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
      let row = x + r * cols
      var m = -Float.infinity
      for c in 0..<cols { m = max(m, row[c]) }
      var sum: Float = 0
      for c in 0..<cols {
        let e = Foundation.exp(row[c] - m)
        row[c] = e
        sum += e
      }
      let inv = 1 / sum
      for c in 0..<cols { row[c] *= inv }
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

  /// Rotates `heads` heads of each row of `x` (row stride `ld`, head h at column h·dimension),
  /// row r at position `positions[r]`.
  public func apply(
    _ x: UnsafeMutablePointer<Float>, rows: Int, ld: Int, heads: Int, positions: [Int]
  ) {
    let half = dimension / 2
    var cosTable = [Float](repeating: 0, count: half)
    var sinTable = [Float](repeating: 0, count: half)
    for r in 0..<rows {
      let p = Float(positions[r])
      for i in 0..<half {
        let angle = p * inverseFrequencies[i]
        cosTable[i] = Foundation.cos(angle)
        sinTable[i] = Foundation.sin(angle)
      }
      for h in 0..<heads {
        let v = x + r * ld + h * dimension
        for i in 0..<half {
          let a = v[i]
          let b = v[i + half]
          v[i] = a * cosTable[i] - b * sinTable[i]
          v[i + half] = b * cosTable[i] + a * sinTable[i]
        }
      }
    }
  }
}

/// Vectorised float32 math for the hot loops (softmax, SiLU). Eight lanes at a time; Swift
/// lowers `SIMD8<Float>` to whatever the target has (two SSE registers on baseline x86-64).
///
/// Every entry point computes each element with the same lane operations, whether it falls in
/// the vector body or the tail, so results do not depend on a row's length or alignment.
public enum FastMath {
  public typealias Vector = SIMD8<Float>

  /// Below this, expf underflows to a subnormal: we return 0 (also for -inf).
  static let expLow: Float = -87.336_544
  /// Above this 2ⁿ would need n = 128: we return +inf (float's true limit is 88.72).
  static let expHigh: Float = 88.376_26

  /// e^x per lane, Cody–Waite range reduction x = n·ln2 + r (|r| ≤ ln2/2) and Cephes' degree-6
  /// polynomial for e^r; at most 2 ulp from the correctly rounded value (see FastMathTests).
  @inline(__always)
  public static func exp(_ x: Vector) -> Vector {
    let magic = Vector(repeating: 12_582_912)  // 1.5·2²³: adding it rounds to an integer
    let low = Vector(repeating: expLow)
    let high = Vector(repeating: expHigh)
    var xc = x  // clamped (written with selects: pointwiseMin/Max are not inlined)
    xc.replace(with: low, where: x .< low)
    xc.replace(with: high, where: x .> high)
    let t = xc * Vector(repeating: 1.442_695_04) + magic
    let n = t - magic
    var r = xc - n * Vector(repeating: 0.693_359_375)
    r = r - n * Vector(repeating: -2.121_944_4e-4)
    var p = Vector(repeating: 1.987_569_15e-4)
    p = p * r + Vector(repeating: 1.398_199_95e-3)
    p = p * r + Vector(repeating: 8.333_451_9e-3)
    p = p * r + Vector(repeating: 4.166_579_59e-2)
    p = p * r + Vector(repeating: 1.666_666_55e-1)
    p = p * r + Vector(repeating: 5.000_000_12e-1)
    p = p * (r * r) + r + Vector(repeating: 1)
    // 2ⁿ from the integer sitting in t's low mantissa bits.
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: Vector.self)
    var y = p * scale
    y.replace(with: 0, where: x .< low)
    y.replace(with: .infinity, where: x .> high)
    return y
  }

  /// e^x for one value, computed exactly as one lane of the vector form.
  @inline(__always)
  public static func exp(_ x: Float) -> Float { exp(Vector(repeating: x))[0] }

  /// out[i] = e^(x[i]) (in place allowed).
  public static func exp(_ x: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + 8 <= count {
      store(exp(load(x + i)), out + i)
      i += 8
    }
    if i < count {
      let n = count - i
      store(exp(loadPartial(x + i, n, fill: 0)), out + i, n)
    }
  }

  /// max over x[0..<count] (count ≥ 1; NaN-free input).
  public static func max(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var m = Vector(repeating: -.infinity)
    var i = 0
    while i + 8 <= count {
      let v = load(x + i)
      m.replace(with: v, where: v .> m)
      i += 8
    }
    if i < count {
      let v = loadPartial(x + i, count - i, fill: -.infinity)
      m.replace(with: v, where: v .> m)
    }
    return horizontalMax(m)
  }

  /// x[i] = e^(x[i] − shift) for i < count; returns the sum of the new values (accumulated in
  /// eight lanes, then lanes added in a fixed order).
  public static func expShiftSum(
    _ x: UnsafeMutablePointer<Float>, count: Int, shift: Float
  ) -> Float {
    let s = Vector(repeating: shift)
    var acc = Vector(repeating: 0)
    var i = 0
    while i + 8 <= count {
      let e = exp(load(x + i) - s)
      store(e, x + i)
      acc += e
      i += 8
    }
    if i < count {
      let n = count - i
      var e = exp(loadPartial(x + i, n, fill: 0) - s)
      for lane in n..<8 { e[lane] = 0 }
      store(e, x + i, n)
      acc += e
    }
    return horizontalSum(acc)
  }

  /// Σ x[i]² over x[0..<count] (eight lanes, then lanes added in a fixed order).
  /// Σ x[i] (8 lanes, then across them).
  public static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var acc = Vector(repeating: 0)
    var i = 0
    while i + 8 <= count {
      acc += load(x + i)
      i += 8
    }
    var total = horizontalSum(acc)
    while i < count {
      total += x[i]
      i += 1
    }
    return total
  }

  /// Σ (x[i] − mean)².
  public static func sumOfSquaredDeviations(_ x: UnsafePointer<Float>, count: Int, mean: Float) -> Float {
    var acc = Vector(repeating: 0)
    let m = Vector(repeating: mean)
    var i = 0
    while i + 8 <= count {
      let d = load(x + i) - m
      acc += d * d
      i += 8
    }
    var total = horizontalSum(acc)
    while i < count {
      let d = x[i] - mean
      total += d * d
      i += 1
    }
    return total
  }

  public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var acc = Vector(repeating: 0)
    var i = 0
    while i + 8 <= count {
      let v = load(x + i)
      acc += v * v
      i += 8
    }
    if i < count {
      let v = loadPartial(x + i, count - i, fill: 0)
      acc += v * v
    }
    return horizontalSum(acc)
  }

  /// Lanes added pairwise in a fixed order (halves, then quarters).
  @inline(__always)
  static func horizontalSum(_ v: Vector) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
  }

  @inline(__always)
  static func horizontalMax(_ v: Vector) -> Float {
    var h = v.lowHalf
    h.replace(with: v.highHalf, where: v.highHalf .> h)
    var q = h.lowHalf
    q.replace(with: h.highHalf, where: h.highHalf .> q)
    return q[1] > q[0] ? q[1] : q[0]
  }

  // MARK: loads and stores

  @inline(__always)
  static func load(_ p: UnsafePointer<Float>) -> Vector {
    UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
  }

  @inline(__always)
  static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
  }

  @inline(__always)
  static func loadPartial(_ p: UnsafePointer<Float>, _ n: Int, fill: Float) -> Vector {
    var v = Vector(repeating: fill)
    for lane in 0..<n { v[lane] = p[lane] }
    return v
  }

  @inline(__always)
  static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    for lane in 0..<n { p[lane] = v[lane] }
  }
}

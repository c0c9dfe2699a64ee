import Foundation

/// Pillow's resampling filters, with the numbers Pillow (and `preprocessor_config.json`'s
/// `"resample"`) uses for them.
public enum ResampleFilter: Int, Sendable, CaseIterable, Codable {
  case nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

  public var name: String {
    switch self {
    case .nearest: return "nearest"
    case .lanczos: return "lanczos"
    case .bilinear: return "bilinear"
    case .bicubic: return "bicubic"
    case .box: return "box"
    case .hamming: return "hamming"
    }
  }

  public init?(name: String) {
    guard let f = ResampleFilter.allCases.first(where: { $0.name == name.lowercased() }) else {
      return nil
    }
    self = f
  }
}

extension RGBImage {
  /// `Image.resize((width, height), resample=filter)` of an RGB Pillow image, bit for bit (alpha,
  /// if any, is dropped first: Hugging Face processors convert to RGB before resizing).
  ///
  /// Convolution filters follow Pillow's Resample.c: separable, horizontal pass first (only over
  /// the rows the vertical pass reads) then vertical, or the other way round when Pillow 13 does
  /// (`pillowResizesVerticallyFirst`); the filter's support is widened by the
  /// downscale factor; each output's weights are normalised to sum 1 in double precision, then
  /// turned into 22-bit fixed point (rounded half away from zero); sums start at ½ and are
  /// clipped to 0...255 after each pass. NEAREST is Pillow's affine scale: source position
  /// (i + ½)·(in/out), accumulated, truncated.
  public func resized(width outWidth: Int, height outHeight: Int, filter: ResampleFilter)
    -> RGBImage
  {
    precondition(outWidth > 0 && outHeight > 0, "resize to an empty image")
    if outWidth == width && outHeight == height { return droppingAlpha() }
    precondition(width > 0 && height > 0, "resize of an empty image")
    if filter == .nearest { return nearest(outWidth, outHeight) }

    let horizontal = PillowKernel(inSize: width, outSize: outWidth, filter: filter)
    let vertical = PillowKernel(inSize: height, outSize: outHeight, filter: filter)
    if Self.pillowResizesVerticallyFirst(
      width: width, height: height, outWidth: outWidth, outHeight: outHeight)
    {
      let tall = Self.verticalPass(
        pixels, width: width, rowOffset: 0, outHeight: outHeight, kernel: vertical)
      let out = Self.horizontalPass(tall, width: width, rows: 0..<outHeight, kernel: horizontal)
      return RGBImage(width: outWidth, height: outHeight, pixels: out)
    }
    var src = pixels
    var srcWidth = width
    var rowOffset = 0  // the source row that row 0 of `src` is
    if outWidth != width {
      // Only the rows the vertical pass will read.
      let first = vertical.bounds.first!.start
      let last = vertical.bounds.last!.start + vertical.bounds.last!.count
      src = Self.horizontalPass(pixels, width: width, rows: first..<last, kernel: horizontal)
      srcWidth = outWidth
      rowOffset = first
    }
    if outHeight != height {
      src = Self.verticalPass(
        src, width: srcWidth, rowOffset: rowOffset, outHeight: outHeight, kernel: vertical)
    }
    return RGBImage(width: outWidth, height: outHeight, pixels: src)
  }

  /// The pass order of Pillow 13 (python-pillow/Pillow#9549, "If height is scaled down
  /// significantly more than width, resize vertically first"). The two orders round between the
  /// passes differently, so the order is part of the result. Pillow 13.0.0's choice, measured
  /// against it on 1 639 size pairs with BICUBIC, BILINEAR and LANCZOS (every pair agreed; the
  /// tests keep 70 of them, around the boundary): vertical first exactly when the height shrinks,
  /// and by more than twice as many pixels as the width does: h − H > 2·(w − W).
  /// Pillow < 13 always went horizontal first.
  static func pillowResizesVerticallyFirst(
    width w: Int, height h: Int, outWidth W: Int, outHeight H: Int
  ) -> Bool {
    W != w && H < h && h - H > 2 * (w - W)
  }

  private static let precisionBits = 32 - 8 - 2

  @inline(__always)
  private static func clip8(_ v: Int32) -> UInt8 {
    let s = v >> Int32(precisionBits)  // arithmetic shift, as in C
    return s < 0 ? 0 : s > 255 ? 255 : UInt8(s)
  }

  private static func horizontalPass(
    _ src: [UInt8], width: Int, rows: Range<Int>, kernel: PillowKernel
  ) -> [UInt8] {
    let outWidth = kernel.bounds.count
    var out = [UInt8](repeating: 0, count: rows.count * outWidth * 3)
    let half = Int32(1) << Int32(precisionBits - 1)
    src.withUnsafeBufferPointer { s in
      out.withUnsafeMutableBufferPointer { o in
        kernel.fixed.withUnsafeBufferPointer { k in
          for (r, y) in rows.enumerated() {
            let inRow = s.baseAddress! + y * width * 3
            let outRow = o.baseAddress! + r * outWidth * 3
            for xx in 0..<outWidth {
              let b = kernel.bounds[xx]
              let kx = k.baseAddress! + xx * kernel.size
              var s0 = half
              var s1 = half
              var s2 = half
              for x in 0..<b.count {
                let p = inRow + (b.start + x) * 3
                let w = kx[x]
                s0 = s0 &+ Int32(p[0]) &* w
                s1 = s1 &+ Int32(p[1]) &* w
                s2 = s2 &+ Int32(p[2]) &* w
              }
              outRow[xx * 3] = clip8(s0)
              outRow[xx * 3 + 1] = clip8(s1)
              outRow[xx * 3 + 2] = clip8(s2)
            }
          }
        }
      }
    }
    return out
  }

  private static func verticalPass(
    _ src: [UInt8], width: Int, rowOffset: Int, outHeight: Int, kernel: PillowKernel
  ) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: outHeight * width * 3)
    let half = Int32(1) << Int32(precisionBits - 1)
    let rowBytes = width * 3
    src.withUnsafeBufferPointer { s in
      out.withUnsafeMutableBufferPointer { o in
        kernel.fixed.withUnsafeBufferPointer { k in
          // Accumulate a whole output row at once, one source row at a time (the same sums
          // in the same order as Pillow's per-pixel loop; integers, so order is moot anyway).
          var acc = [Int32](repeating: 0, count: rowBytes)
          acc.withUnsafeMutableBufferPointer { a in
            for yy in 0..<outHeight {
              let b = kernel.bounds[yy]
              let ky = k.baseAddress! + yy * kernel.size
              for i in 0..<rowBytes { a[i] = half }
              for y in 0..<b.count {
                let row = s.baseAddress! + (b.start + y - rowOffset) * rowBytes
                let w = ky[y]
                for i in 0..<rowBytes { a[i] = a[i] &+ Int32(row[i]) &* w }
              }
              let outRow = o.baseAddress! + yy * rowBytes
              for i in 0..<rowBytes { outRow[i] = clip8(a[i]) }
            }
          }
        }
      }
    }
    return out
  }

  /// Pillow's `ImagingScaleAffine` (what `resize(..., NEAREST)` runs).
  private func nearest(_ outWidth: Int, _ outHeight: Int) -> RGBImage {
    let a0 = Double(Float(width)) / Double(outWidth)
    let a4 = Double(Float(height)) / Double(outHeight)
    @inline(__always) func coord(_ v: Double) -> Int { v < 0 ? -1 : Int(v) }
    var xin = [Int](repeating: -1, count: outWidth)
    var xo = a0 * 0.5
    for x in 0..<outWidth {
      let xi = coord(xo)
      if xi >= 0 && xi < width { xin[x] = xi }
      xo += a0
    }
    var out = [UInt8](repeating: 0, count: outWidth * outHeight * 3)  // Pillow fills with 0
    var yo = a4 * 0.5
    for y in 0..<outHeight {
      let yi = coord(yo)
      if yi >= 0 && yi < height {
        for x in 0..<outWidth where xin[x] >= 0 {
          let s = (yi * width + xin[x]) * 3
          let d = (y * outWidth + x) * 3
          out[d] = pixels[s]
          out[d + 1] = pixels[s + 1]
          out[d + 2] = pixels[s + 2]
        }
      }
      yo += a4
    }
    return RGBImage(width: outWidth, height: outHeight, pixels: out)
  }
}

/// One axis of Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
struct PillowKernel {
  /// Per output position: the first input index and how many inputs it reads.
  var bounds: [(start: Int, count: Int)]
  /// Row-major [outSize × size] fixed-point weights (22 fractional bits); unused tails are 0.
  var fixed: [Int32]
  /// Row-major [outSize × size] normalised double weights, before the fixed-point step.
  var weights: [Double]
  var size: Int

  init(inSize: Int, outSize: Int, filter: ResampleFilter) {
    let support0: Double
    let f: (Double) -> Double
    switch filter {
    case .box: (f, support0) = (PillowKernel.box, 0.5)
    case .bilinear: (f, support0) = (PillowKernel.bilinear, 1.0)
    case .hamming: (f, support0) = (PillowKernel.hamming, 1.0)
    case .bicubic: (f, support0) = (PillowKernel.bicubic, 2.0)
    case .lanczos: (f, support0) = (PillowKernel.lanczos, 3.0)
    case .nearest: preconditionFailure("nearest is not a convolution")
    }
    // box = (0, inSize) as floats: in1 - in0 is computed in float, then widened.
    let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
    let filterScale = max(scale, 1.0)
    let support = support0 * filterScale
    let ksize = Int(ceil(support)) * 2 + 1
    var bounds: [(Int, Int)] = []
    bounds.reserveCapacity(outSize)
    var kk = [Double](repeating: 0, count: outSize * ksize)
    let ss = 1.0 / filterScale
    for xx in 0..<outSize {
      let center = 0.0 + (Double(xx) + 0.5) * scale
      var ww = 0.0
      var xmin = Int(center - support + 0.5)  // C's (int) truncation
      if xmin < 0 { xmin = 0 }
      var xmax = Int(center + support + 0.5)
      if xmax > inSize { xmax = inSize }
      xmax -= xmin
      for x in 0..<max(xmax, 0) {
        let w = f((Double(x + xmin) - center + 0.5) * ss)
        kk[xx * ksize + x] = w
        ww += w
      }
      for x in 0..<max(xmax, 0) where ww != 0.0 {
        kk[xx * ksize + x] /= ww
      }
      bounds.append((xmin, xmax))
    }
    self.bounds = bounds
    self.size = ksize
    self.weights = kk
    let one = Double(1 << (32 - 8 - 2))
    self.fixed = kk.map { $0 < 0 ? Int32(-0.5 + $0 * one) : Int32(0.5 + $0 * one) }
  }

  static func box(_ x: Double) -> Double { x > -0.5 && x <= 0.5 ? 1.0 : 0.0 }

  static func bilinear(_ x: Double) -> Double {
    let x = abs(x)
    return x < 1.0 ? 1.0 - x : 0.0
  }

  static func hamming(_ x: Double) -> Double {
    var x = abs(x)
    if x == 0.0 { return 1.0 }
    if x >= 1.0 { return 0.0 }
    x = x * Double.pi
    // 0.54f and 0.46f are float constants in Pillow.
    return sin(x) / x * (Double(Float(0.54)) + Double(Float(0.46)) * cos(x))
  }

  static func bicubic(_ x: Double) -> Double {
    let a = -0.5
    let x = abs(x)
    if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
    if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
    return 0.0
  }

  static func sinc(_ x: Double) -> Double {
    if x == 0.0 { return 1.0 }
    let x = x * Double.pi
    return sin(x) / x
  }

  static func lanczos(_ x: Double) -> Double {
    (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0
  }
}

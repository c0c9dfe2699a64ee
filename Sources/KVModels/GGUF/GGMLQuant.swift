import Dispatch
import Foundation

/// A ggml tensor element type, with the numbering GGUF files use.
///
/// Every type ggml defines is listed so that a file holding, say, a Q5_K tensor still opens
/// (its metadata and other tensors are usable) and the error names the type; only the types in
/// `GGMLType.dequantizable` can be turned into floats.
public enum GGMLType: UInt32, CaseIterable, Sendable {
  case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3
  // 4 and 5 (Q4_2, Q4_3) were removed from ggml long ago.
  case q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
  case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
  case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22
  case iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30
  // 31-33 and 36-38 were the removed repacked Q4_0/IQ4_NL variants.
  case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

  /// The types kvlab dequantizes, exactly as ggml (and the `gguf` Python package) define them.
  public static let dequantizable: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q4_K, .q6_K]

  public var isDequantizable: Bool { GGMLType.dequantizable.contains(self) }

  /// Elements per block (1 for plain scalar types). A tensor's row length (ne0) must be a
  /// multiple of it.
  public var blockSize: Int {
    switch self {
    case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: return 32
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs, .iq1_s, .iq3_s,
      .iq2_s, .iq4_xs, .iq1_m, .tq1_0, .tq2_0:
      return 256
    }
  }

  /// Bytes one block occupies in the file (ggml's `type_size`).
  public var bytesPerBlock: Int {
    let qk = 256  // QK_K
    switch self {
    case .f32: return 4
    case .f16, .bf16: return 2
    case .q4_0: return 2 + 16
    case .q4_1: return 2 + 2 + 16
    case .q5_0: return 2 + 4 + 16
    case .q5_1: return 2 + 2 + 4 + 16
    case .q8_0: return 2 + 32
    case .q8_1: return 4 + 4 + 32
    case .q2_K: return 2 + 2 + qk / 16 + qk / 4
    case .q3_K: return 2 + qk / 4 + qk / 8 + 12
    case .q4_K: return 2 + 2 + qk / 2 + 12
    case .q5_K: return 2 + 2 + qk / 2 + qk / 8 + 12
    case .q6_K: return 2 + qk / 2 + qk / 4 + qk / 16
    case .q8_K: return 4 + qk + qk / 8
    case .iq2_xxs: return 2 + qk / 4
    case .iq2_xs: return 2 + qk / 4 + qk / 32
    case .iq3_xxs: return 2 + qk / 4 + qk / 8
    case .iq1_s: return 2 + qk / 8 + qk / 16
    case .iq4_nl: return 2 + 16
    case .iq3_s: return 2 + qk / 4 + qk / 8 + qk / 32 + 4
    case .iq2_s: return 2 + qk / 4 + qk / 16
    case .iq4_xs: return 2 + 2 + qk / 2 + qk / 64
    case .i8: return 1
    case .i16: return 2
    case .i32: return 4
    case .i64, .f64: return 8
    case .iq1_m: return qk / 8 + qk / 16 + qk / 32
    case .tq1_0: return 2 + 4 * 13
    case .tq2_0: return 2 + 64
    case .mxfp4: return 1 + 16
    }
  }

  /// ggml's spelling ("Q4_K", "BF16"), used in messages.
  public var name: String {
    String(describing: self).uppercased()
  }
}

/// Dequantization kernels. Each follows ggml's `dequantize_row_*` definition operation by
/// operation (same products, same order, no fused multiply-add), so the results are bitwise equal
/// to ggml's reference C and to `gguf.quants.dequantize` in Python.
public enum GGMLQuant {
  /// IEEE binary16 → binary32, exact for every input: subnormals, ±0, ±inf, and NaN (payload kept,
  /// the same bits numpy produces). Bit manipulation rather than `Float(Float16)`, which on x86
  /// without F16C goes through a runtime library call.
  @inline(__always)
  public static func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1F
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F {  // inf / NaN: all-ones exponent, mantissa shifted into place
      return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent != 0 {  // normal: rebias 15 → 127
      return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
    // ±0 and subnormals: value = mantissa · 2⁻²⁴, exactly representable as a Float.
    let magnitude = Float(mantissa) * 0x1p-24
    return sign != 0 ? -magnitude : magnitude
  }

  /// bfloat16 is the upper half of a binary32.
  @inline(__always)
  public static func bf16ToFloat(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
  }

  /// Dequantizes `blockCount` consecutive blocks of `type` at `src` into
  /// `blockCount * type.blockSize` floats at `dst`. The caller guarantees both ranges are valid.
  /// Returns false (writing nothing) for a type that is not in `GGMLType.dequantizable`.
  @discardableResult
  public static func dequantize(
    _ type: GGMLType, from src: UnsafeRawPointer, to dst: UnsafeMutablePointer<Float>,
    blockCount: Int
  ) -> Bool {
    switch type {
    case .f32:  // a raw copy: `general.alignment` may be 1 or 2, so src need not be 4-aligned
      UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * blockCount)
    // The file is little-endian and so is every platform kvlab runs on; loads are unaligned
    // because nothing forces a block's fields onto natural boundaries (18-, 34-, 210-byte blocks).
    case .f16:
      for i in 0..<blockCount {
        dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
      }
    case .bf16:
      for i in 0..<blockCount {
        dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
      }
    case .q8_0: q8_0(src, dst, blockCount)
    case .q4_0: q4_0(src, dst, blockCount)
    case .q4_1: q4_1(src, dst, blockCount)
    case .q4_K: q4_K(src, dst, blockCount)
    case .q6_K: q6_K(src, dst, blockCount)
    default: return false
    }
    return true
  }

  /// Like `dequantize`, but splits large ranges over the machine's cores. Work per chunk is
  /// large (≥ 64 Ki elements) so that small tensors stay on the calling thread.
  @discardableResult
  public static func dequantizeParallel(
    _ type: GGMLType, from src: UnsafeRawPointer, to dst: UnsafeMutablePointer<Float>,
    blockCount: Int
  ) -> Bool {
    guard type.isDequantizable else { return false }
    let minBlocksPerChunk = max(1, 65_536 / type.blockSize)
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let chunks = min(cores * 2, blockCount / minBlocksPerChunk)
    if chunks <= 1 {
      return dequantize(type, from: src, to: dst, blockCount: blockCount)
    }
    let perChunk = (blockCount + chunks - 1) / chunks
    // Sendable wrappers: the chunks write disjoint ranges of dst.
    let srcBits = UInt(bitPattern: src)
    let dstBits = UInt(bitPattern: dst)
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
      let first = c * perChunk
      let n = min(perChunk, blockCount - first)
      guard n > 0,
        let s = UnsafeRawPointer(bitPattern: srcBits),
        let d = UnsafeMutablePointer<Float>(bitPattern: dstBits)
      else { return }
      dequantize(
        type, from: s + first * type.bytesPerBlock, to: d + first * type.blockSize, blockCount: n)
    }
    return true
  }

  // MARK: - Kernels (one block layout each; see ggml-common.h)

  /// block_q8_0: f16 d, int8 qs[32]; x = qs · d.
  private static func q8_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for b in 0..<n {
      let block = src + b * 34
      let d = halfToFloat(block.loadUnaligned(as: UInt16.self))
      let qs = (block + 2).assumingMemoryBound(to: Int8.self)
      let y = dst + b * 32
      for j in 0..<32 { y[j] = Float(qs[j]) * d }
    }
  }

  /// block_q4_0: f16 d, uint8 qs[16]; x = (nibble − 8) · d; low nibbles are elements 0..15,
  /// high nibbles 16..31.
  private static func q4_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for b in 0..<n {
      let block = src + b * 18
      let d = halfToFloat(block.loadUnaligned(as: UInt16.self))
      let qs = (block + 2).assumingMemoryBound(to: UInt8.self)
      let y = dst + b * 32
      for j in 0..<16 {
        let q = qs[j]
        y[j] = Float(Int32(q & 0x0F) - 8) * d
        y[j + 16] = Float(Int32(q >> 4) - 8) * d
      }
    }
  }

  /// block_q4_1: f16 d, f16 m, uint8 qs[16]; x = nibble · d + m (nibbles as in q4_0).
  private static func q4_1(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for b in 0..<n {
      let block = src + b * 20
      let d = halfToFloat(block.loadUnaligned(as: UInt16.self))
      let m = halfToFloat(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
      let qs = (block + 4).assumingMemoryBound(to: UInt8.self)
      let y = dst + b * 32
      for j in 0..<16 {
        let q = qs[j]
        y[j] = Float(q & 0x0F) * d + m
        y[j + 16] = Float(q >> 4) * d + m
      }
    }
  }

  /// The 6-bit scale and min of sub-block `j` (0..<8) from q4_K's 12 packed bytes
  /// (ggml's get_scale_min_k4): bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 the
  /// mins 0-3; sub-blocks 4-7 take their low 4 bits from bytes 8-11 and their top 2 bits from
  /// the spare top bits of bytes 0-7.
  @inline(__always)
  private static func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
    if j < 4 {
      return (q[j] & 63, q[j + 4] & 63)
    }
    return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
  }

  /// block_q4_K (256 elements): f16 d, f16 dmin, uint8 scales[12], uint8 qs[128].
  /// Each 64-element half-chunk uses 32 bytes of qs: low nibbles → sub-block 2i, high → 2i+1;
  /// x = (d·scale) · nibble − (dmin·min).
  private static func q4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for b in 0..<n {
      let block = src + b * 144
      let d = halfToFloat(block.loadUnaligned(as: UInt16.self))
      let dmin = halfToFloat(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
      let scales = (block + 4).assumingMemoryBound(to: UInt8.self)
      var qs = (block + 16).assumingMemoryBound(to: UInt8.self)
      var y = dst + b * 256
      for pair in 0..<4 {
        let (sc1, m1) = scaleMinK4(2 * pair, scales)
        let (sc2, m2) = scaleMinK4(2 * pair + 1, scales)
        let d1 = d * Float(sc1), min1 = dmin * Float(m1)
        let d2 = d * Float(sc2), min2 = dmin * Float(m2)
        for l in 0..<32 {
          let q = qs[l]
          y[l] = d1 * Float(q & 0x0F) - min1
          y[l + 32] = d2 * Float(q >> 4) - min2
        }
        qs += 32
        y += 64
      }
    }
  }

  /// block_q6_K (256 elements): uint8 ql[128] (low 4 bits), uint8 qh[64] (high 2 bits),
  /// int8 scales[16] (one per 16 elements), f16 d last. Each 128-element half uses 64 bytes of
  /// ql, 32 of qh and 8 scales; x = (d·scale) · (q − 32).
  private static func q6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for b in 0..<n {
      let block = src + b * 210
      let d = halfToFloat(block.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
      var ql = block.assumingMemoryBound(to: UInt8.self)
      var qh = (block + 128).assumingMemoryBound(to: UInt8.self)
      var sc = (block + 192).assumingMemoryBound(to: Int8.self)
      var y = dst + b * 256
      for _ in 0..<2 {
        for l in 0..<32 {
          let i = l / 16
          let h = qh[l]
          let q1 = Int32((ql[l] & 0x0F) | ((h & 3) << 4)) - 32
          let q2 = Int32((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) - 32
          let q3 = Int32((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32
          let q4 = Int32((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32
          y[l] = d * Float(sc[i]) * Float(q1)
          y[l + 32] = d * Float(sc[i + 2]) * Float(q2)
          y[l + 64] = d * Float(sc[i + 4]) * Float(q3)
          y[l + 96] = d * Float(sc[i + 6]) * Float(q4)
        }
        y += 128
        ql += 64
        qh += 32
        sc += 8
      }
    }
  }
}

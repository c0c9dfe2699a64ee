import Foundation
import KVTensor

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

  /// The types kvlab dequantizes, exactly as ggml (and the `gguf` Python package) define them:
  /// those a weight can stay in (`WeightFormat`).
  public static let dequantizable: [GGMLType] = WeightFormat.allCases.map(\.ggml)

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

extension WeightFormat {
  /// The ggml type of this format.
  public var ggml: GGMLType {
    switch self {
    case .f32: return .f32
    case .f16: return .f16
    case .bf16: return .bf16
    case .q8_0: return .q8_0
    case .q4_0: return .q4_0
    case .q4_1: return .q4_1
    case .q4_K: return .q4_K
    case .q6_K: return .q6_K
    }
  }

  /// The format a ggml type stays in, or nil for a type kvlab cannot read.
  public init?(ggml: GGMLType) {
    guard let format = WeightFormat.allCases.first(where: { $0.ggml == ggml }) else { return nil }
    self = format
  }
}

/// Dequantization of whole tensors through the weight kernels' portable forms (CKVKernels),
/// which follow ggml's `dequantize_row_*` operation by operation (same products, same order, no
/// fused multiply-add), so the results are bitwise equal to ggml's reference C and to
/// `gguf.quants.dequantize` in Python.
public enum GGMLQuant {
  /// Dequantizes `blockCount` consecutive blocks of `type` at `src` into
  /// `blockCount * type.blockSize` floats at `dst`. The caller guarantees both ranges are valid.
  /// Returns false (writing nothing) for a type that is not in `GGMLType.dequantizable`.
  @discardableResult
  public static func dequantize(
    _ type: GGMLType, from src: UnsafeRawPointer, to dst: UnsafeMutablePointer<Float>,
    blockCount: Int
  ) -> Bool {
    guard let format = WeightFormat(ggml: type) else { return false }
    format.dequantize(src, elements: blockCount * type.blockSize, into: dst)
    return true
  }

  /// Like `dequantize`, but splits large ranges over the engine's threads. Work per chunk is
  /// large (≥ 64 Ki elements) so that small tensors stay on the calling thread.
  @discardableResult
  public static func dequantizeParallel(
    _ type: GGMLType, from src: UnsafeRawPointer, to dst: UnsafeMutablePointer<Float>,
    blockCount: Int
  ) -> Bool {
    guard let format = WeightFormat(ggml: type) else { return false }
    Parallel.rows(blockCount, grain: max(1, 65_536 / type.blockSize)) { blocks in
      format.dequantize(
        src + blocks.lowerBound * type.bytesPerBlock, elements: blocks.count * type.blockSize,
        into: dst + blocks.lowerBound * type.blockSize)
    }
    return true
  }
}

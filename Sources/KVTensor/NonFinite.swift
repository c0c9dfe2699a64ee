/// The search for stored floats that are not finite numbers (an infinity or a NaN in one
/// weight turns every logit after it into NaN): a value whose exponent bits are all set. One
/// pass over the bytes, shared by the GGUF and safetensors load-time scans.
public enum NonFinite {
  /// How the floats are stored.
  public enum Storage: Sendable {
    case f32, f16, bf16

    var bytes: Int { self == .f32 ? 4 : 2 }
    /// The exponent bits: all set in an infinity or a NaN, never in a finite value.
    var exponent: UInt32 {
      switch self {
      case .f32: return 0x7F80_0000
      case .f16: return 0x7C00
      case .bf16: return 0x7F80
      }
    }
  }

  /// Elements tested branch-free before asking whether one of them failed: the test of a chunk
  /// vectorizes, and only a chunk that holds a bad value is searched element by element.
  static let chunk = 4096

  /// The index of the first of the `count` values at `p` (no alignment needed) that is not
  /// finite; nil when every one is.
  public static func firstIndex(in p: UnsafeRawPointer, count: Int, storage: Storage) -> Int? {
    var start = 0
    while start < count {
      let n = min(chunk, count - start)
      let chunkStart = p + start * storage.bytes
      if chunkHasNonFinite(chunkStart, count: n, storage: storage) {
        for i in 0..<n where !isFinite(chunkStart, i, storage) { return start + i }
      }
      start += n
    }
    return nil
  }

  /// The first of `blocks` blocks of `stride` bytes at `p` whose float16 at one of `offsets`
  /// (bytes within the block: a quantized block's scales) is not finite; nil when none.
  public static func firstBlock(in p: UnsafeRawPointer, blocks: Int, stride: Int, offsets: [Int])
    -> Int?
  {
    for b in 0..<blocks {
      for o in offsets where !isFinite(p + b * stride + o, 0, .f16) { return b }
    }
    return nil
  }

  @inline(__always)
  static func isFinite(_ p: UnsafeRawPointer, _ i: Int, _ storage: Storage) -> Bool {
    let bits =
      storage == .f32
      ? p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
      : UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
    return bits & storage.exponent != storage.exponent
  }

  private static func chunkHasNonFinite(_ p: UnsafeRawPointer, count n: Int, storage: Storage)
    -> Bool
  {
    switch storage {
    case .f32:
      var any: UInt32 = 0
      for i in 0..<n {
        let e = p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self) & 0x7F80_0000
        any |= e == 0x7F80_0000 ? 1 : 0
      }
      return any != 0
    case .f16, .bf16:
      let mask = UInt16(truncatingIfNeeded: storage.exponent)
      var any: UInt16 = 0
      for i in 0..<n {
        let e = p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self) & mask
        any |= e == mask ? 1 : 0
      }
      return any != 0
    }
  }
}

import KVTensor

/// The load-time scan for weights that are not finite numbers (an infinity or a NaN in a
/// weight, or in a quantized block's scale, turns every logit after it into NaN).
extension GGUFFile {
  /// Where each block of `type` keeps float16 values (scales and minimums: the only floats a
  /// quantized block holds), as byte offsets within the block; nil for a type stored whole as
  /// floats (checked element by element) or one whose floats are not checked.
  static func halfOffsets(_ type: GGMLType) -> [Int]? {
    switch type {
    case .q4_0, .q5_0, .q8_0: return [0]
    case .q4_1, .q5_1: return [0, 2]
    case .q4_K, .q5_K: return [0, 2]  // d, dmin
    case .q6_K: return [208]  // d after ql, qh, scales
    case .q2_K: return [80, 82]  // d, dmin after scales and qs
    case .q3_K: return [108]  // d after hmask, qs, scales
    default: return nil
    }
  }

  /// The first tensor holding a value that is not finite (its name quoted for a message), with
  /// the element (or block) where;
  /// nil when every float of every tensor (F32, F16, BF16, and the scales of the quantized
  /// types kvlab runs) is finite. Reads every byte of those tensors once.
  public func firstNonFinite() throws -> (tensor: String, index: Int, kind: String)? {
    for name in tensorNames {
      guard let info = tensors[name], info.byteCount > 0 else { continue }
      let type = info.type
      guard [.f32, .f16, .bf16].contains(type) || Self.halfOffsets(type) != nil else { continue }
      let p = try tensorData(name)
      let storage: NonFinite.Storage? =
        type == .f32 ? .f32 : type == .f16 ? .f16 : type == .bf16 ? .bf16 : nil
      if let storage {
        if let i = NonFinite.firstIndex(in: p, count: info.elementCount, storage: storage) {
          return (Self.quoted(name), i, "element")
        }
      } else if let b = NonFinite.firstBlock(
        in: p, blocks: info.byteCount / type.bytesPerBlock, stride: type.bytesPerBlock,
        offsets: Self.halfOffsets(type)!)
      {
        return (Self.quoted(name), b, "block scale")
      }
    }
    return nil
  }
}

// GGUF metadata values: the typed value enum and its one-line rendering.

/// One metadata value. Arrays hold their elements as values of the declared element type.
public enum GGUFValue: Sendable, Equatable {
  case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
  case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool)
  case string(String), array([GGUFValue])

  /// Any integer type, when it fits in an Int.
  public var int: Int? {
    switch self {
    case .uint8(let v): return Int(v)
    case .int8(let v): return Int(v)
    case .uint16(let v): return Int(v)
    case .int16(let v): return Int(v)
    case .uint32(let v): return Int(v)
    case .int32(let v): return Int(v)
    case .uint64(let v): return Int(exactly: v)
    case .int64(let v): return Int(v)
    default: return nil
    }
  }

  /// Either float type, or any integer type converted (a file may store `rope.freq_base` as an
  /// integer).
  public var double: Double? {
    switch self {
    case .float32(let v): return Double(v)
    case .float64(let v): return v
    case .uint64(let v): return Double(v)
    default: return int.map(Double.init)
    }
  }

  public var bool: Bool? {
    if case .bool(let v) = self { return v }
    return nil
  }

  public var string: String? {
    if case .string(let v) = self { return v }
    return nil
  }

  public var array: [GGUFValue]? {
    if case .array(let v) = self { return v }
    return nil
  }

  /// The elements, when this is an array of strings (builds a new array: call once and keep it).
  public var stringArray: [String]? { mapArray { $0.string } }
  /// The elements, when this is an array of integers that fit in Int.
  public var intArray: [Int]? { mapArray { $0.int } }
  /// The elements, when this is an array of numbers (converted to Float).
  public var floatArray: [Float]? { mapArray { $0.double.map(Float.init) } }

  private func mapArray<T>(_ transform: (GGUFValue) -> T?) -> [T]? {
    guard case .array(let values) = self else { return nil }
    var out: [T] = []
    out.reserveCapacity(values.count)
    for v in values {
      guard let t = transform(v) else { return nil }
      out.append(t)
    }
    return out
  }

  /// GGUF's name for the value type ("uint32", "array[string]").
  public var typeName: String {
    switch self {
    case .uint8: return "uint8"
    case .int8: return "int8"
    case .uint16: return "uint16"
    case .int16: return "int16"
    case .uint32: return "uint32"
    case .int32: return "int32"
    case .uint64: return "uint64"
    case .int64: return "int64"
    case .float32: return "float32"
    case .float64: return "float64"
    case .bool: return "bool"
    case .string: return "string"
    case .array(let v): return "array[\(v.first?.typeName ?? "")]"
    }
  }
}

extension GGUFValue: CustomStringConvertible {
  /// A short, one-line rendering (long arrays are elided), for listings.
  public var description: String {
    switch self {
    case .uint8(let v): return String(v)
    case .int8(let v): return String(v)
    case .uint16(let v): return String(v)
    case .int16(let v): return String(v)
    case .uint32(let v): return String(v)
    case .int32(let v): return String(v)
    case .uint64(let v): return String(v)
    case .int64(let v): return String(v)
    case .float32(let v): return String(v)
    case .float64(let v): return String(v)
    case .bool(let v): return String(v)
    case .string(let v): return GGUFFile.quoted(v, limit: 60)
    case .array(let v):
      let shown = v.prefix(6).map(\.description).joined(separator: ", ")
      return v.count > 6 ? "[\(shown), … (\(v.count) items)]" : "[\(shown)]"
    }
  }
}

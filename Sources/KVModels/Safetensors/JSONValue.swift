import Foundation

/// A parsed JSON value that keeps integers apart from floats and booleans apart from numbers
/// (which `JSONSerialization`'s NSNumber does not do portably), for validating headers and
/// configuration files field by field with precise messages.
public enum JSONValue: Equatable, Sendable, Codable {
  case null
  case bool(Bool)
  /// An integer literal that fits in Int64.
  case int(Int64)
  /// Any other number.
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  public init(from decoder: Decoder) throws {
    if var array = try? decoder.unkeyedContainer() {
      var out: [JSONValue] = []
      if let n = array.count { out.reserveCapacity(n) }
      while !array.isAtEnd { out.append(try array.decode(JSONValue.self)) }
      self = .array(out)
      return
    }
    if let object = try? decoder.container(keyedBy: Key.self) {
      var out: [String: JSONValue] = [:]
      for key in object.allKeys {
        out[key.stringValue] = try object.decode(JSONValue.self, forKey: key)
      }
      self = .object(out)
      return
    }
    let single = try decoder.singleValueContainer()
    if single.decodeNil() {
      self = .null
    } else if let b = try? single.decode(Bool.self) {
      self = .bool(b)
    } else if let i = try? single.decode(Int64.self) {
      self = .int(i)
    } else if let d = try? single.decode(Double.self) {
      self = .double(d)
    } else {
      self = .string(try single.decode(String.self))
    }
  }

  public func encode(to encoder: Encoder) throws {
    switch self {
    case .null:
      var c = encoder.singleValueContainer()
      try c.encodeNil()
    case .bool(let b):
      var c = encoder.singleValueContainer()
      try c.encode(b)
    case .int(let i):
      var c = encoder.singleValueContainer()
      try c.encode(i)
    case .double(let d):
      var c = encoder.singleValueContainer()
      try c.encode(d)
    case .string(let s):
      var c = encoder.singleValueContainer()
      try c.encode(s)
    case .array(let a):
      var c = encoder.unkeyedContainer()
      for v in a { try c.encode(v) }
    case .object(let o):
      var c = encoder.container(keyedBy: Key.self)
      for (k, v) in o { try c.encode(v, forKey: Key(stringValue: k)) }
    }
  }

  /// Decodes this value as `T` (e.g. a config struct), by way of its JSON text.
  public func decode<T: Decodable>(_ type: T.Type) throws -> T {
    try JSONDecoder().decode(T.self, from: JSONEncoder().encode(self))
  }

  /// Parses a JSON document (any top-level value); a key given twice keeps its last value, as
  /// in Python. Throws `JSONParseError` (with line, column and key).
  public static func parse(_ data: Data) throws -> JSONValue {
    try JSONReader.parse(data)
  }

  public var object: [String: JSONValue]? {
    if case .object(let o) = self { return o }
    return nil
  }

  public var array: [JSONValue]? {
    if case .array(let a) = self { return a }
    return nil
  }

  public var string: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  public var bool: Bool? {
    if case .bool(let b) = self { return b }
    return nil
  }

  /// An integer, or a float with an integral value that fits.
  public var int: Int? {
    switch self {
    case .int(let i): return Int(exactly: i)
    case .double(let d): return Int(exactly: d)
    default: return nil
    }
  }

  /// Any number.
  public var double: Double? {
    switch self {
    case .int(let i): return Double(i)
    case .double(let d): return d
    default: return nil
    }
  }

  public var isNull: Bool { self == .null }

  /// How the value reads in a one-line message (long ones cut).
  public var brief: String {
    let s: String
    switch self {
    case .null: s = "null"
    case .bool(let b): s = String(b)
    case .int(let i): s = String(i)
    case .double(let d): s = String(d)
    case .string(let t): s = "\"\(t)\""
    case .array(let a): s = "[" + a.map(\.brief).joined(separator: ", ") + "]"
    case .object(let o):
      s = "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!.brief)" }.joined(separator: ", ") + "}"
    }
    return s.count > 60 ? String(s.prefix(57)) + "..." : s
  }
}

extension String {
  /// This string as a JSON string literal, as Python's `json.dumps(s, ensure_ascii=False)`
  /// writes it: `"`, `\` and the control characters escaped (`\n`, `\r`, `\t`, `\b`, `\f`,
  /// the rest as `\u00XX`), everything else as is. Shared by every JSON kvlab writes by hand
  /// (notebooks, the synthetic datasets' samples.jsonl).
  public var jsonQuoted: String {
    var out = "\""
    for u in unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
      default: out.unicodeScalars.append(u)
      }
    }
    return out + "\""
  }
}

import Foundation
import KVModels

/// A JSON value as a notebook file holds it (`==` ignores the order of an object's keys). Numbers keep the text they were written with, so
/// reading and writing a file never changes a number in metadata the REPL does not know.
public enum JSONValue: Equatable, Sendable {
  case null
  case bool(Bool)
  /// The number as written (`4`, `0.5`, `1e-05`).
  case number(String)
  case string(String)
  case array([JSONValue])
  /// Members in file order; a key given twice keeps its last value (as Python's json does).
  case object([(String, JSONValue)])

  public static func == (a: JSONValue, b: JSONValue) -> Bool {
    switch (a, b) {
    case (.null, .null): return true
    case (.bool(let x), .bool(let y)): return x == y
    case (.number(let x), .number(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    case (.array(let x), .array(let y)): return x == y
    case (.object(let x), .object(let y)):
      // Key order does not matter (a written file has its keys sorted).
      guard x.count == y.count else { return false }
      let ys = Dictionary(y, uniquingKeysWith: { $1 })
      return x.allSatisfy { key, v in ys[key].map { $0 == v } ?? false }
    default: return false
    }
  }

  /// A member of an object; nil for a missing key or a value that is not an object.
  public subscript(key: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.last { $0.0 == key }?.1
  }

  /// Sets a member of an object (replacing it in place, or adding it at the end).
  public mutating func set(_ key: String, _ value: JSONValue) {
    guard case .object(var members) = self else { return }
    if let i = members.firstIndex(where: { $0.0 == key }) {
      members[i].1 = value
    } else {
      members.append((key, value))
    }
    self = .object(members)
  }

  public var string: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  /// What kind of value this is, for messages (`a string`, `an object`).
  public var kind: String {
    switch self {
    case .null: return "null"
    case .bool: return "a boolean"
    case .number: return "a number"
    case .string: return "a string"
    case .array: return "a list"
    case .object: return "an object"
    }
  }
}

/// Reads JSON (RFC 8259) from UTF-8 bytes. Errors say where: `line 3, column 7: ...`.
public struct JSONReader {
  public struct Failure: Error, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var message: String
    public var description: String { "line \(line), column \(column): \(message)" }
  }

  /// Deepest nesting accepted (so a hostile file cannot exhaust the stack).
  public static let maxDepth = 512

  private let bytes: [UInt8]
  private var i = 0

  public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
    var r = JSONReader(bytes: bytes)
    r.skipBlanks()
    let v = try r.value(depth: 0)
    r.skipBlanks()
    guard r.i == r.bytes.count else { throw r.fail("unexpected text after the JSON value") }
    return v
  }

  private init(bytes: [UInt8]) { self.bytes = bytes }

  private func fail(_ message: String, at position: Int? = nil) -> Failure {
    let p = min(position ?? i, bytes.count)
    var line = 1
    var column = 1
    for b in bytes[..<p] {
      if b == UInt8(ascii: "\n") {
        line += 1
        column = 1
      } else if b & 0xC0 != 0x80 {
        column += 1
      }
    }
    return Failure(line: line, column: column, message: message)
  }

  private var current: UInt8? { i < bytes.count ? bytes[i] : nil }

  private mutating func skipBlanks() {
    while let c = current, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 }
  }

  private func describe(_ c: UInt8?) -> String {
    guard let c else { return "the end of the file" }
    if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
    return String(format: "byte 0x%02X", c)
  }

  private mutating func value(depth: Int) throws -> JSONValue {
    guard depth < Self.maxDepth else { throw fail("nested more than \(Self.maxDepth) deep") }
    switch current {
    case UInt8(ascii: "{"): return try object(depth: depth)
    case UInt8(ascii: "["): return try array(depth: depth)
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): return try literal("true", .bool(true))
    case UInt8(ascii: "f"): return try literal("false", .bool(false))
    case UInt8(ascii: "n"): return try literal("null", .null)
    case let c? where c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39): return try number()
    default: throw fail("expected a value, found \(describe(current))")
    }
  }

  private mutating func literal(_ word: String, _ v: JSONValue) throws -> JSONValue {
    let w = Array(word.utf8)
    guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else {
      throw fail("expected a value, found \(describe(current))")
    }
    i += w.count
    return v
  }

  private mutating func number() throws -> JSONValue {
    let start = i
    func digits() -> Int {
      let s = i
      while let c = current, c >= 0x30 && c <= 0x39 { i += 1 }
      return i - s
    }
    if current == UInt8(ascii: "-") { i += 1 }
    if current == UInt8(ascii: "0") {
      i += 1
    } else if digits() == 0 {
      throw fail("bad number")
    }
    if current == UInt8(ascii: ".") {
      i += 1
      guard digits() > 0 else { throw fail("bad number: digits must follow '.'") }
    }
    if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
      i += 1
      if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { i += 1 }
      guard digits() > 0 else { throw fail("bad number: the exponent has no digits") }
    }
    return .number(String(decoding: bytes[start..<i], as: UTF8.self))
  }

  private mutating func hex4() throws -> UInt32 {
    guard i + 4 <= bytes.count else { throw fail("bad \\u escape") }
    var v: UInt32 = 0
    for _ in 0..<4 {
      guard let d = JSONEscape.hexDigit(bytes[i]) else { throw fail("bad \\u escape") }
      v = v * 16 + d
      i += 1
    }
    return v
  }

  private mutating func string() throws -> String {
    let open = i
    i += 1
    var out: [UInt8] = []
    while true {
      guard let c = current else { throw fail("unterminated string", at: open) }
      i += 1
      switch c {
      case UInt8(ascii: "\""):
        guard let s = String(validating: out, as: UTF8.self) else {
          throw fail("a string that is not valid UTF-8", at: open)
        }
        return s
      case UInt8(ascii: "\\"):
        guard let e = current else { throw fail("unterminated string", at: open) }
        i += 1
        if let byte = JSONEscape.byte(e) {
          out.append(byte)
        } else if e == UInt8(ascii: "u") {
          var code = try hex4()
          if (0xD800..<0xDC00).contains(code), current == UInt8(ascii: "\\"),
            i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "u")
          {
            let save = i
            i += 2
            let low = try hex4()
            if (0xDC00..<0xE000).contains(low) {
              code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            } else {
              i = save
            }
          }
          JSONEscape.appendUTF8(code, to: &out)
        } else {
          throw fail("unknown escape '\\\(Character(Unicode.Scalar(e)))'", at: i - 2)
        }
      case 0..<0x20:
        throw fail("control character in a string (\(describe(c)))", at: i - 1)
      default:
        out.append(c)
      }
    }
  }

  private mutating func array(depth: Int) throws -> JSONValue {
    i += 1
    var items: [JSONValue] = []
    skipBlanks()
    if current == UInt8(ascii: "]") {
      i += 1
      return .array(items)
    }
    while true {
      skipBlanks()
      items.append(try value(depth: depth + 1))
      skipBlanks()
      switch current {
      case UInt8(ascii: ","): i += 1
      case UInt8(ascii: "]"):
        i += 1
        return .array(items)
      default: throw fail("expected ',' or ']' in a list, found \(describe(current))")
      }
    }
  }

  private mutating func object(depth: Int) throws -> JSONValue {
    i += 1
    var members: [(String, JSONValue)] = []
    var index: [String: Int] = [:]
    skipBlanks()
    if current == UInt8(ascii: "}") {
      i += 1
      return .object(members)
    }
    while true {
      skipBlanks()
      guard current == UInt8(ascii: "\"") else {
        throw fail("expected a key in quotes, found \(describe(current))")
      }
      let key = try string()
      skipBlanks()
      guard current == UInt8(ascii: ":") else {
        throw fail("expected ':' after a key, found \(describe(current))")
      }
      i += 1
      skipBlanks()
      let v = try value(depth: depth + 1)
      if let k = index[key] {
        members[k].1 = v
      } else {
        index[key] = members.count
        members.append((key, v))
      }
      skipBlanks()
      switch current {
      case UInt8(ascii: ","): i += 1
      case UInt8(ascii: "}"):
        i += 1
        return .object(members)
      default: throw fail("expected ',' or '}' in an object, found \(describe(current))")
      }
    }
  }
}

/// Writes JSON the way nbformat (Python's `json.dumps(nb, sort_keys=True, indent=1,
/// ensure_ascii=False)`) does: one space of indent per level, keys sorted by code point,
/// `": "` between key and value, non-ASCII text as is, so a notebook written here and one
/// written by Jupyter differ only where their contents do.
public enum JSONWriter {
  public static func write(_ value: JSONValue) -> String {
    var out = ""
    write(value, indent: 0, into: &out)
    return out
  }

  private static func write(_ value: JSONValue, indent: Int, into out: inout String) {
    switch value {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .number(let n): out += n
    case .string(let s): out += s.jsonQuoted
    case .array(let items):
      guard !items.isEmpty else {
        out += "[]"
        return
      }
      out += "[\n"
      for (k, item) in items.enumerated() {
        out += String(repeating: " ", count: indent + 1)
        write(item, indent: indent + 1, into: &out)
        out += k == items.count - 1 ? "\n" : ",\n"
      }
      out += String(repeating: " ", count: indent) + "]"
    case .object(let members):
      guard !members.isEmpty else {
        out += "{}"
        return
      }
      let sorted = members.sorted {
        $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars)
      }
      out += "{\n"
      for (k, (key, item)) in sorted.enumerated() {
        out += String(repeating: " ", count: indent + 1)
        out += key.jsonQuoted
        out += ": "
        write(item, indent: indent + 1, into: &out)
        out += k == sorted.count - 1 ? "\n" : ",\n"
      }
      out += String(repeating: " ", count: indent) + "}"
    }
  }
}

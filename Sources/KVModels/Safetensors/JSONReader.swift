import Foundation

/// Why a JSON text could not be read: what is wrong, where (line and column, 1-based, columns
/// in bytes) and, when inside an object, under which key (`vision_config.hidden_size`).
public struct JSONParseError: Error, CustomStringConvertible, Sendable, Equatable {
  public let message: String
  public let line: Int
  public let column: Int
  /// The keys leading to the value ("" at the top level).
  public let keyPath: String
  /// False for text that is valid JSON holding a value kvlab refuses (a number past a double).
  public var isSyntax = true

  /// The message for a file: `not valid JSON (line 1, column 12: ...)`, or for a valid JSON
  /// text with a refused value, `line 3, column 17: "rope_theta": 1e400 is not a finite number`.
  public var fileMessage: String { isSyntax ? "not valid JSON (\(description))" : description }

  /// `line 3, column 17: "rope_theta": 1e400 is not a finite number`.
  public var description: String {
    "line \(line), column \(column): " + (keyPath.isEmpty ? "" : "\"\(keyPath)\": ") + message
  }
}

/// A JSON reader over bytes, for the files kvlab loads (config.json, preprocessor_config.json,
/// safetensors headers). It reads as Python's `json` module does where the two could differ on a
/// file transformers loads: a key given twice keeps its last value. It is stricter where a file
/// would otherwise reach the engine as a non-number: `NaN`, `Infinity` and numbers past the range
/// of a double (`1e400`, which Python reads as infinity) are refused with their key and position.
/// Cost is linear in the text with no per-byte allocation; a safetensors header is read one
/// member at a time (`forEachMember`), so its entries never exist as one tree.
public struct JSONReader {
  /// Deeper nesting than this is refused (Python's default recursion limit is near 1000).
  public static let maxDepth = 512

  private let bytes: UnsafeRawBufferPointer
  private var i = 0
  private var depth = 0
  private var keys: [String] = []

  public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

  /// Parses a whole JSON document.
  public static func parse(_ data: Data) throws -> JSONValue {
    try data.withUnsafeBytes { raw in
      var r = JSONReader(raw)
      let v = try r.value()
      try r.end()
      return v
    }
  }

  // MARK: - errors

  private func fail(_ message: String, at position: Int? = nil) -> JSONParseError {
    let p = min(position ?? i, bytes.count)
    var line = 1
    var lineStart = 0
    for k in 0..<p where bytes[k] == 0x0A {
      line += 1
      lineStart = k + 1
    }
    return JSONParseError(
      message: message, line: line, column: p - lineStart + 1,
      keyPath: keys.joined(separator: "."))
  }

  private func found() -> String {
    guard i < bytes.count else { return "the end of the file" }
    let b = bytes[i]
    if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
    return String(format: "byte 0x%02x", b)
  }

  // MARK: - structure

  private mutating func skipSpace() {
    while i < bytes.count {
      switch bytes[i] {
      case 0x20, 0x0A, 0x0D, 0x09: i += 1
      default: return
      }
    }
  }

  /// After the document: only white space may follow.
  public mutating func end() throws {
    skipSpace()
    if i < bytes.count { throw fail("unexpected \(found()) after the JSON value") }
  }

  private mutating func expect(_ b: UInt8, _ what: String) throws {
    skipSpace()
    guard i < bytes.count, bytes[i] == b else { throw fail("expected \(what), found \(found())") }
    i += 1
  }

  private mutating func enter() throws {
    depth += 1
    if depth > Self.maxDepth { throw fail("nested more than \(Self.maxDepth) deep") }
  }

  /// The next value when it is an array of integers (`[2, 3]`), read without building a tree;
  /// otherwise nil, and the reader has not moved.
  public mutating func integers() -> [Int]? {
    let start = i
    skipSpace()
    guard i < bytes.count, bytes[i] == UInt8(ascii: "[") else {
      i = start
      return nil
    }
    i += 1
    var out: [Int] = []
    skipSpace()
    if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
      i += 1
      return out
    }
    while true {
      skipSpace()
      guard i < bytes.count, bytes[i] == UInt8(ascii: "-") || (bytes[i] >= 0x30 && bytes[i] <= 0x39),
        case .int(let v)? = try? number(), let n = Int(exactly: v)
      else {
        i = start
        return nil
      }
      out.append(n)
      skipSpace()
      guard i < bytes.count else {
        i = start
        return nil
      }
      if bytes[i] == UInt8(ascii: ",") {
        i += 1
      } else if bytes[i] == UInt8(ascii: "]") {
        i += 1
        return out
      } else {
        i = start
        return nil
      }
    }
  }

  /// Whether the next value is an object.
  public mutating func atObject() -> Bool {
    skipSpace()
    return i < bytes.count && bytes[i] == UInt8(ascii: "{")
  }

  /// Reads the next value.
  public mutating func value() throws -> JSONValue {
    skipSpace()
    guard i < bytes.count else { throw fail("expected a value, found the end of the file") }
    switch bytes[i] {
    case UInt8(ascii: "{"):
      var out: [String: JSONValue] = [:]
      try forEachMember { key, r in out[key] = try r.value() }  // the last of a repeated key
      return .object(out)
    case UInt8(ascii: "["):
      try enter()
      i += 1
      var out: [JSONValue] = []
      skipSpace()
      if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
        i += 1
      } else {
        while true {
          out.append(try value())
          skipSpace()
          guard i < bytes.count else { throw fail("expected ',' or ']', found the end of the file") }
          if bytes[i] == UInt8(ascii: ",") {
            i += 1
          } else if bytes[i] == UInt8(ascii: "]") {
            i += 1
            break
          } else {
            throw fail("expected ',' or ']', found \(found())")
          }
        }
      }
      depth -= 1
      return .array(out)
    case UInt8(ascii: "\""):
      return .string(try string())
    case UInt8(ascii: "t"): return try literal("true", .bool(true))
    case UInt8(ascii: "f"): return try literal("false", .bool(false))
    case UInt8(ascii: "n"): return try literal("null", .null)
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
      return try number()
    case UInt8(ascii: "N"), UInt8(ascii: "I"):
      throw fail("NaN and Infinity are not numbers kvlab accepts (not finite)")
    default:
      throw fail("expected a value, found \(found())")
    }
  }

  /// Reads an object member by member: `body` gets each key and this reader positioned at the
  /// member's value, which it must read (with `value()`, or `forEachMember` again).
  public mutating func forEachMember(_ body: (String, inout JSONReader) throws -> Void) throws {
    try expect(UInt8(ascii: "{"), "'{'")
    try enter()
    skipSpace()
    if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
      i += 1
      depth -= 1
      return
    }
    while true {
      skipSpace()
      guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
        throw fail("expected a key (a string), found \(found())")
      }
      let key = try string()
      try expect(UInt8(ascii: ":"), "':' after the key")
      keys.append(key)
      try body(key, &self)
      keys.removeLast()
      skipSpace()
      guard i < bytes.count else { throw fail("expected ',' or '}', found the end of the file") }
      if bytes[i] == UInt8(ascii: ",") {
        i += 1
      } else if bytes[i] == UInt8(ascii: "}") {
        i += 1
        break
      } else {
        throw fail("expected ',' or '}', found \(found())")
      }
    }
    depth -= 1
  }

  private mutating func literal(_ word: StaticString, _ v: JSONValue) throws -> JSONValue {
    let n = word.utf8CodeUnitCount
    let start = i
    guard i + n <= bytes.count,
      memcmp(bytes.baseAddress! + i, word.utf8Start, n) == 0
    else { throw fail("expected a value, found \(found())", at: start) }
    i += n
    return v
  }

  // MARK: - numbers

  private mutating func number() throws -> JSONValue {
    let start = i
    func digits() -> Int {
      let s = i
      while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
      return i - s
    }
    if bytes[i] == UInt8(ascii: "-") { i += 1 }
    let intStart = i
    let intDigits = digits()
    guard intDigits > 0 else { throw fail("expected a digit, found \(found())") }
    if intDigits > 1, bytes[intStart] == 0x30 {
      throw fail("a number may not start with 0 (leading zeros)", at: intStart)
    }
    var integral = true
    if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
      i += 1
      integral = false
      guard digits() > 0 else { throw fail("expected a digit after '.', found \(found())") }
    }
    if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
      i += 1
      integral = false
      if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
        i += 1
      }
      guard digits() > 0 else { throw fail("expected a digit in the exponent, found \(found())") }
    }
    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
    if integral, let v = Int64(text) { return .int(v) }
    guard let d = Double(text), d.isFinite else {
      var e = fail("\(text) is not a finite number (past the range of a double)", at: start)
      e.isSyntax = false
      throw e
    }
    return .double(d)
  }

  // MARK: - strings

  private func hex4(_ at: Int) -> UInt32? {
    guard at + 4 <= bytes.count else { return nil }
    var v: UInt32 = 0
    for k in at..<(at + 4) {
      guard let d = JSONEscape.hexDigit(bytes[k]) else { return nil }
      v = v << 4 | d
    }
    return v
  }

  /// Reads a string literal (at its opening quote).
  private mutating func string() throws -> String {
    let open = i
    i += 1
    let start = i
    var ascii = true
    // Fast path: no escapes.
    while i < bytes.count {
      let b = bytes[i]
      if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 { break }
      if b >= 0x80 { ascii = false }
      i += 1
    }
    guard i < bytes.count else { throw fail("unterminated string (opened here)", at: open) }
    if bytes[i] == UInt8(ascii: "\"") {
      let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
      i += 1
      if ascii { return String(decoding: slice, as: UTF8.self) }
      guard let s = String(bytes: slice, encoding: .utf8) else {
        throw fail("string is not valid UTF-8", at: open)
      }
      return s
    }
    // Slow path: collect bytes, decoding escapes.
    var out = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
    while true {
      guard i < bytes.count else { throw fail("unterminated string (opened here)", at: open) }
      let b = bytes[i]
      if b == UInt8(ascii: "\"") {
        i += 1
        break
      }
      if b < 0x20 { throw fail(String(format: "control character 0x%02x in a string", b)) }
      if b != UInt8(ascii: "\\") {
        out.append(b)
        i += 1
        continue
      }
      guard i + 1 < bytes.count else { throw fail("unterminated string (opened here)", at: open) }
      let e = bytes[i + 1]
      i += 2
      if let byte = JSONEscape.byte(e) {
        out.append(byte)
      } else if e == UInt8(ascii: "u") {
        guard var u = hex4(i) else { throw fail("\\u needs four hex digits", at: i - 2) }
        i += 4
        if (0xD800..<0xDC00).contains(u), i + 1 < bytes.count, bytes[i] == 0x5C,
          bytes[i + 1] == UInt8(ascii: "u"), let low = hex4(i + 2), (0xDC00..<0xE000).contains(low)
        {
          u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
          i += 6
        }
        JSONEscape.appendUTF8(u, to: &out)
      } else {
        throw fail("invalid escape '\\\(Character(Unicode.Scalar(e)))' in a string", at: i - 2)
      }
    }
    guard let s = String(bytes: out, encoding: .utf8) else {
      throw fail("string is not valid UTF-8", at: open)
    }
    return s
  }
}

/// What kvlab's two JSON readers (this one, and the REPL's notebook reader, which keeps numbers
/// as written and members in order) share about string escapes.
public enum JSONEscape {
  /// The byte a one-character escape stands for (`n` → 0x0A); nil for `u` and for a byte that
  /// is no escape.
  public static func byte(_ e: UInt8) -> UInt8? {
    switch e {
    case UInt8(ascii: "\""): return 0x22
    case UInt8(ascii: "\\"): return 0x5C
    case UInt8(ascii: "/"): return 0x2F
    case UInt8(ascii: "b"): return 0x08
    case UInt8(ascii: "f"): return 0x0C
    case UInt8(ascii: "n"): return 0x0A
    case UInt8(ascii: "r"): return 0x0D
    case UInt8(ascii: "t"): return 0x09
    default: return nil
    }
  }

  /// The value of a hex digit of a `\u` escape.
  public static func hexDigit(_ b: UInt8) -> UInt32? {
    switch b {
    case 0x30...0x39: return UInt32(b - 0x30)
    case 0x41...0x46: return UInt32(b - 0x41 + 10)
    case 0x61...0x66: return UInt32(b - 0x61 + 10)
    default: return nil
    }
  }

  /// Appends code point `u` as UTF-8. A lone surrogate becomes U+FFFD (Python keeps it; Swift
  /// strings cannot hold one).
  public static func appendUTF8(_ u: UInt32, to out: inout [UInt8]) {
    let scalar = Unicode.Scalar(u) ?? "\u{FFFD}"
    out.append(contentsOf: Array(String(Character(scalar)).utf8))
  }
}

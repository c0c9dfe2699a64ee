// GPT-2's byte-level alphabet: every byte is written as one printable Unicode character, so that
// a vocabulary of strings can hold arbitrary bytes (space is "Ġ", newline "Ċ").

enum ByteLevel {
  /// The character standing for each byte.
  static let byteToChar: [Character] = {
    var table = [UInt32](repeating: 0, count: 256)
    var extra: UInt32 = 0
    for b in 0..<256 {
      let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
      if printable {
        table[b] = UInt32(b)
      } else {
        table[b] = 256 + extra
        extra += 1
      }
    }
    return table.map { Character(Unicode.Scalar($0)!) }
  }()

  /// The byte each alphabet character stands for, indexed by scalar value (0..<324), -1 if none.
  static let charToByte: [Int16] = {
    var table = [Int16](repeating: -1, count: 324)
    for (b, ch) in byteToChar.enumerated() {
      table[Int(ch.unicodeScalars.first!.value)] = Int16(b)
    }
    return table
  }()

  /// The bytes a vocabulary string stands for, as Hugging Face's ByteLevel decoder computes them:
  /// alphabet characters give their byte, any other character its own UTF-8.
  static func bytes(of token: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(token.utf8.count)
    for s in token.unicodeScalars {
      let v = Int(s.value)
      if v < charToByte.count, charToByte[v] >= 0 {
        out.append(UInt8(charToByte[v]))
      } else {
        out.append(contentsOf: String(s).utf8)
      }
    }
    return out
  }

  /// The vocabulary string for raw bytes.
  static func string(of bytes: some Sequence<UInt8>) -> String {
    var s = ""
    for b in bytes { s.append(byteToChar[Int(b)]) }
    return s
  }
}

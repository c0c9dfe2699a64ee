// Incremental decoding: BPETokenizer's streaming decoder, holding back incomplete UTF-8.

extension BPETokenizer {
  /// Decodes tokens one at a time as they are generated, holding back the bytes of a character
  /// that is not complete yet; the concatenated output equals `decode` of all the ids.
  public struct StreamingDecoder: Sendable {
    public let tokenizer: BPETokenizer
    public let skipSpecial: Bool
    private var pending: [UInt8] = []

    public init(_ tokenizer: BPETokenizer, skipSpecial: Bool = false) {
      self.tokenizer = tokenizer
      self.skipSpecial = skipSpecial
    }

    /// The text that `id` completes (possibly empty).
    public mutating func append(_ id: Int) -> String {
      guard id >= 0 && id < tokenizer.vocabularySize else { return "" }
      if skipSpecial && tokenizer.isSpecialToken(id) { return "" }
      pending.append(contentsOf: tokenizer.bytes(of: id))
      let cut = pending.count - incompleteSuffixLength(pending)
      guard cut > 0 else { return "" }
      let text = String(decoding: pending[..<cut], as: UTF8.self)
      pending.removeFirst(cut)
      return text
    }

    /// Whatever is held back (an incomplete character becomes U+FFFD); the decoder is then empty.
    public mutating func finish() -> String {
      defer { pending.removeAll() }
      return String(decoding: pending, as: UTF8.self)
    }

    /// Whether bytes are held back.
    public var hasPending: Bool { !pending.isEmpty }
  }

  public func makeStreamingDecoder(skipSpecial: Bool = false) -> StreamingDecoder {
    StreamingDecoder(self, skipSpecial: skipSpecial)
  }
}

/// The length of the trailing bytes that are a proper prefix of a well-formed UTF-8 sequence
/// (a character still being completed), 0 if none.
func incompleteSuffixLength(_ b: [UInt8]) -> Int {
  let n = b.count
  // a lead byte among the last 3 bytes, followed only by valid continuation bytes
  var k = 1
  while k <= 3 && k <= n {
    let lead = b[n - k]
    if lead & 0xC0 == 0x80 {  // continuation byte: look further back
      k += 1
      continue
    }
    let need: Int
    var lo: UInt8 = 0x80
    var hi: UInt8 = 0xBF
    switch lead {
    case 0xC2...0xDF: need = 2
    case 0xE0: need = 3; lo = 0xA0
    case 0xE1...0xEC, 0xEE...0xEF: need = 3
    case 0xED: need = 3; hi = 0x9F
    case 0xF0: need = 4; lo = 0x90
    case 0xF1...0xF3: need = 4
    case 0xF4: need = 4; hi = 0x8F
    default: return 0
    }
    guard k < need else { return 0 }  // complete (or too long): nothing to hold back
    if k >= 2 && !(lo...hi).contains(b[n - k + 1]) { return 0 }
    return k
  }
  return 0
}

// Added tokens: what one is, and the matcher that finds them in text before pre-tokenization.

/// A token matched literally in the text before pre-tokenization (Hugging Face `added_tokens`,
/// GGUF CONTROL and USER_DEFINED tokens).
struct AddedToken: Sendable, Equatable {
  var id: Int
  var content: String
  /// Special tokens are skipped by `decode(skipSpecial: true)` and not matched when
  /// `encode(parseSpecial: false)`.
  var special: Bool
  var lstrip = false
  var rstrip = false
  var singleWord = false
  /// Matched after normalization (true) or in the raw text (false).
  var normalized = false
}

/// Finds added tokens in text: leftmost-longest, with Hugging Face's lstrip/rstrip/single_word.
struct AddedTokenMatcher: Sendable {
  enum Segment {
    case text(Range<Int>)
    case token(Int)
  }

  private struct Pattern: Sendable {
    var bytes: [UInt8]
    var token: AddedToken
  }

  /// Patterns by first byte, longest first.
  private var byFirst: [[Pattern]] = Array(repeating: [], count: 256)
  let isEmpty: Bool

  init(_ tokens: [AddedToken]) {
    isEmpty = tokens.isEmpty
    for t in tokens {
      let b = Array(t.content.utf8)
      byFirst[Int(b[0])].append(Pattern(bytes: b, token: t))
    }
    for i in 0..<256 { byFirst[i].sort { $0.bytes.count > $1.bytes.count } }
  }

  private func match(_ text: [UInt8], at i: Int) -> Pattern? {
    let candidates = byFirst[Int(text[i])]
    if candidates.isEmpty { return nil }
    let n = text.count
    for p in candidates where i + p.bytes.count <= n {
      var ok = true
      for (k, b) in p.bytes.enumerated() where text[i + k] != b {
        ok = false
        break
      }
      if ok { return p }
    }
    return nil
  }

  func split(_ text: [UInt8], parseSpecial: Bool) -> [Segment] {
    if isEmpty { return text.isEmpty ? [] : [.text(0..<text.count)] }
    var out: [Segment] = []
    var consumed = 0  // end of the last emitted segment
    var i = 0
    let n = text.count
    while i < n {
      guard let p = match(text, at: i) else {
        i += 1
        continue
      }
      var start = i
      var stop = i + p.bytes.count
      i = stop
      if p.token.special && !parseSpecial { continue }
      if p.token.singleWord {
        if (start > 0 && endsWithWordChar(text, before: start))
          || (stop < n && startsWithWordChar(text, at: stop))
        {
          continue
        }
      }
      if p.token.lstrip { start = max(whitespaceStart(text, before: start), consumed) }
      if p.token.rstrip { stop = whitespaceEnd(text, from: stop) }
      if consumed < start { out.append(.text(consumed..<start)) }
      out.append(.token(p.token.id))
      consumed = stop
      i = max(i, stop)
    }
    if consumed < n { out.append(.text(consumed..<n)) }
    return out
  }

  private func scalar(_ text: [UInt8], endingAt end: Int) -> (Unicode.Scalar, Int)? {
    guard end > 0 else { return nil }
    var s = end - 1
    while s > 0 && text[s] & 0xC0 == 0x80 { s -= 1 }
    let str = String(decoding: text[s..<end], as: UTF8.self)
    return str.unicodeScalars.first.map { ($0, s) }
  }

  private func scalar(_ text: [UInt8], startingAt start: Int) -> (Unicode.Scalar, Int)? {
    guard start < text.count else { return nil }
    var e = start + 1
    while e < text.count && text[e] & 0xC0 == 0x80 { e += 1 }
    let str = String(decoding: text[start..<e], as: UTF8.self)
    return str.unicodeScalars.first.map { ($0, e) }
  }

  private func isWordChar(_ s: Unicode.Scalar) -> Bool {
    s == "_" || s.properties.isAlphabetic || s.properties.numericType != nil
  }

  private func endsWithWordChar(_ text: [UInt8], before i: Int) -> Bool {
    scalar(text, endingAt: i).map { isWordChar($0.0) } ?? false
  }

  private func startsWithWordChar(_ text: [UInt8], at i: Int) -> Bool {
    scalar(text, startingAt: i).map { isWordChar($0.0) } ?? false
  }

  private func whitespaceStart(_ text: [UInt8], before i: Int) -> Int {
    var j = i
    while let (s, start) = scalar(text, endingAt: j), s.properties.isWhitespace { j = start }
    return j
  }

  private func whitespaceEnd(_ text: [UInt8], from i: Int) -> Int {
    var j = i
    while let (s, end) = scalar(text, startingAt: j), s.properties.isWhitespace { j = end }
    return j
  }
}

// Pre-tokenization: splitting text into the pieces that BPE merges within.
//
// The split regexes of byte-level BPE tokenizers are implemented by hand, as small scanners over
// Unicode scalars classified once (letter \p{L}, number \p{N}, whitespace \s, CR/LF). They
// reproduce what Oniguruma (Hugging Face `tokenizers`) matches for these exact patterns, leftmost
// alternative first, including the `\s+(?!\S)` backtracking; a general regex engine is slower and
// Swift Regex's Unicode semantics differ in places.

/// Character classes used by the split patterns (bit flags).
///
/// Unicode versions: Hugging Face `tokenizers` 0.23 matches its regexes with Oniguruma, whose tables
/// are Unicode 16.0, while its `Digits` step uses Rust's `char::is_numeric` (Unicode 17.0). Swift
/// 6.3 knows Unicode 17.0, so letters and numbers new in 17.0 count as unassigned (neither \p{L}
/// nor \p{N}) for the regexes, and `.numeric` (Digits) follows Swift's own tables.
struct CharClass: OptionSet, Sendable {
  let rawValue: UInt8
  static let letter = CharClass(rawValue: 1)  // regex \p{L}: Lu Ll Lt Lm Lo
  static let number = CharClass(rawValue: 2)  // regex \p{N}: Nd Nl No
  static let space = CharClass(rawValue: 4)  // \s: White_Space
  static let newline = CharClass(rawValue: 8)  // \r or \n
  static let numeric = CharClass(rawValue: 16)  // Digits: Nd Nl No (any Unicode version)

  /// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
  var isOther: Bool { rawValue & 7 == 0 }

  /// The newest Unicode version the regex classes know (Oniguruma in `tokenizers` 0.23).
  static let regexUnicodeMajor = 16

  /// Classes of the Basic Multilingual Plane, computed once (64 KiB).
  private static let bmp: [CharClass] = (0..<0x10000).map { classify(slow: UInt32($0)) }

  @inline(__always)
  static func of(_ v: UInt32) -> CharClass {
    v < 0x10000 ? bmp[Int(v)] : classify(slow: v)
  }

  static func classify(slow v: UInt32) -> CharClass {
    guard let s = Unicode.Scalar(v) else { return [] }
    var c: CharClass = []
    switch s.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
      c.insert(.letter)
    case .decimalNumber, .letterNumber, .otherNumber:
      c.insert(.number)
      c.insert(.numeric)
    default: break
    }
    if !c.isEmpty, let age = s.properties.age, age.major > regexUnicodeMajor {
      c.subtract([.letter, .number])
    }
    if s.properties.isWhitespace { c.insert(.space) }
    if v == 0x0A || v == 0x0D { c.insert(.newline) }
    return c
  }
}

/// Text decoded once into scalars with their classes and UTF-8 offsets, so that the scanners work
/// on integers and the pieces map back to byte ranges.
struct ScalarText {
  var bytes: [UInt8]
  var scalars: [UInt32] = []
  var classes: [CharClass] = []
  /// Byte offset of each scalar, plus one entry for the end.
  var offsets: [Int] = []

  init(bytes: [UInt8]) {
    self.bytes = bytes
    scalars.reserveCapacity(bytes.count)
    classes.reserveCapacity(bytes.count)
    offsets.reserveCapacity(bytes.count + 1)
    var i = 0
    let n = bytes.count
    while i < n {
      let b0 = UInt32(bytes[i])
      var v: UInt32
      var len: Int
      // The input is always valid UTF-8 (it comes from a Swift String).
      if b0 < 0x80 {
        v = b0; len = 1
      } else if b0 < 0xE0 {
        v = (b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F); len = 2
      } else if b0 < 0xF0 {
        v = (b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)
        len = 3
      } else {
        v = (b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
          | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)
        len = 4
      }
      scalars.append(v)
      classes.append(CharClass.of(v))
      offsets.append(i)
      i += len
    }
    offsets.append(n)
  }

  var count: Int { scalars.count }
}

/// The split patterns the scanners implement, recognised by their exact regex text.
enum SplitPattern: Sendable, Equatable {
  /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
  case gpt2
  /// The cl100k family (Llama 3: digits in groups of up to 3; Qwen2: one digit):
  /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
  case cl100k(maxDigits: Int)

  static let gpt2Regex =
    #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
  static let llama3Regex =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
  static let qwen2Regex =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

  init?(regex: String) {
    switch regex {
    // llama.cpp writes the GPT-2 pattern without the final `|\s+`; it matches the same pieces.
    case Self.gpt2Regex, #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#:
      self = .gpt2
    case Self.llama3Regex: self = .cl100k(maxDigits: 3)
    case Self.qwen2Regex: self = .cl100k(maxDigits: 1)
    default: return nil
    }
  }

  /// Appends the pieces of `text[range]` (scalar indices) to `out`.
  func split(_ t: ScalarText, _ range: Range<Int>, into out: inout [Range<Int>]) {
    switch self {
    case .gpt2: splitGPT2(t, range, into: &out)
    case .cl100k(let maxDigits): splitCL100K(t, range, maxDigits: maxDigits, into: &out)
    }
  }
}

private let apostrophe: UInt32 = 0x27
private let space: UInt32 = 0x20

/// Length of a contraction (`'s 't 're 've 'm 'll 'd`) at `i`, or 0. `foldCase` also accepts
/// upper case (and U+017F LATIN SMALL LETTER LONG S, which case-folds to "s").
@inline(__always)
private func contractionLength(_ s: [UInt32], _ i: Int, _ end: Int, foldCase: Bool) -> Int {
  guard s[i] == apostrophe, i + 1 < end else { return 0 }
  func lower(_ v: UInt32) -> UInt32 {
    guard foldCase else { return v }
    if v >= 0x41 && v <= 0x5A { return v + 0x20 }
    if v == 0x17F { return 0x73 }
    return v
  }
  let a = lower(s[i + 1])
  switch a {
  case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
  default: break
  }
  guard i + 2 < end else { return 0 }
  let b = lower(s[i + 2])
  if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) {
    return 3  // re ve ll
  }
  return 0
}

/// End of the run of scalars from `i` whose class satisfies `pred`.
@inline(__always)
private func runEnd(_ c: [CharClass], _ i: Int, _ end: Int, _ pred: (CharClass) -> Bool) -> Int {
  var j = i
  while j < end && pred(c[j]) { j += 1 }
  return j
}

/// `\s+(?!\S)|\s+` at `i` (a whitespace scalar): the run, less its last scalar when a
/// non-space follows and the run is longer than one.
@inline(__always)
private func whitespaceEnd(_ c: [CharClass], _ i: Int, _ end: Int) -> Int {
  let r = runEnd(c, i, end) { $0.contains(.space) }
  if r == end || r - i == 1 { return r }
  return r - 1
}

private func splitGPT2(_ t: ScalarText, _ range: Range<Int>, into out: inout [Range<Int>]) {
  let s = t.scalars
  let c = t.classes
  let end = range.upperBound
  var i = range.lowerBound
  while i < end {
    var j: Int
    let n = contractionLength(s, i, end, foldCase: false)
    if n > 0 {
      j = i + n
    } else {
      // ` ?X+`: an optional U+0020 then a run of one class.
      var k = i
      if s[i] == space && i + 1 < end && !c[i + 1].contains(.space) { k = i + 1 }
      let ck = c[k]
      if ck.contains(.letter) {
        j = runEnd(c, k, end) { $0.contains(.letter) }
      } else if ck.contains(.number) {
        j = runEnd(c, k, end) { $0.contains(.number) }
      } else if ck.isOther {
        j = runEnd(c, k, end) { $0.isOther }
      } else {
        j = whitespaceEnd(c, i, end)
      }
    }
    out.append(i..<j)
    i = j
  }
}

private func splitCL100K(
  _ t: ScalarText, _ range: Range<Int>, maxDigits: Int, into out: inout [Range<Int>]
) {
  let s = t.scalars
  let c = t.classes
  let end = range.upperBound
  var i = range.lowerBound
  while i < end {
    var j: Int
    let ci = c[i]
    let n = contractionLength(s, i, end, foldCase: true)
    if n > 0 {
      j = i + n
    } else if ci.contains(.letter) {
      // [^\r\n\p{L}\p{N}]?\p{L}+ starting with the letter itself
      j = runEnd(c, i, end) { $0.contains(.letter) }
    } else if !ci.contains(.newline) && !ci.contains(.number) && i + 1 < end
      && c[i + 1].contains(.letter)
    {
      // one prefix scalar (space, punctuation, tab, ...) then letters
      j = runEnd(c, i + 1, end) { $0.contains(.letter) }
    } else if ci.contains(.number) {
      j = i + 1
      while j < end && j - i < maxDigits && c[j].contains(.number) { j += 1 }
    } else if ci.isOther || (s[i] == space && i + 1 < end && c[i + 1].isOther) {
      // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
      let k = ci.isOther ? i : i + 1
      j = runEnd(c, k, end) { $0.isOther }
      j = runEnd(c, j, end) { $0.contains(.newline) }
    } else {
      // whitespace: `\s*[\r\n]+` (up to the last CR/LF of the run), else `\s+(?!\S)|\s+`
      let r = runEnd(c, i, end) { $0.contains(.space) }
      var lastNL = -1
      var k = r - 1
      while k >= i {
        if c[k].contains(.newline) { lastNL = k; break }
        k -= 1
      }
      if lastNL >= 0 {
        j = lastNL + 1
      } else {
        j = (r == end || r - i == 1) ? r : r - 1
      }
    }
    out.append(i..<j)
    i = j
  }
}

/// One step of a pre-tokenizer pipeline (Hugging Face `pre_tokenizer`, llama.cpp pre type).
enum PreTokenizerStep: Sendable, Equatable {
  /// `Digits`: numbers split off, each digit alone when `individual`.
  case digits(individual: Bool)
  /// `Split` with a recognised pattern, behaviour `Isolated`; or `ByteLevel` with `use_regex`.
  case split(SplitPattern)
  /// `ByteLevel(add_prefix_space: true)`: a space is prepended to every piece not starting with one.
  case prefixSpace
}

/// The pre-tokenizer: steps applied in order, each to every piece the previous one produced.
struct PreTokenizer: Sendable, Equatable {
  var steps: [PreTokenizerStep]

  /// The pieces of `bytes` (valid UTF-8), as byte ranges of the returned buffer (which differs from
  /// `bytes` only when a step inserts spaces).
  func pieces(of bytes: [UInt8]) -> (bytes: [UInt8], pieces: [Range<Int>]) {
    var text = ScalarText(bytes: bytes)
    var pieces: [Range<Int>] = text.count > 0 ? [0..<text.count] : []
    var next: [Range<Int>] = []
    for step in steps {
      next.removeAll(keepingCapacity: true)
      switch step {
      case .digits(let individual):
        for p in pieces { splitDigits(text, p, individual: individual, into: &next) }
      case .split(let pattern):
        for p in pieces { pattern.split(text, p, into: &next) }
      case .prefixSpace:
        (text, next) = prependSpaces(text, pieces)
      }
      swap(&pieces, &next)
    }
    let ranges = pieces.map { text.offsets[$0.lowerBound]..<text.offsets[$0.upperBound] }
    return (text.bytes, ranges)
  }

  private func splitDigits(
    _ t: ScalarText, _ range: Range<Int>, individual: Bool, into out: inout [Range<Int>]
  ) {
    let c = t.classes
    var start = range.lowerBound
    var i = range.lowerBound
    while i < range.upperBound {
      if c[i].contains(.numeric) {
        if start < i { out.append(start..<i) }
        var j = i + 1
        if !individual { while j < range.upperBound && c[j].contains(.numeric) { j += 1 } }
        out.append(i..<j)
        i = j
        start = j
      } else {
        i += 1
      }
    }
    if start < range.upperBound { out.append(start..<range.upperBound) }
  }

  private func prependSpaces(
    _ t: ScalarText, _ pieces: [Range<Int>]
  ) -> (ScalarText, [Range<Int>]) {
    guard pieces.contains(where: { t.scalars[$0.lowerBound] != space }) else { return (t, pieces) }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(t.bytes.count + pieces.count)
    var starts: [Int] = []  // scalar index where each new piece starts
    var scalarCount = 0
    for p in pieces {
      starts.append(scalarCount)
      if t.scalars[p.lowerBound] != space {
        bytes.append(0x20)
        scalarCount += 1
      }
      bytes.append(contentsOf: t.bytes[t.offsets[p.lowerBound]..<t.offsets[p.upperBound]])
      scalarCount += p.count
    }
    starts.append(scalarCount)
    let rebuilt = ScalarText(bytes: bytes)
    return (rebuilt, (0..<pieces.count).map { starts[$0]..<starts[$0 + 1] })
  }
}

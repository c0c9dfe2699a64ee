import Foundation

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

/// Everything a byte-level BPE tokenizer is built from, whatever the file format.
struct BPEDefinition {
  /// The file it came from (for errors).
  var source: String
  /// Model vocabulary: id → byte-level string (nil for ids only added tokens use, or gaps).
  var tokens: [String?]
  /// Merges in rank order.
  var merges: [(String, String)]
  var added: [AddedToken] = []
  var preTokenizer: PreTokenizer
  var normalizeNFC = false
  /// Hugging Face `ignore_merges`: a word already in the vocabulary is one token.
  var ignoreMerges = false
  var unknownID: Int? = nil
  /// Whether bytes missing from the vocabulary encode as `unknownID` (else they are dropped).
  var encodeUnknown = true
  var fuseUnknown = false
  var bosID: Int? = nil
  var eosID: Int? = nil
  var paddingID: Int? = nil
}

/// Byte-level BPE (GPT-2 style), built from GGUF metadata or a Hugging Face tokenizer.json.
///
/// Encoding follows Hugging Face `tokenizers`: added tokens are matched first (leftmost-longest),
/// the rest is normalized (NFC where the tokenizer asks for it), pre-tokenized, written in the
/// byte-level alphabet, and merged by rank within each piece. Bytes that the vocabulary lacks are
/// dropped (there is no unknown token in byte-level BPE), as `tokenizers` does. No BOS/EOS is added.
/// Thread-safe: the only mutable state is the word cache, behind a lock.
public final class BPETokenizer: @unchecked Sendable {
  /// The file the tokenizer came from.
  public let source: String
  public let vocabularySize: Int
  public let bosID: Int?
  public let eosID: Int?
  public let unknownID: Int?
  public let paddingID: Int?

  /// id → vocabulary string (byte-level form, or an added token's content).
  private let tokenStrings: [String?]
  private let tokenToID: [String: Int]
  /// Decoded bytes of every id, flattened: id i is bytes[byteStarts[i]..<byteStarts[i+1]].
  private let tokenBytes: [UInt8]
  private let byteStarts: [Int]
  private let isSpecial: [Bool]
  /// The id of each single byte's token, -1 where the vocabulary lacks it.
  private let byteIDs: [Int32]
  /// (left << 32 | right) → (rank << 32 | merged id).
  private let mergeTable: [UInt64: UInt64]
  private let preTokenizer: PreTokenizer
  private let normalizeNFC: Bool
  private let ignoreMerges: Bool
  private let wholeWordIDs: [[UInt8]: Int32]
  private let fuseUnknown: Bool
  private let unknownFallback: Int32?
  private let rawMatcher: AddedTokenMatcher
  private let normalizedMatcher: AddedTokenMatcher
  private let addedTokens: [AddedToken]

  private let cacheLock = NSLock()
  /// Word cache: piece bytes → ids (keys are slices of their own arrays, so that a lookup with a
  /// slice of the text allocates nothing).
  private var cache: [ArraySlice<UInt8>: [Int32]] = [:]
  private static let cacheLimit = 200_000

  init(_ def: BPEDefinition) throws {
    func fail(_ problem: String) -> TokenizerError {
      TokenizerError(file: def.source, problem: problem)
    }
    source = def.source
    var size = def.tokens.count
    for a in def.added {
      guard a.id >= 0 else { throw fail("added token \(quoted(a.content)) has a negative id") }
      // Checked before the tables indexed by id are allocated (and before id + 1 could overflow).
      guard a.id < Self.maxVocabularySize else {
        throw fail(
          "added token \(quoted(a.content)) has id \(a.id), past the limit of \(Self.maxVocabularySize) entries"
        )
      }
      size = max(size, a.id + 1)
    }
    guard size <= Self.maxVocabularySize else {
      throw fail(
        "\(size) tokens, more than the \(Self.maxVocabularySize) a vocabulary may have")
    }
    guard size > 0 else { throw fail("the vocabulary is empty") }
    vocabularySize = size

    var strings = [String?](repeating: nil, count: size)
    var toID: [String: Int] = [:]
    toID.reserveCapacity(size)
    for (id, t) in def.tokens.enumerated() {
      guard let t else { continue }
      strings[id] = t
      toID[t] = id
    }
    var special = [Bool](repeating: false, count: size)
    for a in def.added {
      guard a.id >= 0 else { throw fail("added token \(quoted(a.content)) has a negative id") }
      guard !a.content.isEmpty else { throw fail("added token \(a.id) is empty") }
      if strings[a.id] == nil { strings[a.id] = a.content }
      toID[a.content] = a.id
      special[a.id] = a.special
    }
    tokenStrings = strings
    tokenToID = toID
    isSpecial = special
    addedTokens = def.added

    // Bytes for decoding: the ByteLevel decoder maps alphabet characters back to bytes; added
    // tokens go through it too (their other characters are kept as UTF-8).
    var flat: [UInt8] = []
    var starts: [Int] = [0]
    starts.reserveCapacity(size + 1)
    for s in strings {
      if let s { flat.append(contentsOf: ByteLevel.bytes(of: s)) }
      starts.append(flat.count)
    }
    tokenBytes = flat
    byteStarts = starts

    var bytesIDs = [Int32](repeating: -1, count: 256)
    for b in 0..<256 {
      if let id = toID[String(ByteLevel.byteToChar[b])], id < def.tokens.count {
        bytesIDs[b] = Int32(id)
      }
    }
    byteIDs = bytesIDs

    var table: [UInt64: UInt64] = [:]
    table.reserveCapacity(def.merges.count)
    for (rank, (a, b)) in def.merges.enumerated() {
      guard let ia = toID[a] else {
        throw fail(
          "merge \(rank) (\(quoted(a)) \(quoted(b))) references unknown token \(quoted(a))")
      }
      guard let ib = toID[b] else {
        throw fail(
          "merge \(rank) (\(quoted(a)) \(quoted(b))) references unknown token \(quoted(b))")
      }
      guard let iab = toID[a + b] else {
        throw fail(
          "merge \(rank) (\(quoted(a)) \(quoted(b))) makes \(quoted(a + b)), which is not in the vocabulary"
        )
      }
      table[UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))] =
        UInt64(rank) << 32 | UInt64(UInt32(iab))
    }
    mergeTable = table

    preTokenizer = def.preTokenizer
    normalizeNFC = def.normalizeNFC
    ignoreMerges = def.ignoreMerges
    var whole: [[UInt8]: Int32] = [:]
    if def.ignoreMerges {
      for (id, t) in def.tokens.enumerated() {
        if let t { whole[ByteLevel.bytes(of: t)] = Int32(id) }
      }
    }
    wholeWordIDs = whole
    fuseUnknown = def.fuseUnknown
    unknownFallback = def.encodeUnknown ? def.unknownID.map(Int32.init) : nil
    for (name, id) in [
      ("unknown", def.unknownID), ("BOS", def.bosID), ("EOS", def.eosID),
      ("padding", def.paddingID),
    ] {
      if let id, id < 0 || id >= size {
        throw fail("the \(name) token id \(id) is outside the vocabulary (size \(size))")
      }
    }
    unknownID = def.unknownID
    bosID = def.bosID
    eosID = def.eosID
    paddingID = def.paddingID
    rawMatcher = AddedTokenMatcher(def.added.filter { !$0.normalized })
    normalizedMatcher = AddedTokenMatcher(def.added.filter { $0.normalized })
  }

  // MARK: - Vocabulary

  /// The vocabulary string of an id (byte-level form, e.g. "Ġthe"; added tokens as written).
  public func token(_ id: Int) -> String? {
    id >= 0 && id < tokenStrings.count ? tokenStrings[id] : nil
  }

  /// The id of a vocabulary string (byte-level form) or added token.
  public func id(of token: String) -> Int? { tokenToID[token] }

  /// Whether an id is a special token (control token), as `decode(skipSpecial:)` sees it.
  public func isSpecialToken(_ id: Int) -> Bool { id >= 0 && id < isSpecial.count && isSpecial[id] }

  /// The added tokens (matched literally in text), as (id, content, special).
  public var addedTokenList: [(id: Int, content: String, special: Bool)] {
    addedTokens.map { ($0.id, $0.content, $0.special) }
  }

  /// The raw bytes an id decodes to (an empty array for unknown ids).
  public func bytes(of id: Int) -> ArraySlice<UInt8> {
    guard id >= 0 && id < vocabularySize else { return [] }
    return tokenBytes[byteStarts[id]..<byteStarts[id + 1]]
  }

  // MARK: - Encoding

  /// Token ids of `text`. Added tokens (e.g. `<|im_start|>`) are matched literally; with
  /// `parseSpecial: false` the special ones are treated as plain text.
  public func encode(_ text: String, parseSpecial: Bool = true) -> [Int] {
    var out: [Int] = []
    out.reserveCapacity(text.utf8.count / 3 + 4)
    let bytes = Array(text.utf8)
    for seg in rawMatcher.split(bytes, parseSpecial: parseSpecial) {
      switch seg {
      case .token(let id): out.append(id)
      case .text(let range): encodeNormalizing(bytes[range], parseSpecial: parseSpecial, into: &out)
      }
    }
    return out
  }

  private func encodeNormalizing(
    _ slice: ArraySlice<UInt8>, parseSpecial: Bool, into out: inout [Int]
  ) {
    var bytes = Array(slice)
    if normalizeNFC {
      let s = String(decoding: bytes, as: UTF8.self)
      let n = s.precomposedStringWithCanonicalMapping
      if !n.utf8.elementsEqual(bytes) { bytes = Array(n.utf8) }
    }
    if normalizedMatcher.isEmpty {
      encodePlain(bytes, into: &out)
      return
    }
    for seg in normalizedMatcher.split(bytes, parseSpecial: parseSpecial) {
      switch seg {
      case .token(let id): out.append(id)
      case .text(let range): encodePlain(Array(bytes[range]), into: &out)
      }
    }
  }

  private func encodePlain(_ bytes: [UInt8], into out: inout [Int]) {
    guard !bytes.isEmpty else { return }
    let (buffer, pieces) = preTokenizer.pieces(of: bytes)
    for p in pieces { encodePiece(buffer[p], into: &out) }
  }

  private func encodePiece(_ piece: ArraySlice<UInt8>, into out: inout [Int]) {
    if piece.count == 1 {
      let id = byteIDs[Int(piece[piece.startIndex])]
      if id >= 0 {
        out.append(Int(id))
      } else if let unk = unknownFallback {
        out.append(Int(unk))
      }
      return
    }
    cacheLock.lock()
    let hit = cache[piece]
    cacheLock.unlock()
    if let hit {
      for id in hit { out.append(Int(id)) }
      return
    }
    let key = Array(piece)
    let ids = mergeWord(key)
    cacheLock.lock()
    if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
    cache[key[...]] = ids
    cacheLock.unlock()
    for id in ids { out.append(Int(id)) }
  }

  /// BPE on one piece (its raw bytes).
  func mergeWord(_ bytes: [UInt8]) -> [Int32] {
    if ignoreMerges, let id = wholeWordIDs[bytes] { return [id] }
    var symbols: [Int32] = []
    symbols.reserveCapacity(bytes.count)
    let unk = unknownFallback
    for b in bytes {
      let id = byteIDs[Int(b)]
      if id >= 0 {
        symbols.append(id)
      } else if let unk {
        if !(fuseUnknown && symbols.last == unk) { symbols.append(unk) }
      }
      // else: dropped, as `tokenizers` does for a character missing from the vocabulary
    }
    if symbols.count < 2 { return symbols }
    return symbols.count <= 48 ? mergeSmall(symbols) : mergeLarge(symbols)
  }

  @inline(__always)
  private func lookup(_ a: Int32, _ b: Int32) -> UInt64? {
    mergeTable[UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))]
  }

  /// Repeatedly merges the lowest-ranked adjacent pair (leftmost on ties): O(n²), for short words.
  func mergeSmall(_ input: [Int32]) -> [Int32] {
    var s = input
    // ranks[i]: merge of (s[i], s[i+1]), UInt64.max if none
    var ranks = [UInt64](repeating: .max, count: s.count)
    for i in 0..<(s.count - 1) { ranks[i] = lookup(s[i], s[i + 1]) ?? .max }
    while s.count > 1 {
      var best = UInt64.max
      var at = -1
      for i in 0..<(s.count - 1) where ranks[i] < best {
        best = ranks[i]
        at = i
      }
      if at < 0 { break }
      s[at] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
      s.remove(at: at + 1)
      ranks.remove(at: at + 1)
      ranks[at] = at + 1 < s.count ? (lookup(s[at], s[at + 1]) ?? .max) : .max
      if at > 0 { ranks[at - 1] = lookup(s[at - 1], s[at]) ?? .max }
    }
    return s
  }

  /// The same merges with a priority queue over a linked list (as `tokenizers` does): O(n log n).
  func mergeLarge(_ input: [Int32]) -> [Int32] {
    let n = input.count
    var sym = input
    var prev = (0..<n).map { $0 - 1 }
    var next = (0..<n).map { $0 + 1 < n ? $0 + 1 : -1 }
    var alive = [Bool](repeating: true, count: n)
    // heap of (rank << 32 | pos) with the merged id alongside; min (rank, pos) first
    var heap = MinHeap()
    for i in 0..<(n - 1) {
      if let m = lookup(sym[i], sym[i + 1]) {
        heap.push(key: (m & 0xFFFF_FFFF_0000_0000) | UInt64(i), value: m)
      }
    }
    while let (key, m) = heap.pop() {
      let pos = Int(key & 0xFFFF_FFFF)
      guard alive[pos] else { continue }
      let r = next[pos]
      guard r >= 0, let cur = lookup(sym[pos], sym[r]), cur == m else { continue }
      sym[pos] = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
      alive[r] = false
      next[pos] = next[r]
      if next[r] >= 0 { prev[next[r]] = pos }
      let p = prev[pos]
      if p >= 0, let mm = lookup(sym[p], sym[pos]) {
        heap.push(key: (mm & 0xFFFF_FFFF_0000_0000) | UInt64(p), value: mm)
      }
      let q = next[pos]
      if q >= 0, let mm = lookup(sym[pos], sym[q]) {
        heap.push(key: (mm & 0xFFFF_FFFF_0000_0000) | UInt64(pos), value: mm)
      }
    }
    var out: [Int32] = []
    var i = 0
    while i >= 0 {
      out.append(sym[i])
      i = next[i]
    }
    return out
  }

  // MARK: - Decoding

  /// The text of `ids`: their bytes concatenated, invalid UTF-8 replaced by U+FFFD (as
  /// `tokenizers`' ByteLevel decoder does). Unknown ids are ignored.
  public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
    String(decoding: decodeBytes(ids, skipSpecial: skipSpecial), as: UTF8.self)
  }

  /// The raw bytes of `ids`.
  public func decodeBytes(_ ids: [Int], skipSpecial: Bool = false) -> [UInt8] {
    var bytes: [UInt8] = []
    for id in ids where id >= 0 && id < vocabularySize {
      if skipSpecial && isSpecial[id] { continue }
      bytes.append(contentsOf: tokenBytes[byteStarts[id]..<byteStarts[id + 1]])
    }
    return bytes
  }

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

/// A binary min-heap of (key, value) pairs ordered by key.
struct MinHeap {
  private var keys: [UInt64] = []
  private var values: [UInt64] = []

  mutating func push(key: UInt64, value: UInt64) {
    keys.append(key)
    values.append(value)
    var i = keys.count - 1
    while i > 0 {
      let p = (i - 1) / 2
      if keys[p] <= keys[i] { break }
      keys.swapAt(p, i)
      values.swapAt(p, i)
      i = p
    }
  }

  mutating func pop() -> (UInt64, UInt64)? {
    guard let top = keys.first else { return nil }
    let v = values[0]
    let lastK = keys.removeLast()
    let lastV = values.removeLast()
    if !keys.isEmpty {
      keys[0] = lastK
      values[0] = lastV
      var i = 0
      let n = keys.count
      while true {
        let l = 2 * i + 1
        if l >= n { break }
        var c = l
        if l + 1 < n && keys[l + 1] < keys[l] { c = l + 1 }
        if keys[i] <= keys[c] { break }
        keys.swapAt(i, c)
        values.swapAt(i, c)
        i = c
      }
    }
    return (top, v)
  }
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

func quoted(_ s: String) -> String {
  var out = "\""
  for ch in s.unicodeScalars.prefix(40) {
    switch ch {
    case "\n": out += "\\n"
    case "\t": out += "\\t"
    case "\r": out += "\\r"
    case "\"": out += "\\\""
    default:
      if ch.value < 0x20 || ch.value == 0x7F {
        out += "\\u{\(String(ch.value, radix: 16))}"
      } else {
        out.unicodeScalars.append(ch)
      }
    }
  }
  if s.unicodeScalars.count > 40 { out += "…" }
  return out + "\""
}

import Foundation

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
}

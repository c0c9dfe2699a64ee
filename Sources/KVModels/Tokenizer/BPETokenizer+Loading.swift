import Foundation

// Building a BPETokenizer from a GGUF file's `tokenizer.ggml.*` metadata or a Hugging Face
// tokenizer.json.

extension BPETokenizer {
  /// GGUF token types (llama.cpp `llama_token_type`).
  enum GGUFTokenType: Int {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
  }

  /// The pre-tokenizer of a llama.cpp pre type (`tokenizer.ggml.pre`), nil when not supported.
  static func preTokenizer(ggufPre pre: String) -> PreTokenizer? {
    switch pre {
    case "gpt2":
      return PreTokenizer(steps: [.split(.gpt2)])
    // llama.cpp: regexes ["\p{N}", gpt2]; Hugging Face: Sequence[Digits(individual_digits),
    // ByteLevel(use_regex)]. StarCoder's tokenizer (and SmolLM's, derived from it) is built so.
    case "smollm", "starcoder":
      return PreTokenizer(steps: [.digits(individual: true), .split(.gpt2)])
    case "llama3", "llama-bpe":
      return PreTokenizer(steps: [.split(.cl100k(maxDigits: 3))])
    case "qwen2":
      return PreTokenizer(steps: [.split(.cl100k(maxDigits: 1))])
    default:
      return nil
    }
  }

  static let supportedGGUFPreTypes = [
    "gpt2", "smollm", "starcoder", "llama-bpe", "llama3", "qwen2",
  ]

  /// A tokenizer from a GGUF file's metadata: `tokenizer.ggml.model` "gpt2" with `.tokens`,
  /// `.merges`, `.token_type`, `.pre`, and the bos/eos/unknown/padding ids.
  /// CONTROL tokens are special added tokens; USER_DEFINED ones are matched literally too.
  public convenience init(gguf: GGUFFile) throws {
    let file = gguf.path
    let meta = gguf.metadata
    func fail(_ problem: String) -> TokenizerError { TokenizerError(file: file, problem: problem) }
    guard let model = meta["tokenizer.ggml.model"]?.string else {
      throw fail("no tokenizer.ggml.model in the metadata (no tokenizer in this file)")
    }
    guard model == "gpt2" else {
      throw fail(
        "tokenizer.ggml.model is \(quoted(model)); only \"gpt2\" (byte-level BPE) is supported")
    }
    guard let tokens = meta["tokenizer.ggml.tokens"]?.stringArray else {
      throw fail("tokenizer.ggml.tokens is missing or not an array of strings")
    }
    guard let mergeStrings = meta["tokenizer.ggml.merges"]?.stringArray else {
      throw fail("tokenizer.ggml.merges is missing or not an array of strings")
    }
    let types: [Int]
    if let v = meta["tokenizer.ggml.token_type"] {
      guard let t = v.intArray, t.count == tokens.count else {
        throw fail("tokenizer.ggml.token_type is not an array of \(tokens.count) integers")
      }
      types = t
    } else {
      types = [Int](repeating: GGUFTokenType.normal.rawValue, count: tokens.count)
    }
    // llama.cpp falls back to a "default" pre type with its own regexes when this is missing;
    // kvlab does not guess.
    guard let pre = meta["tokenizer.ggml.pre"]?.string else {
      throw fail(
        "tokenizer.ggml.pre is missing (an old conversion?); supported pre types: "
          + Self.supportedGGUFPreTypes.joined(separator: ", "))
    }
    guard let preTokenizer = Self.preTokenizer(ggufPre: pre) else {
      throw fail(
        "tokenizer.ggml.pre \(quoted(pre)) is not supported (supported: "
          + Self.supportedGGUFPreTypes.joined(separator: ", ") + ")")
    }
    var merges: [(String, String)] = []
    merges.reserveCapacity(mergeStrings.count)
    for (rank, m) in mergeStrings.enumerated() {
      let parts = m.split(separator: " ", omittingEmptySubsequences: false)
      guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
        throw fail("merge \(rank) \(quoted(m)) is not two tokens separated by one space")
      }
      merges.append((String(parts[0]), String(parts[1])))
    }
    var added: [AddedToken] = []
    for (id, t) in types.enumerated() {
      switch GGUFTokenType(rawValue: t) {
      case .control: added.append(AddedToken(id: id, content: tokens[id], special: true))
      case .userDefined: added.append(AddedToken(id: id, content: tokens[id], special: false))
      default: break
      }
    }
    func id(_ key: String) throws -> Int? {
      guard let v = meta[key] else { return nil }
      guard let i = v.int else { throw fail("\(key) is not an integer") }
      return i
    }
    var def = BPEDefinition(
      source: file, tokens: tokens, merges: merges, added: added, preTokenizer: preTokenizer)
    // Llama 3's tokenizer.json sets ignore_merges (llama.cpp does the same for this pre type).
    def.ignoreMerges = pre == "llama3" || pre == "llama-bpe"
    def.bosID = try id("tokenizer.ggml.bos_token_id")
    def.eosID = try id("tokenizer.ggml.eos_token_id")
    def.paddingID = try id("tokenizer.ggml.padding_token_id")
    // Reported only: byte-level BPE does not encode with it (SmolLM2 names <|endoftext|>); as in
    // `tokenizers` with unk_token null, a byte missing from the vocabulary is dropped.
    def.unknownID = try id("tokenizer.ggml.unknown_token_id")
    def.encodeUnknown = false
    try self.init(def)
  }

  /// A tokenizer from a Hugging Face tokenizer.json: `model.type` BPE with `vocab` and `merges`
  /// ("a b" strings or ["a", "b"] pairs), `added_tokens`, normalizer null or NFC, pre_tokenizer
  /// ByteLevel or a Sequence of Split (GPT-2, Llama 3 or Qwen2 patterns) / Digits / ByteLevel,
  /// decoder ByteLevel. The post-processor is not applied (encode adds no BOS/EOS).
  public convenience init(tokenizerJSON path: String) throws {
    func fail(_ problem: String) -> TokenizerError { TokenizerError(file: path, problem: problem) }
    let data: Data
    do {
      data = Data(try BoundedFile.contents(path, limit: BoundedFile.jsonLimit))
    } catch let f as BoundedFile.Failure {
      throw fail(
        FileManager.default.fileExists(atPath: path)
          ? f.message : "cannot read the file (no such file)")
    }
    let root: [String: Any]
    do {
      guard let r = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw fail("not a JSON object at the top level")
      }
      root = r
    } catch let e as TokenizerError {
      throw e
    } catch {
      // Foundation's localized text says only "not in the correct format"; the debug
      // description says what and where.
      let e = error as NSError
      let why = e.userInfo[NSDebugDescriptionErrorKey] as? String ?? e.localizedDescription
      throw fail("invalid JSON (\(why))")
    }
    try self.init(Self.definition(tokenizerJSON: root, source: path))
  }

  /// The most entries (the highest id + 1) a vocabulary may have: 16,777,216, far beyond any
  /// published tokenizer (~256K), and a table of that many strings still fits in memory. A file
  /// claiming more (an id of 2^40) is refused before anything is allocated for it.
  public static let maxVocabularySize = 1 << 24

  /// A JSON number that is a whole number an Int holds exactly (JSONSerialization gives
  /// NSNumber; a double like 1e300 or 0.5 is not an id, and converting it must not trap).
  static func jsonInt(_ value: Any) -> Int? {
    guard let n = value as? NSNumber else { return nil }
    let d = n.doubleValue
    guard d.isFinite, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
    return n.intValue
  }

  static func definition(tokenizerJSON root: [String: Any], source path: String) throws
    -> BPEDefinition
  {
    func fail(_ problem: String) -> TokenizerError { TokenizerError(file: path, problem: problem) }
    guard let model = root["model"] as? [String: Any] else { throw fail("no \"model\" object") }
    let type = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "?")
    guard type == "BPE" else {
      throw fail("model.type is \(quoted(type)); only BPE is supported")
    }
    guard let vocab = model["vocab"] as? [String: Any] else {
      throw fail("model.vocab is missing or not an object")
    }
    guard let mergeList = model["merges"] as? [Any] else {
      throw fail("model.merges is missing or not an array")
    }
    if let prefix = model["continuing_subword_prefix"] as? String, !prefix.isEmpty {
      throw fail("model.continuing_subword_prefix \(quoted(prefix)) is not supported")
    }
    if let suffix = model["end_of_word_suffix"] as? String, !suffix.isEmpty {
      throw fail("model.end_of_word_suffix \(quoted(suffix)) is not supported")
    }
    if model["byte_fallback"] as? Bool == true {
      throw fail("model.byte_fallback is not supported (not a byte-level BPE)")
    }

    var maxID = -1
    var pairs: [(String, Int)] = []
    guard vocab.count <= maxVocabularySize else {
      throw fail(
        "model.vocab has \(vocab.count) entries, more than the \(maxVocabularySize) a vocabulary may have"
      )
    }
    pairs.reserveCapacity(vocab.count)
    for (token, value) in vocab {
      guard let id = jsonInt(value), id >= 0 else {
        throw fail("model.vocab[\(quoted(token))] is not a non-negative integer id")
      }
      // The table is indexed by id: an id past the limit would claim that many entries.
      guard id < maxVocabularySize else {
        throw fail(
          "model.vocab[\(quoted(token))] has id \(id): a vocabulary of \(id + 1) entries, more than the limit of \(maxVocabularySize)"
        )
      }
      pairs.append((token, id))
      maxID = max(maxID, id)
    }
    guard maxID >= 0 else { throw fail("model.vocab is empty") }
    var tokens = [String?](repeating: nil, count: maxID + 1)
    for (token, id) in pairs {
      if let other = tokens[id] {
        throw fail("id \(id) is given to both \(quoted(other)) and \(quoted(token))")
      }
      tokens[id] = token
    }

    var merges: [(String, String)] = []
    merges.reserveCapacity(mergeList.count)
    for (rank, m) in mergeList.enumerated() {
      if let s = m as? String {
        let parts = s.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
          throw fail("merge \(rank) \(quoted(s)) is not two tokens separated by one space")
        }
        merges.append((String(parts[0]), String(parts[1])))
      } else if let p = m as? [Any], p.count == 2, let a = p[0] as? String, let b = p[1] as? String
      {
        merges.append((a, b))
      } else {
        throw fail("merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
      }
    }

    var added: [AddedToken] = []
    for (i, item) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
      guard let o = item as? [String: Any], let id = o["id"].flatMap(jsonInt),
        let content = o["content"] as? String
      else { throw fail("added_tokens[\(i)] has no integer id and string content") }
      added.append(
        AddedToken(
          id: id, content: content, special: o["special"] as? Bool ?? false,
          lstrip: o["lstrip"] as? Bool ?? false, rstrip: o["rstrip"] as? Bool ?? false,
          singleWord: o["single_word"] as? Bool ?? false,
          normalized: o["normalized"] as? Bool ?? false))
    }

    let nfc = try normalizer(root["normalizer"], fail)
    var steps: [PreTokenizerStep] = []
    var byteLevel = false
    try preTokenizerSteps(root["pre_tokenizer"], into: &steps, byteLevel: &byteLevel, fail)
    guard byteLevel else {
      throw fail("pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer")
    }
    if let decoder = root["decoder"] as? [String: Any] {
      let t = decoder["type"] as? String ?? "?"
      guard t == "ByteLevel" else {
        throw fail("decoder type \(quoted(t)) is not supported (only ByteLevel)")
      }
    }

    var def = BPEDefinition(
      source: path, tokens: tokens, merges: merges, added: added,
      preTokenizer: PreTokenizer(steps: steps))
    def.normalizeNFC = nfc
    def.ignoreMerges = model["ignore_merges"] as? Bool ?? false
    def.fuseUnknown = model["fuse_unk"] as? Bool ?? false
    if let unk = model["unk_token"] as? String {
      guard let id = vocab[unk].flatMap(jsonInt) else {
        throw fail("model.unk_token \(quoted(unk)) is not in the vocabulary")
      }
      def.unknownID = id
    }
    // BOS/EOS/padding: named in tokenizer_config.json beside the file, when there is one.
    let config = URL(fileURLWithPath: path).deletingLastPathComponent()
      .appendingPathComponent("tokenizer_config.json")
    if let bytes = try? BoundedFile.contents(config.path, limit: BoundedFile.jsonLimit),
      case let data = Data(bytes),
      let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    {
      func tokenID(_ key: String) -> Int? {
        let v = o[key]
        let name = v as? String ?? (v as? [String: Any])?["content"] as? String
        return name.flatMap { n in added.first { $0.content == n }?.id ?? vocab[n].flatMap(jsonInt)
        }
      }
      def.bosID = tokenID("bos_token")
      def.eosID = tokenID("eos_token")
      def.paddingID = tokenID("pad_token")
    }
    return def
  }

  private static func normalizer(_ node: Any?, _ fail: (String) -> TokenizerError) throws -> Bool {
    guard let node, !(node is NSNull) else { return false }
    guard let o = node as? [String: Any], let t = o["type"] as? String else {
      throw fail("normalizer is not an object with a type")
    }
    switch t {
    case "NFC": return true
    case "Sequence":
      var nfc = false
      for n in (o["normalizers"] as? [Any]) ?? [] { nfc = try normalizer(n, fail) || nfc }
      return nfc
    default:
      throw fail("normalizer \(quoted(t)) is not supported (only NFC)")
    }
  }

  private static func preTokenizerSteps(
    _ node: Any?, into steps: inout [PreTokenizerStep], byteLevel: inout Bool,
    _ fail: (String) -> TokenizerError
  ) throws {
    guard let node, !(node is NSNull) else { return }
    guard let o = node as? [String: Any], let t = o["type"] as? String else {
      throw fail("pre_tokenizer is not an object with a type")
    }
    switch t {
    case "Sequence":
      for p in (o["pretokenizers"] as? [Any]) ?? [] {
        try preTokenizerSteps(p, into: &steps, byteLevel: &byteLevel, fail)
      }
    case "ByteLevel":
      byteLevel = true
      if o["add_prefix_space"] as? Bool ?? true { steps.append(.prefixSpace) }
      if o["use_regex"] as? Bool ?? true { steps.append(.split(.gpt2)) }
    case "Digits":
      steps.append(.digits(individual: o["individual_digits"] as? Bool ?? false))
    case "Split":
      let pattern = o["pattern"] as? [String: Any]
      guard let regex = pattern?["Regex"] as? String else {
        throw fail("pre_tokenizer Split: only Regex patterns are supported")
      }
      let behavior = o["behavior"] as? String ?? "?"
      guard behavior == "Isolated", o["invert"] as? Bool ?? false == false else {
        throw fail(
          "pre_tokenizer Split: behavior \(quoted(behavior)) (invert \(o["invert"] ?? "?")) is not supported (only Isolated)"
        )
      }
      guard let p = SplitPattern(regex: regex) else {
        throw fail(
          "pre_tokenizer Split: pattern \(quoted(regex)) is not one of the supported GPT-2, Llama 3 or Qwen2 patterns"
        )
      }
      steps.append(.split(p))
    default:
      throw fail("pre_tokenizer \(quoted(t)) is not supported (ByteLevel, Digits, Split, Sequence)")
    }
  }
}

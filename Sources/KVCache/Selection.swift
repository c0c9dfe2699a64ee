import KVModels

/// Options that apply on top of any policy.
public struct RetentionOptions: Equatable, Sendable {
  /// Text tokens (modality `.text`) are never evicted.
  public var protectText: Bool
  /// System-prompt tokens (`TokenOrigin.isSystem`) are never evicted.
  public var protectSystem: Bool
  /// Each frame / tile / image keeps at least this many entries (when it has them), before the
  /// rest is filled by preference.
  public var quota: Quota?

  public struct Quota: Equatable, Sendable {
    public enum Unit: String, Sendable, CaseIterable { case frame, tile, image }
    public var unit: Unit
    public var minimum: Int
    public init(unit: Unit, minimum: Int) {
      self.unit = unit
      self.minimum = minimum
    }
  }

  public init(protectText: Bool = false, protectSystem: Bool = false, quota: Quota? = nil) {
    self.protectText = protectText
    self.protectSystem = protectSystem
    self.quota = quota
  }
}

enum Selection {
  /// Entries that must survive: the policy's plus the protected ones.
  static func mandatory(
    _ policy: any EvictionPolicy, _ entries: EntryList, _ options: RetentionOptions
  ) -> [Bool] {
    var keep = policy.mustKeep(entries)
    if options.protectText || options.protectSystem {
      for (i, m) in entries.meta.enumerated()
      where (options.protectText && m.isText) || (options.protectSystem && m.isSystem) {
        keep[i] = true
      }
    }
    return keep
  }

  struct GroupKey: Hashable {
    var input: Int32, image: Int32, a: Int32
  }

  /// Quota group of each entry (nil: in no group).
  static func groups(_ meta: [EntryMeta], _ unit: RetentionOptions.Quota.Unit) -> [GroupKey?] {
    meta.map { m in
      switch unit {
      case .frame: return m.frame >= 0 ? GroupKey(input: m.input, image: m.image, a: m.frame) : nil
      case .tile: return m.tile >= 0 ? GroupKey(input: m.input, image: m.image, a: m.tile) : nil
      case .image: return m.image >= 0 ? GroupKey(input: m.input, image: m.image, a: -1) : nil
      }
    }
  }

  /// The survivors among `count` candidates: all mandatory ones, then quota picks (in order of
  /// preference within each group), then the rest in order of preference, up to `budget`.
  /// Returns a keep mask. If the mandatory entries alone exceed the budget (the cache checks
  /// this beforehand and refuses), the most preferred of them are kept.
  static func select(
    budget: Int, mandatory: [Bool], preference: [Int], groups: [GroupKey?]?, quota: Int
  ) -> [Bool] {
    let n = mandatory.count
    if n <= budget { return Array(repeating: true, count: n) }
    var keep = [Bool](repeating: false, count: n)
    var kept = 0
    let mandatoryCount = mandatory.lazy.filter { $0 }.count
    if mandatoryCount <= budget {
      for i in 0..<n where mandatory[i] { keep[i] = true }
      kept = mandatoryCount
    } else {
      for i in preference where mandatory[i] && kept < budget {
        keep[i] = true
        kept += 1
      }
      return keep
    }
    if let groups, quota > 0 {
      var have: [GroupKey: Int] = [:]
      for i in 0..<n where keep[i] { if let g = groups[i] { have[g, default: 0] += 1 } }
      for i in preference where kept < budget && !keep[i] {
        guard let g = groups[i], have[g, default: 0] < quota else { continue }
        keep[i] = true
        kept += 1
        have[g, default: 0] += 1
      }
    }
    for i in preference where kept < budget && !keep[i] {
      keep[i] = true
      kept += 1
    }
    return keep
  }
}

/// One option of a policy: name, type, default and help. The REPL builds its `policy NAME`
/// forms (parsing, `help`, completion) from these, and `PolicyCatalog.make` validates with them.
public struct PolicyOptionSpec: Sendable {
  public enum Kind: Sendable, Equatable {
    /// A whole number in the range; `odd`: odd values only.
    case integer(ClosedRange<Int>, odd: Bool)
    /// A finite number in the range.
    case number(ClosedRange<Double>)
    /// One of fixed words.
    case choice([String])
  }
  public let name: String
  public let kind: Kind
  /// The value when the option is not given, in canonical form; nil when the policy derives it
  /// (H2O's recent window: half the budget), which `help` explains.
  public let defaultValue: String?
  public let help: String

  public init(_ name: String, _ kind: Kind, default defaultValue: String?, help: String) {
    self.name = name
    self.kind = kind
    self.defaultValue = defaultValue
    self.help = help
  }
}

/// A policy as the catalog describes it: its name (and accepted aliases), what it does, its
/// options, and how to build it from validated option values.
public struct PolicySpec: Sendable {
  public let name: String
  public let aliases: [String]
  /// One line, for lists.
  public let summary: String
  /// One paragraph.
  public let help: String
  public let options: [PolicyOptionSpec]
  /// Whether it scores with attention (the model's queries): it needs queries seen since it was
  /// set before it can rank what the cache holds (see `BudgetedCache.scoringGap`).
  public let usesAttention: Bool
  let build: @Sendable (PolicyValues) -> any EvictionPolicy

  public func option(_ name: String) -> PolicyOptionSpec? { options.first { $0.name == name } }
}

/// Validated option values handed to a spec's builder (defaults applied).
struct PolicyValues {
  var integers: [String: Int] = [:]
  var numbers: [String: Double] = [:]
  var words: [String: String] = [:]
  func int(_ key: String) -> Int? { integers[key] }
  func number(_ key: String) -> Double? { numbers[key] }
  func word(_ key: String) -> String? { words[key] }
}

/// The policies by REPL name, with `key=value` options: what `policy snapkv window=32` builds.
public enum PolicyCatalog {
  public static let specs: [PolicySpec] = [
    PolicySpec(
      name: "snapkv", aliases: [],
      summary: "attention from an observation window of recent queries",
      help: """
        SnapKV: each entry scores the attention the last WINDOW queries pay it (softmax over \
        cache and block, causal), averaged over the window, pooled over neighbouring entries \
        with an average kernel of KERNEL, and averaged over the query heads of a KV head; the \
        window's own tokens are always kept. In block-wise prefill the window is the last \
        queries the layer has seen.
        """,
      options: [
        PolicyOptionSpec(
          "window", .integer(1...65536, odd: false), default: "32",
          help: "recent queries that score (always kept)"),
        PolicyOptionSpec(
          "kernel", .integer(1...255, odd: true), default: "5",
          help: "width of the pooling over neighbours (odd)"),
        PolicyOptionSpec(
          "pooling", .choice(["avg", "max"]), default: "avg",
          help: "how neighbours pool: average (kvpress, the paper) or max"),
      ], usesAttention: true,
      build: {
        SnapKVPolicy(
          window: $0.int("window")!, kernel: $0.int("kernel")!,
          pooling: $0.word("pooling") == "max" ? .max : .average)
      }),
    PolicySpec(
      name: "keydiff", aliases: [], summary: "keep the most distinctive keys (query-agnostic)",
      help: """
        KeyDiff: score = -cos(k, mean of the normalised keys) over cache and block; the keys \
        least like the average are kept. Needs no queries.
        """,
      options: [], usesAttention: false, build: { _ in KeyDiffPolicy() }),
    PolicySpec(
      name: "knorm", aliases: [], summary: "keep the keys of smallest norm (query-agnostic)",
      help: "K-norm: score = -||k||; low-norm keys tend to draw attention, so they are kept.",
      options: [], usesAttention: false, build: { _ in KNormPolicy() }),
    PolicySpec(
      name: "vnorm", aliases: ["van", "valuenorm"],
      summary: "keep the values of largest norm (InfiniPot-V's VaN)",
      help: "Value norm (VaN, from InfiniPot-V): score = ||v||; the largest values are kept.",
      options: [], usesAttention: false, build: { _ in ValueNormPolicy() }),
    PolicySpec(
      name: "random", aliases: [], summary: "a seeded random choice (a baseline)",
      help: """
        Random: each (layer, KV head, position) draws a fixed score from SEED, so what is kept \
        depends on the seed and the budget, not on the block boundaries.
        """,
      options: [
        PolicyOptionSpec(
          "seed", .integer(0...4_294_967_295, odd: false), default: "0", help: "random seed")
      ], usesAttention: false, build: { RandomPolicy(seed: UInt64($0.int("seed")!)) }),
    PolicySpec(
      name: "streaming", aliases: ["streamingllm"], summary: "attention sinks plus the most recent",
      help: """
        StreamingLLM: the first SINKS tokens (attention sinks) and the most recent ones are \
        kept; everything in between leaves, oldest first.
        """,
      options: [
        PolicyOptionSpec(
          "sinks", .integer(0...65536, odd: false), default: "4",
          help: "first tokens always kept (attention sinks)")
      ], usesAttention: false, build: { StreamingLLMPolicy(sinks: $0.int("sinks")!) }),
    PolicySpec(
      name: "h2o", aliases: [], summary: "heavy hitters: accumulated attention + a recent window",
      help: """
        H2O: each entry accumulates the attention it receives from every query after it \
        enters; the heaviest are kept, plus the RECENT most recent entries (by default half the \
        budget).
        """,
      options: [
        PolicyOptionSpec(
          "recent", .integer(0...65536, odd: false), default: nil,
          help: "most recent entries always kept (default: half the budget)")
      ], usesAttention: true, build: { H2OPolicy(recent: $0.int("recent")) }),
    PolicySpec(
      name: "infinipot", aliases: ["infinipotv", "infinipot-v"],
      summary: "video: recent frames, temporal redundancy, value norm",
      help: """
        InfiniPot-V (streaming video): tokens before the video stay; the most recent frames \
        (up to RECENT of the budget) stay; of the past frames, about ALPHA of the free slots go \
        to the tokens least redundant with the same patch in the recent frames (TaR), and value \
        norm fills the rest. Without video it reduces to value norm.
        """,
      options: [
        PolicyOptionSpec(
          "alpha", .number(0...1), default: "0.5",
          help: "share of the free slots chosen by temporal redundancy"),
        PolicyOptionSpec(
          "recent", .number(0...1), default: "0.25",
          help: "share of the budget for the most recent frames"),
      ], usesAttention: false,
      build: { InfiniPotVPolicy(alpha: $0.number("alpha")!, recent: $0.number("recent")!) }),
    PolicySpec(
      name: "oracle", aliases: [],
      summary: "synthetic inputs: keep the target's tokens, fill with another policy",
      help: """
        Oracle (an upper bound, for synthetic inputs only): the visual tokens whose patch \
        covers any pixel of the target's bounding box are kept first, in every tile, frame and \
        global image they appear in; FILL scores everything and fills the rest of the budget. \
        The targets come from the last `feed synthetic`: the needle (needle-image, in the \
        frames that show it for needle-video), every shape of the counted kind (count), the \
        shape asked about (attribute). When the targets alone exceed the budget, those FILL \
        prefers stay.
        """,
      options: [
        PolicyOptionSpec(
          "fill", .choice(oracleFills), default: "keydiff",
          help: "the policy that scores everything and fills the rest of the budget")
      ], usesAttention: false,
      build: { values in
        let fill = values.word("fill") ?? "keydiff"
        // Only names of this catalog reach here (checked against `oracleFills`), with their
        // defaults, so the build cannot fail; KeyDiff is what an impossible failure falls back to.
        return OraclePolicy(fill: (try? PolicyCatalog.make(fill)) ?? KeyDiffPolicy())
      }),
  ]

  /// The policies an oracle can fill with: every other one.
  static let oracleFills = [
    "keydiff", "snapkv", "knorm", "vnorm", "random", "streaming", "h2o", "infinipot",
  ]

  public static var names: [String] { specs.map(\.name) }
  /// The options each policy takes (for errors and completion).
  public static var optionNames: [String: [String]] {
    Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0.options.map(\.name)) })
  }

  /// The spec of a policy by name or alias (any case).
  public static func spec(named name: String) -> PolicySpec? {
    let n = name.lowercased()
    return specs.first { $0.name == n || $0.aliases.contains(n) }
  }

  public static func make(_ name: String, options: [String: String] = [:]) throws
    -> any EvictionPolicy
  {
    guard let spec = spec(named: name) else {
      throw CacheError.invalidPolicy(
        "unknown policy '\(name)'; known: \(names.joined(separator: ", "))")
    }
    let known = spec.options.map(\.name)
    if let extra = options.keys.filter({ !known.contains($0) }).sorted().first {
      throw CacheError.invalidPolicy(
        "\(spec.name): unknown option '\(extra)'"
          + (known.isEmpty ? " (it takes none)" : "; options: \(known.joined(separator: ", "))"))
    }
    var values = PolicyValues()
    for o in spec.options {
      guard let text = options[o.name] ?? o.defaultValue else { continue }
      switch o.kind {
      case .integer(let range, let odd):
        guard let v = Int(text), range.contains(v) else {
          throw CacheError.invalidPolicy(
            "\(spec.name): \(o.name) must be a whole number in \(range.lowerBound)...\(range.upperBound), got '\(text)'"
          )
        }
        guard !odd || v % 2 == 1 else {
          throw CacheError.invalidPolicy("\(spec.name): \(o.name) must be odd, got \(v)")
        }
        values.integers[o.name] = v
      case .number(let range):
        guard let v = Double(text), v.isFinite, range.contains(v) else {
          throw CacheError.invalidPolicy(
            "\(spec.name): \(o.name) must be a number in \(Self.format(range.lowerBound))...\(Self.format(range.upperBound)), got '\(text)'"
          )
        }
        values.numbers[o.name] = v
      case .choice(let words):
        guard let w = words.first(where: { $0 == text.lowercased() }) else {
          throw CacheError.invalidPolicy(
            "\(spec.name): \(o.name) must be one of \(words.joined(separator: ", ")), got '\(text)'"
          )
        }
        values.words[o.name] = w
      }
    }
    return spec.build(values)
  }

  static func format(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
  }
}

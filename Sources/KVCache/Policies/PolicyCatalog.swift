/// A policy the catalog can build by name: a small value type whose stored properties are its
/// options. Each option is declared once, as a property with its default; `fields` names it
/// for the REPL (name, range, help) through a key path, and everything else — `help policy
/// NAME`, validation, Tab completion, the printed description, building from `key=value` — is
/// derived from those two (as kvpress declares a press as a dataclass whose fields are its
/// options).
public protocol CatalogPolicy: EvictionPolicy {
  /// The policy with every option at its default.
  init()
  /// Its name, aliases and help.
  static var about: PolicyAbout { get }
  /// Its options, in the order `help` lists and the description prints them.
  static var fields: [PolicyField<Self>] { get }
}

extension CatalogPolicy {
  public var name: String { Self.about.name }
  public var options: [(String, String)] {
    Self.fields.compactMap { f in f.shown(self).map { (f.name, $0) } }
  }
}

/// What `help policy NAME` and the policy list say of a policy.
public struct PolicyAbout: Sendable {
  public let name: String
  public let aliases: [String]
  /// One line, for lists.
  public let summary: String
  /// One paragraph.
  public let help: String

  public init(_ name: String, aliases: [String] = [], summary: String, help: String) {
    self.name = name
    self.aliases = aliases
    self.summary = summary
    self.help = help
  }
}

/// One option of a catalog policy: the property it sets and how it is typed, validated and
/// printed.
public struct PolicyField<P: CatalogPolicy> {
  public let name: String
  let kind: PolicyOptionSpec.Kind
  let help: String
  /// The property's value as text; nil when unset (an optional the policy derives).
  let value: (P) -> String?
  /// Not printed at its default (a choice added later: descriptions recorded before it stay).
  let quietAtDefault: Bool
  /// Sets the property from a validated text.
  let set: (inout P, String) -> Void

  /// A whole number (any integer type) in `range`; `odd`: odd values only.
  public static func integer<I: FixedWidthInteger>(
    _ name: String, _ path: WritableKeyPath<P, I>, _ range: ClosedRange<Int>, odd: Bool = false,
    help: String
  ) -> Self {
    Self(
      name: name, kind: .integer(range, odd: odd), help: help, value: { "\($0[keyPath: path])" },
      quietAtDefault: false, set: { p, text in p[keyPath: path] = I(Int(text)!) })
  }

  /// A whole number that may be left unset (the policy derives it; `help` says how).
  public static func integer(
    _ name: String, _ path: WritableKeyPath<P, Int?>, _ range: ClosedRange<Int>, help: String
  ) -> Self {
    Self(
      name: name, kind: .integer(range, odd: false), help: help,
      value: { $0[keyPath: path].map { "\($0)" } }, quietAtDefault: false,
      set: { p, text in p[keyPath: path] = Int(text)! })
  }

  /// A finite number in `range`.
  public static func number(
    _ name: String, _ path: WritableKeyPath<P, Double>, _ range: ClosedRange<Double>, help: String
  ) -> Self {
    Self(
      name: name, kind: .number(range), help: help, value: { "\($0[keyPath: path])" },
      quietAtDefault: false, set: { p, text in p[keyPath: path] = Double(text)! })
  }

  /// One of an enumeration's raw values; printed only when not the default, unless `quiet` is
  /// false (a choice that says what the policy is, as a structure policy's base score).
  public static func choice<E: RawRepresentable & CaseIterable>(
    _ name: String, _ path: WritableKeyPath<P, E>, help: String, quiet: Bool = true
  ) -> Self where E.RawValue == String {
    Self(
      name: name, kind: .choice(E.allCases.map(\.rawValue)), help: help,
      value: { $0[keyPath: path].rawValue }, quietAtDefault: quiet,
      set: { p, text in p[keyPath: path] = E(rawValue: text)! })
  }

  /// Another catalog policy by name, at its defaults (the oracle's fill).
  public static func policy(
    _ name: String, _ path: WritableKeyPath<P, any EvictionPolicy>, among names: [String],
    help: String
  ) -> Self {
    Self(
      name: name, kind: .choice(names), help: help, value: { $0[keyPath: path].name },
      quietAtDefault: false,
      set: { p, text in
        // Only names of the catalog reach here (validated against `names`), at their defaults,
        // so making one cannot fail.
        if let made = try? PolicyCatalog.make(text) { p[keyPath: path] = made }
      })
  }

  /// The value `key=value` prints for `policy`, nil for none.
  func shown(_ policy: P) -> String? {
    let v = value(policy)
    return quietAtDefault && v == value(P()) ? nil : v
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
  /// Builds the policy from validated `name: text` values (the others at their defaults).
  let build: @Sendable ([String: String]) -> any EvictionPolicy

  init<P: CatalogPolicy>(_ type: P.Type) {
    let standard = P()
    name = P.about.name
    aliases = P.about.aliases
    summary = P.about.summary
    help = P.about.help
    options = P.fields.map {
      PolicyOptionSpec($0.name, $0.kind, default: $0.value(standard), help: $0.help)
    }
    build = { values in
      var p = P()
      for f in P.fields { if let text = values[f.name] { f.set(&p, text) } }
      return p
    }
  }

  public func option(_ name: String) -> PolicyOptionSpec? { options.first { $0.name == name } }
}

/// The policies by REPL name, with `key=value` options: what `policy snapkv window=32` builds.
/// A new policy is its own file (a `CatalogPolicy`) and one line here.
public enum PolicyCatalog {
  public static let specs: [PolicySpec] = [
    PolicySpec(SnapKVPolicy.self),
    PolicySpec(KeyDiffPolicy.self),
    PolicySpec(KNormPolicy.self),
    PolicySpec(ValueNormPolicy.self),
    PolicySpec(RandomPolicy.self),
    PolicySpec(StreamingLLMPolicy.self),
    PolicySpec(H2OPolicy.self),
    PolicySpec(InfiniPotVPolicy.self),
    PolicySpec(GridPoolPolicy.self),
    PolicySpec(UnitFloorsPolicy.self),
    PolicySpec(OraclePolicy.self),
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
    var values: [String: String] = [:]
    for o in spec.options {
      guard let text = options[o.name] else { continue }
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
        values[o.name] = String(v)
      case .number(let range):
        guard let v = Double(text), v.isFinite, range.contains(v) else {
          throw CacheError.invalidPolicy(
            "\(spec.name): \(o.name) must be a number in \(Self.format(range.lowerBound))...\(Self.format(range.upperBound)), got '\(text)'"
          )
        }
        values[o.name] = String(v)
      case .choice(let words):
        guard let w = words.first(where: { $0 == text.lowercased() }) else {
          throw CacheError.invalidPolicy(
            "\(spec.name): \(o.name) must be one of \(words.joined(separator: ", ")), got '\(text)'"
          )
        }
        values[o.name] = w
      }
    }
    return spec.build(values)
  }

  static func format(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
  }
}

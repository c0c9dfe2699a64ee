/// What a value may be. One description drives parsing, validation, `help`, and completion.
public enum ValueType: Sendable {
  /// Any text.
  case text
  /// A file path, resolved against the folder of the script being replayed. `extensions`
  /// (without dots, e.g. ["npy"]) restrict it, and narrow completion; empty = any file.
  case path(extensions: [String])
  /// A whole number in the range.
  case int(ClosedRange<Int>)
  /// A finite decimal number in the range.
  case number(ClosedRange<Double>)
  /// One of fixed words (matched without regard to case, stored as written here).
  case choice([String])
  /// `on` or `off`; as a flag, `--name` means `on`.
  case toggle
  /// A command noun (for `help`).
  case command
  /// A verb of the command named by the previous argument (for `help`).
  case verb

  /// The words completion offers, when the set is fixed.
  var fixedChoices: [String]? {
    switch self {
    case .choice(let words): return words
    case .toggle: return ["on", "off"]
    default: return nil
    }
  }
}

/// A named option: `name=value`, or `--name` for toggles.
public struct Option: Sendable {
  public var name: String
  public var type: ValueType
  /// The value used when the option is not given (already in canonical form); nil = none.
  public var defaultValue: String?
  public var required: Bool
  /// What the value stands for in usage lines (`N`, `FILE.npy`); derived from the type if nil.
  public var placeholder: String?
  public var help: String

  public init(
    _ name: String, _ type: ValueType, default defaultValue: String? = nil,
    required: Bool = false, placeholder: String? = nil, help: String
  ) {
    self.name = name
    self.type = type
    self.defaultValue = defaultValue
    self.required = required
    self.placeholder = placeholder
    self.help = help
  }

  /// `max=N`, `rss=on|off`, `--check`.
  var usage: String {
    if case .toggle = type, defaultValue == "off" || defaultValue == nil { return "--\(name)" }
    return "\(name)=\(valuePlaceholder)"
  }

  var valuePlaceholder: String {
    if let placeholder { return placeholder }
    switch type {
    case .text: return "TEXT"
    case .path(let ext): return ext.count == 1 ? "FILE.\(ext[0])" : "FILE"
    case .int: return "N"
    case .number: return "X"
    case .choice(let words): return words.joined(separator: "|")
    case .toggle: return "on|off"
    case .command: return "COMMAND"
    case .verb: return "VERB"
    }
  }
}

/// A positional argument, in order. Optional ones follow required ones.
public struct Positional: Sendable {
  public var name: String
  public var type: ValueType
  public var optional: Bool
  /// The last positional may take the rest of the words, joined by single spaces
  /// (`echo two words`).
  public var rest: Bool
  public var help: String
  /// Typical values, one of each form the argument takes: `help` lists them and Tab offers
  /// them, so the two cannot disagree.
  public var examples: [String]

  public init(
    _ name: String, _ type: ValueType, optional: Bool = false, rest: Bool = false, help: String,
    examples: [String] = []
  ) {
    self.name = name
    self.type = type
    self.optional = optional
    self.rest = rest
    self.help = help
    self.examples = examples
  }

  /// `TEXT`, `[PATH]`, `[TEXT...]`.
  var usage: String {
    let n = name + (rest ? "..." : "")
    return optional ? "[\(n)]" : n
  }
}

/// One entry of the command table: `noun [verb]`, what it takes, what it says in `help`, and
/// what it does. Everything the REPL knows about a command is here, so parsing, `help CMD`,
/// `CMD --help` and tab completion can never disagree.
public struct Command {
  public var noun: String
  public var verb: String?
  /// One line for the `help` list.
  public var summary: String
  /// One paragraph for `help CMD`.
  public var help: String
  public var positionals: [Positional]
  public var options: [Option]
  /// Whether a line starting with this command is kept out of recordings (`record`, `quit`).
  public var notRecorded: Bool
  /// Other words accepted for `verb` (`policy van` runs `policy vnorm`); `help` lists them,
  /// completion offers only `verb`.
  public var aliases: [String]
  /// What the noun's verbs are, when they name things rather than actions (`policy`: each verb
  /// is a policy with its own options). Errors then say `unknown policy 'x'`, and an unknown
  /// option lists the options this form takes.
  public var verbRole: String?
  public var run: (CommandContext) throws -> Void

  public init(
    _ noun: String, verb: String? = nil, summary: String, help: String,
    positionals: [Positional] = [], options: [Option] = [], notRecorded: Bool = false,
    aliases: [String] = [], verbRole: String? = nil,
    run: @escaping (CommandContext) throws -> Void
  ) {
    self.noun = noun
    self.verb = verb
    self.summary = summary
    self.help = help
    self.positionals = positionals
    self.options = options
    self.notRecorded = notRecorded
    self.aliases = aliases
    self.verbRole = verbRole
    self.run = run
  }

  /// Whether `word` selects this form's verb (the verb itself or an alias).
  func accepts(verb word: String) -> Bool {
    verb != nil && (verb == word || aliases.contains(word))
  }

  /// `feed text` or `mem`.
  public var name: String { verb.map { "\(noun) \($0)" } ?? noun }

  /// `ask QUESTION [max=N] [temp=X] ...`, from the declaration.
  public var usage: String {
    var parts = [name]
    for p in positionals { parts.append(p.usage) }
    for o in options { parts.append(o.required ? o.usage : "[\(o.usage)]") }
    return parts.joined(separator: " ")
  }

  public func option(_ name: String) -> Option? { options.first { $0.name == name } }
}

/// The parsed and validated arguments of one command: every value already checked against
/// its type, defaults filled in.
public struct Arguments {
  public let command: Command
  var positionalValues: [String: String]
  var optionValues: [String: String]
  var given: Set<String>

  /// A positional's value, or nil when an optional one was left out.
  public func positional(_ name: String) -> String? { positionalValues[name] }

  /// The option's value (given or default), as text.
  public func string(_ name: String) -> String? { optionValues[name] }

  public func int(_ name: String) -> Int { optionValues[name].flatMap { Int($0) } ?? 0 }

  public func number(_ name: String) -> Double { optionValues[name].flatMap { Double($0) } ?? 0 }

  public func toggle(_ name: String) -> Bool { optionValues[name] == "on" }

  /// Whether the user wrote the option (as opposed to its default applying).
  public func isGiven(_ name: String) -> Bool { given.contains(name) }
}

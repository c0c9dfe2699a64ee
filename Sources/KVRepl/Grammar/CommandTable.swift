import Foundation

/// The one table of commands. Parsing, validation, `help`, `CMD --help` and completion all
/// read it. Order of registration is the order `help` lists them in.
public struct CommandTable {
  public private(set) var commands: [Command] = []

  public init(_ commands: [Command] = []) { register(commands) }

  /// Adds commands; a `noun verb` pair may appear once.
  public mutating func register(_ new: [Command]) {
    for c in new {
      precondition(
        !commands.contains { $0.noun == c.noun && $0.verb == c.verb },
        "command '\(c.name)' registered twice")
      commands.append(c)
    }
  }

  /// Every noun, in registration order, each once.
  public var nouns: [String] {
    var seen = Set<String>()
    return commands.compactMap { seen.insert($0.noun).inserted ? $0.noun : nil }
  }

  /// A noun's forms: the plain one (no verb) first, then the verbs in registration order.
  public func forms(of noun: String) -> [Command] {
    let all = commands.filter { $0.noun == noun }
    return all.filter { $0.verb == nil } + all.filter { $0.verb != nil }
  }

  public func verbs(of noun: String) -> [String] { forms(of: noun).compactMap(\.verb) }

  public func command(_ noun: String, _ verb: String? = nil) -> Command? {
    commands.first { $0.noun == noun && $0.verb == verb }
  }

  /// What a command line asks for.
  public enum Parsed {
    case run(Command, Arguments)
    /// `CMD --help` (verb nil: every form of the noun; noun nil: the overview).
    case help(noun: String?, verb: String?)
  }

  /// Binds one command's words to its declaration, validating everything.
  public func parse(_ tokens: [Token]) throws -> Parsed {
    guard let first = tokens.first else { throw ReplError(nil, "empty command") }
    if first.isFlag && first.key == "help" { return .help(noun: nil, verb: nil) }
    let noun = first.text
    let forms = forms(of: noun)
    guard !forms.isEmpty, !first.isOption else {
      let hint = Suggest.nearest(noun, in: nouns).map { "did you mean '\($0)'?" }
      throw ReplError(nil, "unknown command '\(noun)' (\(hint ?? "type 'help' for the list"))")
    }
    var rest = ArraySlice(tokens.dropFirst())
    let verbForms = forms.filter { $0.verb != nil }
    let verbs = verbForms.compactMap(\.verb)
    let plain = forms.first { $0.verb == nil }
    let command: Command
    if let t = rest.first, !t.isOption, !t.quoted,
      let form = verbForms.first(where: { $0.accepts(verb: t.text) })
    {
      command = form
      rest = rest.dropFirst()
    } else if let plain, !(plain.positionals.isEmpty && rest.first.map { !$0.isOption } == true && !verbs.isEmpty) {
      command = plain
    } else {
      if rest.contains(where: { $0.isFlag && $0.key == "help" }) {
        return .help(noun: noun, verb: nil)
      }
      let role = verbForms.first?.verbRole
      let expected =
        role == nil
        ? "expected \(Self.list(verbs, conjunction: "or"))" : "known: \(verbs.joined(separator: ", "))"
      guard let t = rest.first, !t.isOption else {
        throw ReplError(noun, "missing \(role ?? "subcommand") (\(expected))")
      }
      let hint = Suggest.nearest(t.text, in: verbs).map { "did you mean '\($0)'?" }
      throw ReplError(noun, "unknown \(role ?? "subcommand") '\(t.text)' (\(hint ?? expected))")
    }
    if rest.contains(where: { $0.isFlag && $0.key == "help" }) {
      return .help(noun: command.noun, verb: command.verb)
    }
    return .run(command, try bind(command, Array(rest)))
  }

  func bind(_ command: Command, _ words: [Token]) throws -> Arguments {
    let name = command.name
    var positionals: [Token] = []
    var values: [String: String] = [:]
    var given = Set<String>()
    for t in words {
      guard let key = t.key else {
        positionals.append(t)
        continue
      }
      guard let option = command.option(key) else {
        let shown = t.isFlag ? "--\(key)" : key
        if command.options.isEmpty {
          throw ReplError(name, "unknown option '\(shown)' (\(name) takes no options)")
        }
        let hint = Suggest.nearest(key, in: command.options.map(\.name)).map {
          "did you mean '\(t.isFlag ? "--" : "")\($0)'?"
        }
        let list = "options: " + command.options.map(\.name).joined(separator: ", ")
        // A role's form (a policy) lists its options even with a suggestion: they are its own.
        let detail = hint.map { command.verbRole == nil ? $0 : "\($0) \(list)" } ?? list
        throw ReplError(name, "unknown option '\(shown)' (\(detail))")
      }
      if given.contains(key) { throw ReplError(name, "option '\(key)' given twice") }
      let raw: String
      if let v = t.value {
        raw = v
      } else {
        guard case .toggle = option.type else {
          throw ReplError(name, "--\(key) needs a value (\(key)=\(option.valuePlaceholder))")
        }
        raw = "on"
      }
      values[key] = try validate(raw, option.type, name: key, command: name)
      given.insert(key)
    }
    let declared = command.positionals
    if let last = declared.last, last.rest, positionals.count > declared.count {
      let joined = positionals[(declared.count - 1)...].map(\.text).joined(separator: " ")
      positionals = Array(positionals.prefix(declared.count - 1))
        + [Token(text: joined, quoted: true, column: positionals[declared.count - 1].column)]
    }
    if positionals.count > declared.count {
      let extra = positionals[declared.count]
      if declared.isEmpty {
        throw ReplError(name, "unexpected argument '\(extra.text)' (\(name) takes no arguments)")
      }
      if case .text = declared[declared.count - 1].type {
        throw ReplError(
          name,
          "unexpected argument '\(extra.text)' (put text with spaces in quotes: \"...\")")
      }
      throw ReplError(name, "unexpected argument '\(extra.text)' (usage: \(command.usage))")
    }
    var positionalValues: [String: String] = [:]
    for (i, p) in declared.enumerated() {
      guard i < positionals.count else {
        if !p.optional { throw ReplError(name, "missing \(p.name) (usage: \(command.usage))") }
        continue
      }
      positionalValues[p.name] = try validate(
        positionals[i].text, p.type, name: p.name, command: name)
    }
    for o in command.options where values[o.name] == nil {
      if o.required { throw ReplError(name, "missing \(o.name)=\(o.valuePlaceholder)") }
      if let d = o.defaultValue { values[o.name] = d }
    }
    return Arguments(
      command: command, positionalValues: positionalValues, optionValues: values, given: given)
  }

  /// Checks a value against its type; returns it in canonical form.
  func validate(_ raw: String, _ type: ValueType, name: String, command: String) throws -> String {
    switch type {
    case .text, .verb:
      return raw
    case .path(let extensions):
      guard !raw.isEmpty else { throw ReplError(command, "\(name) needs a file name") }
      if !extensions.isEmpty {
        let ext = (raw as NSString).pathExtension.lowercased()
        guard extensions.contains(ext) else {
          let wanted = Self.list(extensions.map { ".\($0)" }, conjunction: "or")
          throw ReplError(command, "\(name) must name a \(wanted) file, got '\(raw)'")
        }
      }
      return raw
    case .int(let range):
      guard let v = Int(raw), range.contains(v) else {
        throw ReplError(
          command,
          "\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound), got '\(raw)'")
      }
      return String(v)
    case .number(let range):
      guard let v = Double(raw), v.isFinite, range.contains(v) else {
        throw ReplError(
          command,
          "\(name) must be a number in \(Format.number(range.lowerBound))...\(Format.number(range.upperBound)), got '\(raw)'"
        )
      }
      return raw
    case .choice(let words):
      if let w = words.first(where: { $0.lowercased() == raw.lowercased() }) { return w }
      throw ReplError(
        command,
        "\(name) must be one of \(words.joined(separator: ", ")), got '\(raw)'\(Suggest.hint(raw, in: words))")
    case .toggle:
      switch raw.lowercased() {
      case "on": return "on"
      case "off": return "off"
      default: throw ReplError(command, "\(name) must be on or off, got '\(raw)'")
      }
    case .command:
      guard !forms(of: raw).isEmpty else {
        let hint = Suggest.nearest(raw, in: nouns).map { "did you mean '\($0)'?" }
        throw ReplError(command, "unknown command '\(raw)' (\(hint ?? "type 'help' for the list"))")
      }
      return raw
    }
  }

  static func list(_ words: [String], conjunction: String) -> String {
    switch words.count {
    case 0: return ""
    case 1: return words[0]
    default: return words.dropLast().joined(separator: ", ") + " \(conjunction) " + words.last!
    }
  }

  // MARK: help

  /// `help`: every command with its one-line summary.
  public func overview() -> [String] {
    var lines = ["commands:"]
    let width = min(30, commands.map { short($0).count }.max() ?? 0)
    for c in commands {
      let left = short(c)
      lines.append("  " + left.padding(toLength: max(width, left.count), withPad: " ", startingAt: 0) + "  " + c.summary)
    }
    lines.append("Type 'help COMMAND' or 'COMMAND --help' for details. ';' separates commands;")
    lines.append("\"...\" quotes text (\\\" and \\\\ inside); a toggle is --name or name=on|off.")
    return lines
  }

  /// `ask QUESTION`: the name and positionals, without options.
  func short(_ c: Command) -> String {
    ([c.name] + c.positionals.map(\.usage)).joined(separator: " ")
  }

  /// `help NOUN [VERB]`: usage, the paragraph, arguments and options of each matching form.
  public func help(noun: String, verb: String?) throws -> [String] {
    let forms = forms(of: noun)
    guard !forms.isEmpty else {
      let hint = Suggest.nearest(noun, in: nouns).map { "did you mean '\($0)'?" }
      throw ReplError("help", "unknown command '\(noun)' (\(hint ?? "type 'help' for the list"))")
    }
    let selected: [Command]
    if let verb {
      guard let c = forms.first(where: { $0.accepts(verb: verb) }) else {
        let verbs = verbs(of: noun)
        if verbs.isEmpty { throw ReplError("help", "'\(noun)' has no subcommands") }
        let hint = Suggest.nearest(verb, in: verbs).map { "did you mean '\($0)'?" }
        if let role = forms.first(where: { $0.verb != nil })?.verbRole {
          throw ReplError(
            "help", "unknown \(role) '\(verb)' (\(hint ?? "known: " + verbs.joined(separator: ", ")))")
        }
        throw ReplError(
          "help",
          "'\(noun)' has no subcommand '\(verb)' (\(hint ?? "expected " + Self.list(verbs, conjunction: "or")))")
      }
      selected = [c]
    } else {
      selected = forms
    }
    var lines: [String] = []
    for (i, c) in selected.enumerated() {
      if i > 0 { lines.append("") }
      lines.append("usage: \(c.usage)")
      lines += Format.wrap(c.help, width: 78, indent: "  ")
      if !c.aliases.isEmpty {
        lines.append("  Also written: " + c.aliases.map { "\(c.noun) \($0)" }.joined(separator: ", ") + ".")
      }
      if !c.positionals.isEmpty {
        lines.append("arguments:")
        for p in c.positionals {
          var notes = p.examples.isEmpty ? [] : ["e.g. " + p.examples.joined(separator: ", ")]
          if p.optional { notes.append("optional") }
          lines.append(Self.row(p.name, p.help + (notes.isEmpty ? "" : " (\(notes.joined(separator: "; ")))")))
        }
      }
      if !c.options.isEmpty {
        lines.append("options:")
        for o in c.options {
          var notes: [String] = []
          if case .int(let r) = o.type { notes.append("\(r.lowerBound)...\(r.upperBound)") }
          if case .number(let r) = o.type {
            notes.append("\(Format.number(r.lowerBound))...\(Format.number(r.upperBound))")
          }
          if o.required {
            notes.append("required")
          } else if let d = o.defaultValue {
            notes.append("default \(d)")
          }
          let text = o.help + (notes.isEmpty ? "" : " (\(notes.joined(separator: ", ")))")
          let left: String
          if case .toggle = o.type { left = "--\(o.name)" } else { left = "\(o.name)=\(o.valuePlaceholder)" }
          lines.append(Self.row(left, text))
        }
      }
    }
    return lines
  }

  static func row(_ left: String, _ right: String) -> String {
    let pad = 22
    if left.count + 2 >= pad { return "  \(left)  \(right)" }
    return "  " + left.padding(toLength: pad, withPad: " ", startingAt: 0) + right
  }
}

/// Number and text formatting shared by the commands' output.
public enum Format {
  /// `2`, `0.5`, `1e-05` — the shortest form that reads back the same.
  public static func number(_ x: Double) -> String {
    if x == x.rounded(), abs(x) < 1e15 { return String(Int(x)) }
    return String(x)
  }

  /// Bytes in binary units with two decimals (`98.53 MiB`), exact below 1 KiB.
  public static func bytes(_ n: Int, unit: String = "auto") -> String {
    let units: [(String, Double)] = [("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024)]
    switch unit {
    case "B": return "\(n) B"
    case "KiB", "MiB", "GiB":
      let d = units.first { $0.0 == unit }!.1
      return String(format: "%.2f", Double(n) / d) + " " + unit
    default:
      for (name, d) in units where Double(abs(n)) >= d {
        return String(format: "%.2f", Double(n) / d) + " " + name
      }
      return "\(n) B"
    }
  }

  /// strerror(3) in lower case, as it reads inside a message: `no such file or directory`.
  public static func systemError(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
  }

  /// Greedy word wrap.
  public static func wrap(_ text: String, width: Int, indent: String) -> [String] {
    var lines: [String] = []
    var current = indent
    for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
      if current.count > indent.count && current.count + 1 + word.count > width {
        lines.append(current)
        current = indent
      }
      current += (current.count > indent.count ? " " : "") + word
    }
    if current.count > indent.count { lines.append(current) }
    return lines
  }
}

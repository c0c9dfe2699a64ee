import Foundation

/// Tab completion from the command table: command nouns, subcommands, option keys
/// (`policy snapkv win<TAB>` → `window=`), option values with fixed choices (`unit=M<TAB>` →
/// `unit=MiB`), `--flags`, and file paths for path arguments and options (filtered by the
/// extensions the argument takes; folders always offered).
public struct Completer {
  public let table: CommandTable
  /// Where relative paths are listed from; nil = the working directory.
  public var directory: String?

  public init(table: CommandTable, directory: String? = nil) {
    self.table = table
    self.directory = directory
  }

  /// The word being completed (the text before the cursor since the word began, exactly as
  /// typed) and the words that may replace it, sorted.
  public struct Result: Equatable {
    public var word: String
    public var candidates: [String]
  }

  /// Completes the end of `line` (the text before the cursor).
  public func complete(_ line: String) -> Result {
    let (words, endsInSpace) = Lexer.partial(line)
    var done = words
    var current = Token(text: "", column: line.count + 1)
    if !endsInSpace, let last = words.last {
      current = last
      done.removeLast()
    }
    let typed = String(Array(line)[(current.column - 1)...])
    let candidates = candidatesFor(done: done, current: current, typed: typed)
    return Result(word: typed, candidates: Array(Set(candidates)).sorted())
  }

  func candidatesFor(done: [Token], current: Token, typed: String) -> [String] {
    guard let first = done.first else {
      return table.nouns.filter { $0.hasPrefix(current.text) }
    }
    let forms = table.forms(of: first.text)
    guard !forms.isEmpty else { return [] }
    let verbs = forms.compactMap(\.verb)
    var command: Command?
    var args = Array(done.dropFirst())
    if let second = args.first, let form = forms.first(where: { $0.accepts(verb: second.text) }) {
      command = form
      args.removeFirst()
    } else {
      command = forms.first { $0.verb == nil }
    }
    var out: [String] = []
    if done.count == 1 && !verbs.isEmpty && !current.isOption {
      out += verbs.filter { $0.hasPrefix(current.text) }
    }
    guard let command else { return out }
    return out + complete(command, args: args, current: current, typed: typed)
  }

  func complete(_ command: Command, args: [Token], current: Token, typed: String) -> [String] {
    let given = Set(args.compactMap(\.key))
    if current.isFlag || (typed.hasPrefix("-") && current.key == nil) {
      if let key = current.key, let value = current.value, let o = command.option(key) {
        return values(for: o.type, partial: value, args: args).map { "--\(key)=\($0)" }
      }
      let flags = command.options.filter {
        if case .toggle = $0.type { return !given.contains($0.name) }
        return false
      }.map { "--\($0.name)" } + ["--help"]
      return flags.filter { $0.hasPrefix(typed) }
    }
    if let key = current.key, let value = current.value {
      guard let o = command.option(key) else { return [] }
      return values(for: o.type, partial: value, args: args).map { "\(key)=\($0)" }
    }
    var out = command.options.filter { !given.contains($0.name) }.map { "\($0.name)=" }
      .filter { $0.hasPrefix(current.text) && !current.quoted }
    let positionals = args.filter { !$0.isOption }
    if positionals.count < command.positionals.count {
      let p = command.positionals[positionals.count]
      out += values(for: p.type, partial: current.text, args: positionals, typed: typed)
      out += p.examples.filter { $0.lowercased().hasPrefix(current.text.lowercased()) && !current.quoted }
    }
    return out
  }

  /// Values of a type that start with `partial`; for paths, `typed` (the raw word) keeps an
  /// opening quote.
  func values(for type: ValueType, partial: String, args: [Token], typed: String? = nil) -> [String] {
    switch type {
    case .choice, .toggle:
      return (type.fixedChoices ?? []).filter { $0.lowercased().hasPrefix(partial.lowercased()) }
    case .command:
      return table.nouns.filter { $0.hasPrefix(partial) }
    case .verb:
      guard let noun = args.last?.text else { return [] }
      return table.verbs(of: noun).filter { $0.hasPrefix(partial) }
    case .path(let extensions):
      return paths(partial, extensions: extensions, quoted: typed?.hasPrefix("\"") ?? false)
    case .text, .int, .number:
      return []
    }
  }

  /// Entries of the folder named by `partial`'s folder part that start with its last part:
  /// folders (with `/`) and files with one of `extensions` (any file if empty). Hidden entries
  /// only when the last part starts with a dot. Names with spaces or quotes come back quoted.
  func paths(_ partial: String, extensions: [String], quoted: Bool) -> [String] {
    let slash = partial.lastIndex(of: "/")
    let folderPart = slash.map { String(partial[...$0]) } ?? ""
    let namePart = slash.map { String(partial[partial.index(after: $0)...]) } ?? partial
    var folder = folderPart.isEmpty ? "." : folderPart
    if folder == "~/" || folder.hasPrefix("~/") { folder = NSHomeDirectory() + folder.dropFirst() }
    if !folder.hasPrefix("/"), let directory, !directory.isEmpty {
      folder = (directory as NSString).appendingPathComponent(folder)
    }
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
    var out: [String] = []
    for name in names where name.hasPrefix(namePart) {
      if name.hasPrefix(".") && !namePart.hasPrefix(".") { continue }
      var isDirectory: ObjCBool = false
      let full = (folder as NSString).appendingPathComponent(name)
      guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) else { continue }
      if isDirectory.boolValue {
        out.append(quote(folderPart + name + "/", open: quoted || needsQuotes(folderPart + name), close: false))
      } else if extensions.isEmpty || extensions.contains((name as NSString).pathExtension.lowercased()) {
        out.append(quote(folderPart + name, open: quoted || needsQuotes(folderPart + name), close: true))
      }
    }
    return out
  }

  func needsQuotes(_ s: String) -> Bool { s.contains { " \t;\"=#".contains($0) } }

  func quote(_ s: String, open: Bool, close: Bool) -> String {
    guard open else { return s }
    let body = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    return "\"" + body + (close ? "\"" : "")
  }
}

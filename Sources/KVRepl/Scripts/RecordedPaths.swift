import Foundation

extension Repl {
  /// The line as a recording stores it: each path argument (a positional or option of a path
  /// type) rewritten to name the same file from the recording's folder, since a replay resolves
  /// paths against its script's folder. Relative when the two share a folder below the root
  /// (`../Tests/x.png`), else absolute. A line that does not parse, or names no path, or whose
  /// paths already read the same from there, is stored as typed.
  func recordedLine(_ line: String, recordingFolder: String) -> (
    line: String, renames: [(typed: String, recorded: String)]
  ) {
    guard let commands = try? Lexer.commands(line) else { return (line, []) }
    var renames: [(typed: String, recorded: String)] = []
    let rebuilt = commands.map { words -> String in
      guard case .run(let command, let args)? = try? table.parse(words) else {
        return words.map(Self.spelled).joined(separator: " ")
      }
      var pathValues: Set<String> = []
      for p in command.positionals {
        if case .path = p.type, let v = args.positional(p.name) { pathValues.insert(v) }
      }
      let pathOptions = Set(
        command.options.filter { if case .path = $0.type { return true } else { return false } }
          .map(\.name))
      return words.enumerated().map { i, word -> String in
        var w = word
        if let key = w.key, pathOptions.contains(key), let v = w.value {
          let moved = relocated(v, to: recordingFolder)
          if moved != v {
            w.value = moved
            renames.append((v, moved))
          }
        } else if i > 0, w.key == nil, pathValues.contains(w.text) {
          let moved = relocated(w.text, to: recordingFolder)
          if moved != w.text {
            renames.append((w.text, moved))
            w.text = moved
          }
        }
        return Self.spelled(w)
      }.joined(separator: " ")
    }
    // Longest first, so that a path is not renamed inside a longer one.
    renames.sort { $0.typed.count > $1.typed.count }
    return renames.isEmpty ? (line, []) : (rebuilt.joined(separator: "; "), renames)
  }

  /// A token written back: `--key`, `key=value` or the word, quoted where needed.
  static func spelled(_ t: Token) -> String {
    if let key = t.key {
      let prefix = t.isFlag ? "--" + key : key
      return t.value.map { prefix + "=" + quote($0) } ?? prefix
    }
    return quote(t.text)
  }

  /// `typed` (resolved as a command would) as seen from `folder`.
  func relocated(_ typed: String, to folder: String) -> String {
    let cwd = FileManager.default.currentDirectoryPath
    /// Absolute, with `.` and `..` folded (no symlink is resolved: the path stays as named).
    func absolute(_ p: String) -> String {
      let full = p.hasPrefix("/") ? p : (cwd as NSString).appendingPathComponent(p)
      var parts: [Substring] = []
      for part in full.split(separator: "/") where part != "." {
        if part == ".." { _ = parts.popLast() } else { parts.append(part) }
      }
      return "/" + parts.joined(separator: "/")
    }
    let target = absolute(resolve(typed))
    let from = absolute(folder).split(separator: "/")
    let to = target.split(separator: "/")
    var common = 0
    while common < min(from.count, to.count), from[common] == to[common] { common += 1 }
    // Only the root in common: a relative path would climb out of everything; keep it absolute.
    guard common > 0 else { return target }
    let up = Array(repeating: "..", count: from.count - common)
    let relative = (up + to[common...].map(String.init)).joined(separator: "/")
    return relative.isEmpty ? "." : relative
  }
}

import Foundation

/// A session script: plain text that is its own expected output.
///
///     # a comment
///     tokenize "Hello"
///     #> 19556
///     mem
///     #> ...
///
/// A line starting with `#>` is a line the preceding command printed (`#> ` then the text;
/// a bare `#>` is an empty line). Other lines starting with `#` are comments, blank lines are
/// skipped, and every other line is a command line (`;` may join several commands).
public struct Script {
  public struct Entry: Equatable {
    /// The command line as written.
    public var line: String
    /// 1-based line number of the command in the file.
    public var lineNumber: Int
    /// What the recording says the command printed.
    public var expected: [String]

    /// The recording shows this command failing (a line starting `error: `).
    public var expectsError: Bool { expected.contains { $0.hasPrefix("error: ") } }

    /// The recording shows Ctrl-C stopping this command (its last line starts `^C cancelled`).
    /// When it stopped depended on a person's timing, so a replay skips it.
    public var wasCancelled: Bool { expected.last?.hasPrefix("^C cancelled") ?? false }
  }

  public var entries: [Entry]

  /// Longest accepted line, in bytes (so a stray binary file fails fast and clearly).
  public static let maxLineBytes = 65536

  public init(entries: [Entry]) { self.entries = entries }

  /// Parses a script's text. Errors name `displayName:line`.
  public init(text: String, displayName: String) throws {
    var entries: [Entry] = []
    var number = 0
    for raw in Self.lines(text) {
      number += 1
      var line = raw
      if line.hasSuffix("\r") { line.removeLast() }
      if line.utf8.count > Self.maxLineBytes {
        throw ReplError(
          "replay",
          "\(displayName):\(number): line too long (\(line.utf8.count) bytes; the limit is \(Self.maxLineBytes))"
        )
      }
      let trimmed = line.drop { $0 == " " || $0 == "\t" }
      if trimmed.hasPrefix("#>") {
        guard !entries.isEmpty else {
          throw ReplError(
            "replay", "\(displayName):\(number): expected output (#>) before any command")
        }
        var body = trimmed.dropFirst(2)
        if body.hasPrefix(" ") { body = body.dropFirst() }
        entries[entries.count - 1].expected.append(String(body))
        continue
      }
      if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
      entries.append(Entry(line: line, lineNumber: number, expected: []))
    }
    self.entries = entries
  }

  /// A text split at each newline (U+000A), a `\r` before it kept. (Splitting the `String`
  /// at the Character "\n" would not split "\r\n", a single Character.)
  static func lines(_ text: String) -> [String] {
    text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
  }

  /// The script's text with new expected output: for each command whose line number is a key
  /// of `outputs`, its `#>` lines are dropped and the new ones written right below the command
  /// line (`#> ` + text; a bare `#>` for an empty line). Comments, blank lines, command lines
  /// and the `#>` lines of every other command stay exactly as they were.
  public static func rewrite(_ text: String, outputs: [Int: [String]]) -> String {
    var lines: [String] = []
    var number = 0
    var replacing = false
    for line in Self.lines(text) {
      number += 1
      let trimmed = line.drop { $0 == " " || $0 == "\t" }
      if trimmed.hasPrefix("#>") {
        if !replacing { lines.append(line) }
        continue
      }
      lines.append(line)
      if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
      replacing = false
      if let new = outputs[number] {
        replacing = true
        let ending = line.hasSuffix("\r") ? "\r" : ""
        for out in new { lines.append((out.isEmpty ? "#>" : "#> " + out) + ending) }
      }
    }
    return lines.joined(separator: "\n")
  }
}

/// Output that varies between runs (times, rates, resident memory, the BLAS kernel of the
/// machine) is printed only when asked for, and always marked with a `~`: `~0.42 s`,
/// `(~118.3 tok/s)`, `rss ~201.53 MiB`, `kernel ~Haswell ~(auto)`.
///
/// The rule `replay --check` applies to both the recorded and the new line before comparing:
/// 1. a `~` that does not follow a letter or digit starts a volatile value, which runs until a
///    blank, `)` or `,`; it compares as `~*` (the unit after it still counts);
/// 2. any run of blanks compares as one space (table columns may widen with a value), and
///    leading and trailing blanks are ignored.
/// Everything else must match exactly.
public enum Mask {
  /// The line as compared (see the rule above).
  public static func apply(_ line: String) -> String {
    var out = ""
    var inVolatile = false
    var previous: Character = " "
    for ch in line {
      let isBlank = ch == " " || ch == "\t"
      if inVolatile && (isBlank || ch == ")" || ch == ",") { inVolatile = false }
      if isBlank {
        if !(out.isEmpty || out.last == " ") { out.append(" ") }
      } else if inVolatile {
        // inside a volatile value: dropped
      } else if ch == "~" && !(previous.isLetter || previous.isNumber) {
        inVolatile = true
        out += "~*"
      } else {
        out.append(ch)
      }
      previous = ch
    }
    if out.last == " " { out.removeLast() }
    return out
  }

  public static func matches(expected: [String], actual: [String]) -> Bool {
    expected.map(apply) == actual.map(apply)
  }

  /// Formats a varying quantity: `~0.423 s`.
  public static func seconds(_ s: Double) -> String { "~" + String(format: "%.3f", s) + " s" }
  public static func rate(_ perSecond: Double, unit: String) -> String {
    "~" + String(format: "%.1f", perSecond) + " \(unit)"
  }
}

/// A line diff: `-` expected, `+` actual, ` ` both (compared after masking).
public enum LineDiff {
  public static func unified(expected: [String], actual: [String]) -> [String] {
    let a = expected.map(Mask.apply)
    let b = actual.map(Mask.apply)
    // Longest common subsequence table; outputs are short.
    var lcs = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    if !a.isEmpty && !b.isEmpty {
      for i in stride(from: a.count - 1, through: 0, by: -1) {
        for j in stride(from: b.count - 1, through: 0, by: -1) {
          lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
        }
      }
    }
    var lines: [String] = []
    var i = 0
    var j = 0
    while i < a.count || j < b.count {
      if i < a.count && j < b.count && a[i] == b[j] {
        lines.append(" " + expected[i])
        i += 1
        j += 1
      } else if i < a.count && (j == b.count || lcs[i + 1][j] >= lcs[i][j + 1]) {
        lines.append("-" + expected[i])
        i += 1
      } else {
        lines.append("+" + actual[j])
        j += 1
      }
    }
    return lines
  }
}

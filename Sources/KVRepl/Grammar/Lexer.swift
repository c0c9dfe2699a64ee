/// The command-line grammar's tokens: `noun [verb] [positional...] [key=value...] [--flag]`.
///
/// Words are separated by spaces or tabs. A double-quoted part ("...") may hold spaces, `;`,
/// `=` and `#`; inside it `\"` is a quote, `\\` a backslash, `\n` a newline and `\t` a tab, and
/// any other escape is an error. Outside quotes a backslash is an ordinary character. An unquoted
/// `;` ends a command, so one line can hold several (`load; feed text "hi"`). A word whose
/// unquoted start is `name=` is an option; one that starts with an unquoted `--` is a flag
/// (`--append`, `--max=8`). Quoting any part of the key makes the word a plain argument
/// (`"a=b"`). An unquoted `#` at the start of a word begins a comment that runs to the end of
/// the line (`a#b` is a word; `"# x"` is quoted text).
public struct Token: Equatable, Sendable {
  /// The word with quotes removed and escapes applied.
  public var text: String
  /// Whether any part of the word was quoted.
  public var quoted: Bool
  /// For `name=value` and `--name=value`: the name; for `--name`: the name.
  public var key: String?
  /// For `name=value` and `--name=value`: the value (quotes removed); nil for a bare `--name`.
  public var value: String?
  /// Whether the word was written as `--name` or `--name=value`.
  public var isFlag: Bool
  /// 1-based column (in characters) of the word's first character in its line.
  public var column: Int
  /// Only in partial (completion) mode: the word's quote is still open.
  public var unterminated: Bool

  /// True for words that set an option (`key=value`, `--flag`, `--key=value`).
  public var isOption: Bool { key != nil }

  public init(
    text: String, quoted: Bool = false, key: String? = nil, value: String? = nil,
    isFlag: Bool = false, column: Int = 1, unterminated: Bool = false
  ) {
    self.text = text
    self.quoted = quoted
    self.key = key
    self.value = value
    self.isFlag = isFlag
    self.column = column
    self.unterminated = unterminated
  }
}

/// A lexing failure: where, what, and the command word if one was already read.
public struct LexError: Error, Equatable, Sendable {
  public var message: String
  public var column: Int
  /// The first word of the command being lexed, when it was read before the error.
  public var command: String?
}

public enum Lexer {
  /// Characters allowed in option names (`top-k=40`, `keep_going`): a letter, then letters,
  /// digits, `-` or `_`.
  static func isOptionName<S: StringProtocol>(_ s: S) -> Bool {
    guard let first = s.first, first.isASCII, first.isLetter else { return false }
    return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
  }

  /// Splits a line into commands (at unquoted `;`) and each command into words.
  /// Empty commands (`a;;b`, a trailing `;`) are dropped.
  public static func commands(_ line: String) throws(LexError) -> [[Token]] {
    var result: [[Token]] = []
    let scan = try scan(line, partial: false)
    for segment in scan.segments where !segment.isEmpty { result.append(segment) }
    return result
  }

  /// The source text of each command of a line (split at unquoted `;`, trimmed), so that
  /// `-c 'a; b'` runs (and records) as the lines `a` and `b`. A line that does not lex comes
  /// back whole, for `run` to report its error.
  public static func commandLines(_ line: String) -> [String] {
    guard let commands = try? commands(line), commands.count > 1 else { return [line] }
    let chars = Array(line)
    let starts = commands.map { $0[0].column - 1 }
    return starts.enumerated().map { i, start in
      let end = i + 1 < starts.count ? starts[i + 1] : chars.count
      var piece = String(chars[start..<end])
      while let last = piece.last, last == " " || last == "\t" || last == ";" { piece.removeLast() }
      return piece
    }
  }

  /// For completion: the words of the last command on the line (an open quote allowed) and
  /// whether the line ends between words (so the word being completed is empty).
  public static func partial(_ line: String) -> (words: [Token], endsInSpace: Bool) {
    guard let scan = try? scan(line, partial: true) else { return ([], true) }
    return (scan.segments.last ?? [], scan.endsInSpace)
  }

  struct Scan {
    var segments: [[Token]]
    var endsInSpace: Bool
  }

  static func scan(_ line: String, partial: Bool) throws(LexError) -> Scan {
    let chars = Array(line)
    var segments: [[Token]] = [[]]
    var i = 0
    var endsInSpace = true
    func fail(_ message: String, at column: Int) -> LexError {
      LexError(message: message, column: column, command: segments.last?.first?.text)
    }
    while i < chars.count {
      let c = chars[i]
      if c == " " || c == "\t" || c == "\r" {
        i += 1
        endsInSpace = true
        continue
      }
      if c == ";" {
        segments.append([])
        i += 1
        endsInSpace = true
        continue
      }
      // An unquoted `#` starting a word starts a comment, to the end of the line (as the
      // README's tour writes them: `cache map   # retention heatmap`).
      if c == "#" { break }
      // One word: runs until unquoted whitespace or `;`.
      let start = i
      var text = ""
      var quoted = false
      var unterminated = false
      // Number of leading characters of `text` that came from unquoted input.
      var unquotedPrefix = 0
      var sawQuote = false
      while i < chars.count {
        let ch = chars[i]
        if ch == " " || ch == "\t" || ch == "\r" || ch == ";" { break }
        if let scalar = ch.unicodeScalars.first, ch.unicodeScalars.count == 1,
          scalar.value < 0x20 || scalar.value == 0x7F
        {
          let code = String(scalar.value, radix: 16, uppercase: true)
          throw fail(
            "control character U+\(String(repeating: "0", count: max(0, 4 - code.count)))\(code) at column \(i + 1)",
            at: i + 1)
        }
        if ch == "\"" {
          quoted = true
          sawQuote = true
          let open = i
          i += 1
          var closed = false
          while i < chars.count {
            let q = chars[i]
            if q == "\"" {
              closed = true
              i += 1
              break
            }
            if q == "\\" {
              guard i + 1 < chars.count else { break }
              let e = chars[i + 1]
              switch e {
              case "\"": text.append("\"")
              case "\\": text.append("\\")
              case "n": text.append("\n")
              case "t": text.append("\t")
              default:
                if partial {
                  text.append(e)
                } else {
                  throw fail(
                    "unknown escape '\\\(e)' at column \(i + 1) (inside quotes use \\\" \\\\ \\n \\t)",
                    at: i + 1)
                }
              }
              i += 2
              continue
            }
            text.append(q)
            i += 1
          }
          if !closed {
            if partial {
              unterminated = true
              i = chars.count
              break
            }
            throw fail("unterminated quote (opened at column \(open + 1))", at: open + 1)
          }
          continue
        }
        text.append(ch)
        if !sawQuote { unquotedPrefix += 1 }
        i += 1
      }
      var token = Token(text: text, quoted: quoted, column: start + 1, unterminated: unterminated)
      classify(&token, unquotedPrefix: unquotedPrefix)
      segments[segments.count - 1].append(token)
      endsInSpace = false
    }
    return Scan(segments: segments, endsInSpace: endsInSpace)
  }

  /// Marks `--name[=value]` and `name=value` words, looking only at their unquoted start.
  static func classify(_ token: inout Token, unquotedPrefix: Int) {
    let text = token.text
    let head = text.prefix(unquotedPrefix)
    if head.hasPrefix("--") {
      let body = text.dropFirst(2)
      if let eq = body.firstIndex(of: "="),
        text.distance(from: text.startIndex, to: eq) < unquotedPrefix
      {
        let name = body[body.startIndex..<eq]
        if isOptionName(name) {
          token.key = String(name)
          token.value = String(body[body.index(after: eq)...])
          token.isFlag = true
        }
      } else if unquotedPrefix == text.count && isOptionName(body) {
        token.key = String(body)
        token.isFlag = true
      }
      return
    }
    if let eq = head.firstIndex(of: "=") {
      let name = text[text.startIndex..<eq]
      if isOptionName(name) {
        token.key = String(name)
        token.value = String(text[text.index(after: eq)...])
      }
    }
  }
}

/// A command failure, printed as one line: `error: <command>: <what is wrong>`, or
/// `error: <what is wrong>` when no command applies (an unknown command, a bad quote before the
/// command word). In a script the file and line come first: `error: s.kvl:3: <command>: ...`.
public struct ReplError: Error, Equatable, CustomStringConvertible {
  /// `tokenize`, `record start`; nil when no command applies.
  public var command: String?
  public var message: String
  /// Lines printed after the error line (a diff).
  public var detail: [String]
  /// Already reported where it happened (a script's failing command); print nothing more.
  public var silent: Bool

  public init(_ command: String?, _ message: String, detail: [String] = [], silent: Bool = false) {
    self.command = command
    self.message = message
    self.detail = detail
    self.silent = silent
  }

  /// A failure that was already printed where it happened.
  static func reported() -> ReplError { ReplError(nil, "", silent: true) }

  /// The error line, without the `error: ` prefix.
  public var description: String {
    command.map { "\($0): \(message)" } ?? message
  }

  /// The full error line, with an optional `file:line` location.
  public func line(location: String? = nil) -> String {
    "error: " + (location.map { "\($0): " } ?? "") + description
  }
}

/// Nearest-word suggestions for unknown commands, verbs, options and values.
public enum Suggest {
  /// The closest candidate within a small edit distance (optimal string alignment:
  /// insertions, deletions, substitutions, adjacent swaps; at most 1 for words of up to 3
  /// letters, else 2), or else the only candidate the word is a prefix of, or nil.
  /// Ties go to a candidate with the same first letter, then to the earlier one.
  public static func nearest(_ word: String, in candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    guard !w.isEmpty else { return nil }
    var best: (String, Int)?
    for c in candidates {
      let lower = Array(c.lowercased())
      // Same first letter wins a tie: 'mb' suggests 'MiB' before 'B'.
      let d = 2 * distance(w, lower) + (lower.first == w.first ? 0 : 1)
      if best == nil || d < best!.1 { best = (c, d) }
    }
    best = best.map { ($0.0, $0.1 / 2) }
    if let (c, d) = best, d <= (w.count <= 3 ? 1 : 2) { return c }
    let prefixed = candidates.filter { $0.lowercased().hasPrefix(word.lowercased()) }
    return w.count >= 2 && prefixed.count == 1 ? prefixed[0] : nil
  }

  /// ` (did you mean 'load'?)` or empty.
  static func hint(_ word: String, in candidates: [String]) -> String {
    nearest(word, in: candidates).map { " (did you mean '\($0)'?)" } ?? ""
  }

  static func distance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
      for j in 1...b.count {
        let cost = a[i - 1] == b[j - 1] ? 0 : 1
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
        if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
          d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
        }
      }
    }
    return d[a.count][b.count]
  }
}

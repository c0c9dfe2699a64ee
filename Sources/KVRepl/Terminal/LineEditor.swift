import CEditLine
import Foundation

/// The interactive prompt, on libedit (BSD; never GNU readline) through its readline-compatible
/// API: line editing, a history file, and tab completion from a `Completer`.
///
/// The one static in kvlab lives here: libedit's readline API is process-wide (one terminal)
/// and calls its completion hook as a C function pointer with no context argument, so the
/// active editor's completer is reachable only through `LineEditor.active`, a lock-guarded slot
/// set while an editor exists.
public final class LineEditor {
  /// The history file (nil: no file).
  public let historyFile: String?
  private let completer: () -> Completer
  private var lastLine: String?

  /// The completion context for the C hook (see the type's comment).
  static let active = ActiveCompleter()

  final class ActiveCompleter: @unchecked Sendable {
    private let lock = NSLock()
    private var completer: (() -> Completer)?
    func set(_ c: (() -> Completer)?) {
      lock.lock()
      completer = c
      lock.unlock()
    }
    func get() -> Completer? {
      lock.lock()
      defer { lock.unlock() }
      return completer?()
    }
  }

  /// The history file: $KVLAB_HISTORY (empty = none), else ~/.kvlab_history.
  public static func defaultHistoryFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    if let path = environment["KVLAB_HISTORY"] { return path.isEmpty ? nil : path }
    return (NSHomeDirectory() as NSString).appendingPathComponent(".kvlab_history")
  }

  /// Most history entries kept (in memory and in the file).
  public static let historyLimit = 1000

  public init(historyFile: String?, completer: @escaping () -> Completer) {
    self.historyFile = historyFile
    self.completer = completer
    LineEditor.active.set(completer)
    // libedit must not install its own signal handlers: Ctrl-C is routed by InterruptRouter.
    rl_catch_signals = 0
    rl_readline_name = UnsafePointer(strdup("kvlab"))
    rl_initialize()
    using_history()
    stifle_history(Int32(Self.historyLimit))
    // Words break at blanks and `;` only, so `key=value` is one word to complete.
    rl_basic_word_break_characters = UnsafePointer(strdup(" \t;"))
    rl_completer_word_break_characters = strdup(" \t;")
    rl_attempted_completion_function = lineEditorComplete
    if let historyFile {
      if FileManager.default.fileExists(atPath: historyFile) {
        _ = history_truncate_file(historyFile, Int32(Self.historyLimit))
        _ = read_history(historyFile)
      } else {
        _ = write_history(historyFile)  // creates it with libedit's header
      }
    }
  }

  deinit {
    LineEditor.active.set(nil)
  }

  /// Reads a line; nil at end of input (Ctrl-D) or when a signal interrupted the read.
  public func readLine(prompt: String) -> String? {
    guard let raw = readline(prompt) else { return nil }
    defer { free(raw) }
    return String(cString: raw)
  }

  /// Adds a line to the history and appends it to the file at once (a crash keeps it).
  public func addHistory(_ line: String) {
    let trimmed = line.trimmingCharacters(in: .whitespaces)
    guard !trimmed.isEmpty, line != lastLine else { return }
    lastLine = line
    add_history(line)
    if let historyFile { Self.appendToHistoryFile(historyFile, line) }
  }

  /// Appends one entry in libedit's history format (`_HiStOrY_V2_` header, entries strvis(3)
  /// encoded: octal escapes for blanks, controls and non-ASCII bytes, `\\` for a backslash).
  /// libedit's own append_history(1, ...) writes the previous entry again as well.
  static func appendToHistoryFile(_ path: String, _ line: String) {
    var encoded = ""
    for byte in line.utf8 {
      switch byte {
      case UInt8(ascii: "\\"): encoded += "\\\\"
      case 0x21...0x7E: encoded.append(Character(Unicode.Scalar(byte)))
      default:
        let octal = String(byte, radix: 8)
        encoded += "\\" + String(repeating: "0", count: 3 - octal.count) + octal
      }
    }
    guard let file = fopen(path, "a") else { return }
    defer { fclose(file) }
    fseek(file, 0, SEEK_END)
    if ftell(file) == 0 { fputs("_HiStOrY_V2_\n", file) }
    fputs(encoded + "\n", file)
  }
}

/// libedit's completion hook: completes the text before the cursor with the active
/// `Completer`, returning libedit's match list (common prefix first, then the matches).
private func lineEditorComplete(
  _ text: UnsafePointer<CChar>?, _ start: Int32, _ end: Int32
) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
  rl_attempted_completion_over = 1
  guard let completer = LineEditor.active.get(), let buffer = rl_line_buffer else { return nil }
  let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt8.self), count: Int(end)))
  let before = String(decoding: bytes, as: UTF8.self)
  let result = completer.complete(before)
  guard !result.candidates.isEmpty else { return nil }
  // libedit replaces bytes start..<end (its own word); ours may start elsewhere (a quoted
  // word with spaces). Re-base each candidate onto libedit's word.
  let libeditWord = String(decoding: bytes[Int(start)...], as: UTF8.self)
  let ourWord = result.word
  var matches: [String] = []
  for c in result.candidates {
    if ourWord.utf8.count >= libeditWord.utf8.count {
      let drop = ourWord.utf8.count - libeditWord.utf8.count
      guard c.utf8.count >= drop else { continue }
      matches.append(String(decoding: Array(c.utf8)[drop...], as: UTF8.self))
    } else {
      let extra = libeditWord.utf8.count - ourWord.utf8.count
      matches.append(String(decoding: Array(libeditWord.utf8)[..<extra], as: UTF8.self) + c)
    }
  }
  guard !matches.isEmpty else { return nil }
  // A single match gets its trailing space here (none after a folder, an `=` or an open
  // quote: more is to come); libedit's own append is switched off, as it differs by version.
  rl_completion_append_character = 0
  if matches.count == 1, let only = matches.first,
    !(only.hasSuffix("/") || only.hasSuffix("=") || (only.hasPrefix("\"") && !only.dropFirst().hasSuffix("\"")))
  {
    matches[0] = only + " "
  }
  var common = matches[0]
  for m in matches.dropFirst() {
    while !m.hasPrefix(common) { common.removeLast() }
  }
  // libedit frees the array and its strings with free(3): allocate with malloc. For one match
  // it wants [match, match, NULL] (it reads the third slot to tell a single match).
  let slots = matches.count == 1 ? 3 : matches.count + 2
  let array = malloc(MemoryLayout<UnsafeMutablePointer<CChar>?>.stride * slots)!
    .bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: slots)
  if matches.count == 1 {
    array[0] = strdup(matches[0])
    array[1] = strdup(matches[0])
    array[2] = nil
  } else {
    array[0] = strdup(common)
    for (i, m) in matches.enumerated() { array[i + 1] = strdup(m) }
    array[matches.count + 1] = nil
  }
  return array
}

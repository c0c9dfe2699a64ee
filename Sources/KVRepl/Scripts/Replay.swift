import Foundation

extension Repl {
  /// Deepest nesting of replays (a script that replays itself fails instead of recursing).
  static let maxReplayDepth = 8

  /// Runs a script's commands. Without `check`, output shows as it happens and the first
  /// failing command stops the script (unless `keepGoing`), except a failure the recording
  /// expects (its `#>` lines hold an `error:` line). With `check`, each command's output is
  /// compared with its `#>` lines, masked (see `Mask`); the first difference stops the
  /// replay with a diff. A command the recording shows cancelled (`#> ^C cancelled: ...`) is
  /// skipped: where Ctrl-C landed cannot be replayed.
  func replay(typed: String, path: String, check: Bool, keepGoing: Bool) throws {
    guard frames.count < Self.maxReplayDepth else {
      throw ReplError(
        "replay", "\(typed): scripts nested more than \(Self.maxReplayDepth) deep (does it replay itself?)")
    }
    let script = try Script(text: try Self.readScript(typed: typed, path: path), displayName: typed)
    let directory = (path as NSString).deletingLastPathComponent
    frames.append(ScriptFrame(displayPath: typed, directory: directory.isEmpty ? "." : directory))
    defer { frames.removeLast() }

    var differing: [Int] = []
    var failed: [Int] = []
    for entry in script.entries where !entry.wasCancelled {
      if session.cancellation.isSet { throw ReplCancelled() }
      frames[frames.count - 1].lineNumber = entry.lineNumber
      frames[frames.count - 1].expectsError = entry.expectsError
      frames[frames.count - 1].locate = true
      defer { frames[frames.count - 1].locate = false }
      if check {
        let capture = CaptureSink()
        pushSink(capture)
        let r = run(line: entry.line, keepGoing: keepGoing)
        popSink()
        if r == .cancelled {
          write(capture.text)
          throw ReplCancelled()
        }
        if !Mask.matches(expected: entry.expected, actual: capture.lines) {
          differing.append(entry.lineNumber)
          let e = ReplError(
            "replay", "\(typed):\(entry.lineNumber): output differs from the recording",
            detail: ["--- expected (\(typed):\(entry.lineNumber))", "+++ actual", "@@ \(entry.line) @@"]
              + LineDiff.unified(expected: entry.expected, actual: capture.lines))
          frames[frames.count - 1].locate = false
          if !keepGoing { throw e }
          report(e)
        }
        if case .quit = r { break }
      } else {
        let r = run(line: entry.line, keepGoing: keepGoing)
        if case .quit = r { break }
        if r == .cancelled { throw ReplCancelled() }
        if r == .failed && !entry.expectsError {
          failed.append(entry.lineNumber)
          if !keepGoing { throw ReplError.reported() }
        }
      }
    }
    let n = script.entries.count
    if !differing.isEmpty {
      throw ReplError(
        "replay",
        "\(typed): \(differing.count) of \(n) commands differ from the recording (lines \(differing.map(String.init).joined(separator: ", ")))")
    }
    if !failed.isEmpty {
      throw ReplError(
        "replay",
        "\(typed): \(failed.count) of \(n) commands failed (lines \(failed.map(String.init).joined(separator: ", ")))")
    }
    if check { print("checked \(typed): \(n) command\(n == 1 ? "" : "s"), output matches") }
  }

  static func readScript(typed: String, path: String) throws -> String {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ReplError("replay", "\(typed): no such file")
    }
    if isDirectory.boolValue { throw ReplError("replay", "\(typed): is a folder, not a script") }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ReplError("replay", "\(typed): cannot read it")
    }
    guard let text = String(data: data, encoding: .utf8) else {
      throw ReplError("replay", "\(typed): not UTF-8 text")
    }
    return text
  }
}

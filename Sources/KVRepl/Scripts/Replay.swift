import Foundation
import KVModels

/// What a replay of a script or notebook does with the recorded output.
public enum ReplayMode: Sendable, Equatable {
  /// Show the output as it happens; stop at the first failure the recording does not expect.
  case run
  /// Compare each command's (cell's) output with the recording, masked (see `Mask`); the
  /// first difference stops with a diff.
  case check
  /// Run everything and rewrite the recorded output with what was printed now.
  case update
}

extension Repl {
  /// Deepest nesting of replays (a script that replays itself fails instead of recursing).
  static let maxReplayDepth = 8

  /// Runs a script's commands. In `.run` mode, output shows as it happens and the first
  /// failing command stops the script (unless `keepGoing`), except a failure the recording
  /// expects (its `#>` lines hold an `error:` line). In `.check` mode, each command's output
  /// is compared with its `#>` lines, masked (see `Mask`); the first difference stops the
  /// replay with a diff. In `.update` mode every command runs and its `#>` lines are
  /// rewritten with what it printed (comments, blank lines and command lines stay as they
  /// are), then the file is replaced atomically (`AtomicFile`). A command the recording shows
  /// cancelled (`#> ^C cancelled: ...`) is skipped and keeps its lines: where Ctrl-C landed
  /// cannot be replayed.
  func replay(typed: String, path: String, mode: ReplayMode, keepGoing: Bool) throws {
    let text = try Self.readText(typed: typed, path: path, command: "replay", what: "a script")
    let script = try Script(text: text, displayName: typed)
    try pushFrame(typed: typed, path: path, command: "replay", what: "scripts")
    defer { frames.removeLast() }

    var differing: [Int] = []
    var failed: [Int] = []
    var outputs: [Int: [String]] = [:]
    for entry in script.entries where !entry.wasCancelled {
      if session.cancellation.isSet { throw ReplCancelled() }
      let capture: CaptureSink? = mode == .run ? nil : CaptureSink()
      let r = runReplayed(
        entry.line, lineNumber: entry.lineNumber, expectsError: entry.expectsError,
        locate: mode != .update, into: capture, keepGoing: keepGoing)
      if r == .cancelled {
        if let capture { write(capture.text) }
        throw ReplCancelled()
      }
      switch mode {
      case .check:
        let actual = capture!.lines
        if !Mask.matches(expected: entry.expected, actual: actual) {
          differing.append(entry.lineNumber)
          let e = outputDiffers(
            "replay", where: "\(typed):\(entry.lineNumber)", heading: entry.line,
            expected: entry.expected, actual: actual)
          if !keepGoing { throw e }
          report(e)
        }
      case .update:
        outputs[entry.lineNumber] = capture!.lines
      case .run:
        if r == .failed && !entry.expectsError {
          failed.append(entry.lineNumber)
          if !keepGoing { throw ReplError.reported() }
        }
      }
      if case .quit = r { break }
    }
    let n = script.entries.count
    if !differing.isEmpty {
      throw ReplError(
        "replay",
        "\(typed): \(differing.count) of \(n) commands differ from the recording (lines \(differing.map(String.init).joined(separator: ", ")))"
      )
    }
    if !failed.isEmpty {
      throw ReplError(
        "replay",
        "\(typed): \(failed.count) of \(n) commands failed (lines \(failed.map(String.init).joined(separator: ", ")))"
      )
    }
    switch mode {
    case .check: print("checked \(typed): \(Self.count(n, "command")), output matches")
    case .update:
      let changed = script.entries.filter { e in
        outputs[e.lineNumber].map { $0 != e.expected } ?? false
      }.count
      try AtomicFile.replace(
        path, with: Array(Script.rewrite(text, outputs: outputs).utf8), command: "replay",
        displayPath: typed)
      let errors = script.entries.filter { e in outputs[e.lineNumber].map(Self.hasError) ?? false }
        .map(\.lineNumber)
      print(
        "updated \(typed): \(Self.count(outputs.count, "command")) run, \(changed) changed"
          + Self.errorNote(errors, "line"))
    case .run: break
    }
  }

  /// Runs a notebook's code cells (see `Notebook`), in the same three modes as `replay`: a
  /// cell is to a notebook what a command with its `#>` lines is to a script. Relative paths
  /// resolve against the notebook's folder. `.update` rewrites every code cell's outputs and
  /// execution count (1, 2, ... in order), completes the notebook (`Notebook.complete`) and
  /// replaces the file atomically; markdown cells and metadata stay as they are.
  func runNotebook(typed: String, path: String, mode: ReplayMode, keepGoing: Bool) throws {
    let bytes = try Self.readBytes(
      typed: typed, path: path, command: "notebook", what: "a notebook")
    var notebook = try Notebook(bytes: bytes, displayName: typed)
    try pushFrame(typed: typed, path: path, command: "notebook", what: "notebooks")
    defer { frames.removeLast() }

    var differing: [Int] = []
    var failed: [Int] = []
    var changed = 0
    var withErrors: [Int] = []
    var executionCount = 0
    let codeCells = notebook.cells.filter(\.isCode)
    cells: for cell in codeCells {
      executionCount += 1
      let expected = cell.outputLines
      // As in scripts: where Ctrl-C landed cannot be replayed; the cell keeps its output.
      if expected.last?.hasPrefix("^C cancelled") ?? false { continue }
      let expectsError = expected.contains { $0.hasPrefix("error: ") }
      frames[frames.count - 1].cell = cell.number
      let title = cell.title(codeNumber: executionCount)
      // A plain run marks where each cell's output starts (checks and updates compare and
      // store each cell's output on its own).
      if mode == .run { print("── \(title) (cell \(cell.number))") }
      // A notebook shows pictures: checks compare their text, updates store them.
      let capture: CaptureSink? = mode == .run ? nil : CaptureSink(keepsImages: true)
      var result = CommandResult.ok
      for (line, number) in cell.commandLines {
        if session.cancellation.isSet { throw ReplCancelled() }
        let r = runReplayed(
          line, lineNumber: number, expectsError: expectsError, locate: mode != .update,
          into: capture,
          keepGoing: keepGoing)
        if r == .cancelled {
          if let capture { write(capture.text) }
          throw ReplCancelled()
        }
        if case .quit = r {
          result = r
          break
        }
        if r == .failed && mode == .run && !expectsError {
          result = .failed
          if !keepGoing { break }
        }
      }
      let place = "\(typed): cell \(cell.number) (\(title))"
      switch mode {
      case .check:
        if !Mask.matches(expected: expected, actual: capture!.lines) {
          differing.append(cell.number)
          let e = outputDiffers(
            "notebook", where: place, heading: title, expected: expected,
            actual: capture!.lines)
          if !keepGoing { throw e }
          report(e)
        }
      case .update:
        if capture!.text != cell.outputText { changed += 1 }
        if Self.hasError(capture!.lines) { withErrors.append(cell.number) }
        notebook.setOutput(
          ofCell: cell.number, parts: capture!.parts, executionCount: executionCount)
      case .run:
        if result == .failed {
          failed.append(cell.number)
          if !keepGoing { throw ReplError.reported() }
        }
      }
      if case .quit = result { break cells }
    }
    let n = codeCells.count
    if !differing.isEmpty {
      throw ReplError(
        "notebook",
        "\(typed): \(differing.count) of \(Self.count(n, "code cell")) differ from the stored output (cells \(differing.map(String.init).joined(separator: ", ")))"
      )
    }
    if !failed.isEmpty {
      throw ReplError(
        "notebook",
        "\(typed): \(failed.count) of \(Self.count(n, "code cell")) failed (cells \(failed.map(String.init).joined(separator: ", ")))"
      )
    }
    switch mode {
    case .check: print("checked \(typed): \(Self.count(n, "code cell")), output matches")
    case .update:
      notebook.complete()
      try AtomicFile.replace(
        path, with: notebook.serialized(), command: "notebook", displayPath: typed)
      print(
        "updated \(typed): \(Self.count(n, "code cell")), \(changed) changed"
          + Self.errorNote(withErrors, "cell"))
    case .run: break
    }
  }

  // MARK: shared by scripts and notebooks

  /// Whether output holds an error line (an update records it, as the recorder would).
  static func hasError(_ lines: [String]) -> Bool { lines.contains { $0.hasPrefix("error: ") } }

  /// `; recorded errors: lines 3, 9` (so that an update that recorded a failure says so), or
  /// empty.
  static func errorNote(_ places: [Int], _ noun: String) -> String {
    guard !places.isEmpty else { return "" }
    return
      "; recorded errors: \(noun)\(places.count == 1 ? "" : "s") \(places.map(String.init).joined(separator: ", "))"
  }

  /// `3 commands`, `1 code cell`.
  static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

  /// Enters a replayed file: relative paths resolve against its folder from here on.
  func pushFrame(typed: String, path: String, command: String, what: String) throws {
    guard frames.count < Self.maxReplayDepth else {
      throw ReplError(
        command,
        "\(typed): \(what) nested more than \(Self.maxReplayDepth) deep (does it replay itself?)")
    }
    let directory = (path as NSString).deletingLastPathComponent
    frames.append(ScriptFrame(displayPath: typed, directory: directory.isEmpty ? "." : directory))
  }

  /// Runs one command line of the replayed file on top of the frame stack. `capture` takes
  /// its output instead of the terminal (check and update). With `locate`, an error the
  /// recording does not expect is printed with its place (`s.kvl:3:`); an update records
  /// errors as the recorder does, without it.
  func runReplayed(
    _ line: String, lineNumber: Int, expectsError: Bool, locate: Bool, into capture: CaptureSink?,
    keepGoing: Bool
  ) -> CommandResult {
    frames[frames.count - 1].lineNumber = lineNumber
    frames[frames.count - 1].expectsError = expectsError
    frames[frames.count - 1].locate = locate
    defer { frames[frames.count - 1].locate = false }
    guard let capture else { return run(line: line, keepGoing: keepGoing) }
    pushSink(capture)
    defer { popSink() }
    return run(line: line, keepGoing: keepGoing)
  }

  /// The error of a check that found a difference, with a unified diff (-expected, +actual).
  func outputDiffers(
    _ command: String, where place: String, heading: String, expected: [String], actual: [String]
  ) -> ReplError {
    ReplError(
      command, "\(place): output differs from the recording",
      detail: ["--- expected (\(place))", "+++ actual", "@@ \(heading) @@"]
        + LineDiff.unified(expected: expected, actual: actual))
  }

  static func readBytes(typed: String, path: String, command: String, what: String) throws
    -> [UInt8]
  {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ReplError(command, "\(typed): " + BoundedFile.missing(path, notThere: "no such file"))
    }
    if isDirectory.boolValue { throw ReplError(command, "\(typed): is a folder, not \(what)") }
    do {
      // A FIFO would block the read forever, a sparse 1 TB file be allocated whole.
      return try BoundedFile.contents(path, limit: maxScriptBytes)
    } catch let f as BoundedFile.Failure {
      throw ReplError(command, "\(typed): \(f.message)")
    }
  }

  /// Scripts and notebooks are read whole: larger files are refused before reading.
  static let maxScriptBytes = 64 << 20

  static func readText(typed: String, path: String, command: String, what: String) throws -> String
  {
    let bytes = try readBytes(typed: typed, path: path, command: command, what: what)
    guard let text = String(validating: bytes, as: UTF8.self) else {
      throw ReplError(command, "\(typed): not UTF-8 text")
    }
    // Editors on some systems start UTF-8 files with a byte-order mark: it is not a command.
    return text.unicodeScalars.first == "\u{FEFF}" ? String(text.unicodeScalars.dropFirst()) : text
  }
}

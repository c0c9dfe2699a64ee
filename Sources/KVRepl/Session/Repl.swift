import Foundation
import KVEngine
import KVModels
import KVTasks
import KVTensor

/// How a command line ended.
public enum CommandResult: Equatable, Sendable {
  case ok
  /// A command failed; its error line was printed.
  case failed
  /// Ctrl-C stopped it; `^C cancelled: ...` was printed.
  case cancelled
  /// `quit` ran; the current input (the session, or a replayed script) ends.
  case quit(code: Int32)
}

/// The REPL: one engine session, the command table, and the single path every command line
/// takes — typed at the prompt, piped on stdin, given with `-c`, or read from a script.
///
/// Output goes through a stack of sinks: the terminal at the bottom, a recorder tee'd in while
/// recording, a capture on top while `replay --check` compares a command's output.
public final class Repl {
  public let session: Session
  public private(set) var table: CommandTable
  /// Go on after a failing command (`--keep-going`); otherwise a line stops at its first error.
  public var keepGoing = false
  /// Routes Ctrl-C to the running command; nil when no signal handling is installed (tests).
  public var interrupts: InterruptRouter?
  /// The last model `load` reported (for `info`).
  public internal(set) var loaded: LoadReport?
  /// The question and answer of the last sample `feed synthetic` fed (for `synthetic ask`).
  public internal(set) var syntheticQuestion: (question: String, answer: String)?
  /// What generated that sample and the indices its tokens carry (for `policy oracle`'s targets
  /// and the cache map's marks).
  public internal(set) var syntheticFed: FedSynthetic?

  private var sinks: [OutputSink]
  var recorder: Recorder?
  /// The `run(line:)` depth whose lines the recorder records.
  var recorderDepth = 0
  /// Nesting of `run(line:)` (a replayed script's lines run one level deeper).
  private(set) var depth = 0
  /// Scripts being replayed, innermost last.
  var frames: [ScriptFrame] = []

  /// A script being replayed: where relative paths resolve, and which line is running.
  struct ScriptFrame {
    var displayPath: String
    var directory: String
    var lineNumber = 0
    var expectsError = false
    /// Errors of the running line are printed with `file:line` (unexpected ones only).
    var locate = false
    /// The notebook cell running (1-based), when the file is a notebook.
    var cell: Int?
    var location: String {
      cell.map { "\(displayPath): cell \($0), line \(lineNumber)" }
        ?? "\(displayPath):\(lineNumber)"
    }
  }

  /// Longest accepted input line, in bytes.
  public static let maxLineBytes = Script.maxLineBytes

  /// - Parameters:
  ///   - commands: the table; nil = `Repl.standardCommands`.
  public init(session: Session, output: OutputSink, commands: [Command]? = nil) {
    self.session = session
    self.sinks = [output]
    self.table = CommandTable(commands ?? Repl.standardCommands)
  }

  /// Every built-in command, grouped by the object it belongs to. A new engine object adds
  /// its own `[Command]` list (next to its views) and appends it here.
  public static var standardCommands: [Command] {
    SessionCommands.all + VisionCommands.all + SyntheticCommands.all + CacheCommands.all
      + [CompareCommands.compare] + MemoryCommands.all
      + ReplCommands.all
  }

  /// Adds commands to the table (a plug-in object's commands, or a test's).
  public func register(_ commands: [Command]) { table.register(commands) }

  // MARK: output

  /// Where output goes now.
  public var output: OutputSink { sinks[sinks.count - 1] }

  func pushSink(_ sink: OutputSink) { sinks.append(sink) }
  func popSink() { sinks.removeLast() }

  /// Whether a progress line is on the terminal (`CommandContext.progress`): cleared before
  /// anything else is written.
  var progressShown = false

  func clearProgress() {
    guard progressShown else { return }
    progressShown = false
    FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
  }

  public func write(_ text: String, to channel: OutputChannel = .output) {
    clearProgress()
    output.write(text, to: channel)
    if !text.isEmpty { atLineStart = text.hasSuffix("\n") }
  }

  /// Whether the last text written ended its line (a streamed answer cut short does not).
  private(set) var atLineStart = true

  public func print(_ line: String = "") { write(line + "\n") }

  /// Prints an error line (with the script location when it is an unexpected failure in a
  /// script) and its detail lines.
  func report(_ error: ReplError) {
    guard !error.silent else { return }
    // A partial line (a generation that failed half way) is ended first, so that the error
    // and what follows start lines of their own.
    if !atLineStart { write("\n") }
    let location = frames.last.flatMap { $0.locate && !$0.expectsError ? $0.location : nil }
    write(error.line(location: location) + "\n", to: .error)
    for d in error.detail { write(d + "\n", to: .error) }
  }

  public var isRecording: Bool { recorder != nil }

  /// Whether what runs now is recorded, or replayed from a script or notebook: it runs on the
  /// reference prefill kernel unless one was named (`PrefillKernel.withReferenceUnlessNamed`),
  /// so that recorded output is the same whichever kernel `auto` picks on this CPU.
  var makesRecordedOutput: Bool { recorder != nil || !frames.isEmpty }

  // MARK: paths

  /// Where relative paths resolve outside any script; nil = the process's working directory.
  public var workingDirectory: String?

  /// Where relative paths resolve: the folder of the script being replayed, else
  /// `workingDirectory`.
  public var baseDirectory: String? { frames.last?.directory ?? workingDirectory }

  /// A path as typed → a path to open: `~/` expands; relative paths resolve against the
  /// replayed script's folder.
  public func resolve(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    if path == "~" || path.hasPrefix("~/") {
      return NSHomeDirectory() + path.dropFirst()
    }
    guard let base = baseDirectory, !base.isEmpty, base != "." else { return path }
    return (base as NSString).appendingPathComponent(path)
  }

  // MARK: running

  /// Runs one line: one or more commands separated by `;`. Blank lines and `#` comments do
  /// nothing. Stops at the first failing command unless `keepGoing`.
  @discardableResult
  public func run(line: String, keepGoing: Bool? = nil) -> CommandResult {
    depth += 1
    defer { depth -= 1 }
    let keepGoing = keepGoing ?? self.keepGoing
    if depth == 1 { session.cancellation.clear() }
    defer { if depth == 1 { output.flush() } }

    let trimmed = line.trimmingCharacters(in: .whitespaces)
    if trimmed.isEmpty || trimmed.hasPrefix("#") { return .ok }

    var recording: Recorder?
    if let r = recorder, depth == recorderDepth, !isUnrecorded(line) {
      let recorded = recordedLine(line, recordingFolder: r.folder)
      r.begin(command: recorded.line, renames: recorded.renames)
      pushSink(TeeSink([output, r]))
      recording = r
    }
    defer {
      if let recording {
        recording.end()
        popSink()
        // A recording that could not be written (a full disk) stops, saying so once; the
        // session goes on.
        if let failure = recording.failure {
          recorder = nil
          report(failure)
        }
      }
    }

    if line.utf8.count > Self.maxLineBytes {
      report(
        ReplError(
          nil, "line too long (\(line.utf8.count) bytes; the limit is \(Self.maxLineBytes))"))
      return .failed
    }
    let commands: [[Token]]
    do {
      commands = try Lexer.commands(line)
    } catch {
      report(ReplError(error.command, error.message))
      return .failed
    }
    var result = CommandResult.ok
    for words in commands {
      let r = execute(words)
      switch r {
      case .ok: continue
      case .quit, .cancelled: return r
      case .failed:
        result = .failed
        if !keepGoing { return result }
      }
    }
    return result
  }

  /// Whether a line is kept out of recordings (it starts with `record` or `quit`).
  func isUnrecorded(_ line: String) -> Bool {
    guard let first = (try? Lexer.commands(line))?.first?.first else { return false }
    let forms = table.forms(of: first.text)
    return !forms.isEmpty && forms.allSatisfy(\.notRecorded)
  }

  /// Parses and runs one command, reporting its failure.
  func execute(_ words: [Token]) -> CommandResult {
    var name = words.first?.text
    let context: CommandContext
    do {
      switch try table.parse(words) {
      case .help(let noun, let verb):
        let lines = try noun.map { try table.help(noun: $0, verb: verb) } ?? table.overview()
        for l in lines { print(l) }
        return .ok
      case .run(let command, let arguments):
        name = command.name
        context = CommandContext(repl: self, command: command, arguments: arguments)
      }
    } catch let e as ReplError {
      report(e)
      return .failed
    } catch {
      report(ReplError(name, "\(error)"))
      return .failed
    }

    let outermost = depth == 1
    if outermost { interrupts?.commandStarted(session.cancellation) }
    // Long prefills (64 frames, a long text) show how far they are, at a terminal only.
    if outermost {
      session.onPrefillProgress = { done, total in
        context.progress("\(context.command.name): prefill \(done) of \(total) tokens")
      }
    }
    defer { if outermost { interrupts?.commandFinished() } }
    do {
      // Cleared before anything is reported (a defer in `do` runs before `catch`).
      defer {
        if outermost {
          session.onPrefillProgress = nil
          context.progress(nil)
        }
      }
      if makesRecordedOutput {
        try PrefillKernel.withReferenceUnlessNamed { try context.command.run(context) }
      } else {
        try context.command.run(context)
      }
      if let code = context.quitCode { return .quit(code: code) }
      return .ok
    } catch let e as ReplError {
      report(context.unresolve(e))
      return .failed
    } catch is ReplCancelled {
      return .cancelled
    } catch let e as EngineError {
      if case .cancelled = e {
        if let terminal = sinks.first as? StandardSink, !terminal.atLineStart { write("\n") }
        write("^C \(e.description)\n", to: .error)
        return .cancelled
      }
      report(context.unresolve(ReplError(context.command.name, e.description)))
      return .failed
    } catch {
      report(context.unresolve(ReplError(context.command.name, "\(error)")))
      return .failed
    }
  }

  // MARK: input sources

  /// Maps a result to a process exit status: 0 ok, 1 failed, 130 cancelled, or quit's code.
  public static func exitCode(_ r: CommandResult) -> Int32 {
    switch r {
    case .ok: return 0
    case .failed: return 1
    case .cancelled: return 130
    case .quit(let code): return code
    }
  }

  /// `-c 'cmd; cmd'`: each command is a line (so `record start` records the ones after it).
  /// Returns the exit status.
  public func runCommands(_ lines: [String]) -> Int32 {
    var remaining = lines.flatMap(Lexer.commandLines).makeIterator()
    return runLines { remaining.next() }
  }

  /// Piped stdin, line by line as bytes: as a script file, a UTF-8 byte-order mark at the start
  /// is skipped and a line that is not UTF-8 is an error (`error: stdin:3: not UTF-8 text`),
  /// never run with its bytes replaced.
  public func runLines(bytes next: () -> [UInt8]?) -> Int32 {
    var number = 0
    var status: Int32 = 0
    let result = runLines { () -> String? in
      while var raw = next() {
        number += 1
        if number == 1, raw.starts(with: [0xEF, 0xBB, 0xBF]) { raw.removeFirst(3) }
        if let line = String(validating: raw, as: UTF8.self) { return line }
        report(ReplError(nil, "stdin:\(number): not UTF-8 text"))
        status = 1
        if !keepGoing { return nil }
      }
      return nil
    }
    return max(result, status)
  }

  /// Piped stdin (or any line source): no prompt, output flushed after every command,
  /// `#>` lines ignored. Stops with status 1 at the first error unless `keepGoing`.
  public func runLines(_ next: () -> String?) -> Int32 {
    var status: Int32 = 0
    while let line = next() {
      let r = run(line: line)
      switch r {
      case .ok: continue
      case .quit(let code): return code
      case .cancelled: return 130
      case .failed:
        status = 1
        if !keepGoing { return 1 }
      }
    }
    return status
  }

  /// `kvlab SCRIPT [--check|--update]` / `kvlab replay SCRIPT`: the same as the `replay`
  /// command.
  public func runScript(_ path: String, check: Bool) -> Int32 {
    runScript(path, mode: check ? .check : .run)
  }

  public func runScript(_ path: String, mode: ReplayMode) -> Int32 {
    Repl.exitCode(run(line: "replay \(Repl.quote(path))" + Self.flags(mode, keepGoing: keepGoing)))
  }

  /// `kvlab notebook run FILE.ipynb [--check|--update]`: the same as the `notebook run`
  /// command.
  public func runNotebook(_ path: String, mode: ReplayMode) -> Int32 {
    Repl.exitCode(
      run(line: "notebook run \(Repl.quote(path))" + Self.flags(mode, keepGoing: keepGoing)))
  }

  static func flags(_ mode: ReplayMode, keepGoing: Bool) -> String {
    var s = ""
    switch mode {
    case .run: break
    case .check: s += " --check"
    case .update: s += " --update"
    }
    if keepGoing { s += " --keep-going" }
    return s
  }

  /// A word as the grammar reads it back: quoted when it holds spaces, quotes, `;`, `=` or `#`.
  public static func quote(_ word: String) -> String {
    let special: Set<Character> = [" ", "\t", "\"", ";", "=", "#", "\\", "\n"]
    guard word.isEmpty || word.contains(where: { special.contains($0) }) else { return word }
    var s = "\""
    for ch in word {
      switch ch {
      case "\"": s += "\\\""
      case "\\": s += "\\\\"
      case "\n": s += "\\n"
      case "\t": s += "\\t"
      default: s.append(ch)
      }
    }
    return s + "\""
  }
}

/// Thrown by a command that was cancelled and already said so (a replay whose line was
/// cancelled): the caller stops quietly.
struct ReplCancelled: Error {}

/// What a running command sees: its arguments, the session, the output.
public final class CommandContext {
  public let repl: Repl
  public let command: Command
  public let args: Arguments
  /// Set by `quit`.
  public var quitCode: Int32?
  /// Resolved path → path as typed, so that messages show what the user wrote.
  private var typedPaths: [(resolved: String, typed: String)] = []

  init(repl: Repl, command: Command, arguments: Arguments) {
    self.repl = repl
    self.command = command
    self.args = arguments
  }

  public var session: Session { repl.session }

  public func write(_ text: String) {
    repl.write(text)
    repl.output.flush()
  }

  public func print(_ line: String = "") { repl.print(line) }

  /// Whether the output shows pictures (a notebook, the Jupyter kernel).
  public var showsImages: Bool { repl.output.showsImages }

  /// A view: its PNG where pictures are shown (with `lines` as the text that stands for it),
  /// else the lines. The PNG is made only when it is shown.
  public func display(lines: [String], png: () throws -> [UInt8]) throws {
    let text = lines.map { $0 + "\n" }.joined()
    guard showsImages else { return write(text) }
    repl.clearProgress()
    repl.output.display(png: try png(), text: text)
    repl.output.flush()
  }

  /// An error of this command.
  public func error(_ message: String) -> ReplError { ReplError(command.name, message) }

  /// A progress line for long work, on stderr and only at an interactive terminal (never in
  /// scripts, recordings or checks); nil clears it.
  public func progress(_ text: String?) {
    guard let text else {
      repl.clearProgress()
      return
    }
    guard repl.interrupts?.interactive == true, isatty(2) == 1 else { return }
    repl.progressShown = true
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
  }

  /// Resolves a path argument (see `Repl.resolve`), remembering how it was typed.
  public func resolve(_ path: String) -> String {
    let resolved = repl.resolve(path)
    if resolved != path { typedPaths.append((resolved, path)) }
    return resolved
  }

  /// Puts typed paths back into an error's message (the engine reports resolved paths,
  /// which would differ between machines).
  func unresolve(_ e: ReplError) -> ReplError {
    var e = e
    for (resolved, typed) in typedPaths.sorted(by: { $0.resolved.count > $1.resolved.count }) {
      e.message = e.message.replacingOccurrences(of: resolved, with: typed)
    }
    return e
  }
}

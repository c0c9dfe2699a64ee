import Foundation
import KVEngine
import KVTensor

/// The REPL's own commands: help, echo, info, record, replay, quit.
public enum ReplCommands {
  public static var all: [Command] {
    [info, help, echo, sleep, recordStart, recordStop, replay, notebookRun, quit]
  }

  static let help = Command(
    "help", summary: "list the commands, or explain one",
    help: """
      With no argument, lists every command with a one-line summary. With a command (and \
      optionally its subcommand) prints its usage, what it does, and its arguments and options \
      with their types and defaults. `COMMAND --help` does the same.
      """,
    positionals: [
      Positional("COMMAND", .command, optional: true, help: "a command, e.g. feed"),
      Positional("VERB", .verb, optional: true, help: "one of its subcommands, e.g. text"),
    ]
  ) { ctx in
    let lines =
      try ctx.args.positional("COMMAND").map {
        try ctx.repl.table.help(noun: $0, verb: ctx.args.positional("VERB"))
      } ?? ctx.repl.table.overview()
    for l in lines { ctx.print(l) }
  }

  static let echo = Command(
    "echo", summary: "print text (a marker for scripts and pipes)",
    help: """
      Prints its words, joined by single spaces (quote text to keep its spacing), and a \
      newline. A program driving kvlab over a pipe can send `echo MARKER` after a cell's \
      commands and read output until MARKER comes back.
      """,
    positionals: [Positional("TEXT", .text, optional: true, rest: true, help: "what to print")]
  ) { ctx in
    ctx.print(ctx.args.positional("TEXT") ?? "")
  }

  static let sleep = Command(
    "sleep", summary: "wait (Ctrl-C cancels)",
    help: "Waits SECONDS, checking for Ctrl-C every 10 ms: a pause in a demo script, and a command to try cancellation on.",
    positionals: [Positional("SECONDS", .number(0...86400), help: "how long to wait")]
  ) { ctx in
    let seconds = Double(ctx.args.positional("SECONDS")!)!
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
      if ctx.session.cancellation.isSet { throw EngineError.cancelled("sleep stopped early") }
      usleep(10_000)
    }
  }

  static let info = Command(
    "info", summary: "threads, OpenBLAS kernel, model and context",
    help: """
      Shows the number of threads, the OpenBLAS kernel (openblas_get_corename(); varies by \
      machine, so printed as ~NAME) and how it was chosen: ~(detected) by OpenBLAS itself, \
      ~(OPENBLAS_CORETYPE) from the environment, or ~(auto) by `kvlab --blas-core auto`; the \
      path of kvlab's own weight kernels (portable, avx2, avx512: the widest this CPU runs, \
      unless `kvlab --kernels` chose one) with the CPU's vector features, and the prefill \
      kernel with why (`kvlab --prefill-kernel`: auto is bf16 where the CPU has avx512_bf16, \
      int8 where it has avx2 only, sgemm, the float32 reference, elsewhere and while recording \
      or replaying); then the loaded \
      model, its weights' formats and where they are resident, and how many tokens the context \
      and cache hold. What depends on the machine prints as ~values.
      """
  ) { ctx in
    let env = ProcessInfo.processInfo.environment
    let source =
      env["OPENBLAS_CORETYPE"] == nil
      ? "detected" : env[BLASCore.reexecGuard] != nil ? "auto" : "OPENBLAS_CORETYPE"
    ctx.print("threads: \(ctx.session.options.threads)")
    ctx.print("blas: OpenBLAS, kernel ~\(BLAS.coreName) ~(\(source))")
    let path = KernelPath.current
    let features = KernelPath.cpuFeatures.joined(separator: " ")
    let prefillWhy = prefillKernelReason(
      PrefillKernel.choice, pinnedToReference: PrefillKernel.isPinnedToReference,
      features: KernelPath.cpuFeatures)
    ctx.print(
      "kernels: ~\(path.rawValue) ~(\(path == KernelPath.best ? "widest this CPU runs" : "chosen by --kernels")), prefill ~\(PrefillKernel.current.rawValue) ~(\(prefillWhy)); cpu ~(\(features.isEmpty ? "no avx2" : features))")
    guard let m = ctx.repl.loaded, ctx.session.modelPath != nil else {
      ctx.print("model: none (use 'load')")
      return
    }
    ctx.print(
      "model: \(m.name) (\(m.architecture), \(m.layers) layers, vocab \(m.vocabulary), \(Format.count(m.parameters)) parameters) from \((m.path as NSString).lastPathComponent)"
    )
    ctx.print(
      "weights: \(m.weightFormat); \(Format.bytes(m.weightBytes)) on the heap, \(Format.bytes(m.mappedWeightBytes)) mapped from the file")
    var context = "context: \(ctx.session.contextCount) tokens"
    if let c = ctx.session.cacheSummary {
      context += "; cache \(c.tokens) tokens, \(Format.bytes(c.bytes))"
    }
    ctx.print(context)
  }

  static let recordStart = Command(
    "record", verb: "start", summary: "record the session to a script",
    help: """
      Writes every following command line to FILE, each followed by its output as `#>` lines, \
      as it happens (a crash loses nothing already shown). The file is a script that \
      `replay FILE --check` re-runs and compares. An existing file is refused unless \
      append=on. `record` and `quit` lines are not recorded.
      """,
    positionals: [Positional("FILE", .path(extensions: []), help: "the script to write, e.g. session.kvl")],
    options: [Option("append", .toggle, default: "off", help: "add to an existing file")],
    notRecorded: true
  ) { ctx in
    if let r = ctx.repl.recorder {
      throw ctx.error("already recording to \(r.displayPath) (use 'record stop' first)")
    }
    let typed = ctx.args.positional("FILE")!
    let recorder: Recorder
    do {
      recorder = try Recorder(
        path: ctx.resolve(typed), displayPath: typed,
        mode: ctx.args.toggle("append") ? .append : .create)
    } catch let e as ReplError {
      throw ctx.error(e.message)
    }
    ctx.repl.recorder = recorder
    ctx.repl.recorderDepth = ctx.repl.depth
    ctx.print("recording to \(typed)")
  }

  static let recordStop = Command(
    "record", verb: "stop", summary: "stop recording",
    help: "Closes the script that `record start` opened and says how many commands it holds.",
    notRecorded: true
  ) { ctx in
    guard let r = ctx.repl.recorder else { throw ctx.error("not recording") }
    r.stop()
    ctx.repl.recorder = nil
    ctx.print("recorded \(r.commandCount) command\(r.commandCount == 1 ? "" : "s") to \(r.displayPath)")
  }

  static let replay = Command(
    "replay", summary: "run a script; --check compares its output, --update rewrites it",
    help: """
      Runs the commands in FILE (paths inside it resolve relative to its folder). It stops at \
      the first failing command unless --keep-going; a failure the script expects (an \
      `#> error: ...` line below the command) does not count, and a command recorded as \
      cancelled (`#> ^C cancelled: ...`) is skipped. With --check, each command's output is \
      compared with the `#>` lines below it: a value marked with `~` (a time, rate, RSS, the \
      BLAS kernel) matches any value and a run of blanks matches one space; the first \
      difference stops the replay with a diff (-expected, +actual). With --update, every \
      command runs and its `#>` lines become what it printed now (varying values too); \
      comments, blank lines and command lines stay as they are, and the file is replaced \
      atomically (a temporary file, fsync, rename).
      """,
    positionals: [Positional("FILE", .path(extensions: ["kvl", "txt"]), help: "the script, e.g. session.kvl")],
    options: [
      Option("check", .toggle, default: "off", help: "compare the output with the recording"),
      Option(
        "update", .toggle, default: "off", help: "rewrite the recording with the output of this run"),
      Option("keep-going", .toggle, default: "off", help: "do not stop at the first failure"),
    ]
  ) { ctx in
    let typed = ctx.args.positional("FILE")!
    try ctx.repl.replay(
      typed: typed, path: ctx.resolve(typed), mode: try replayMode(ctx, "replay", "#> lines"),
      keepGoing: ctx.args.toggle("keep-going"))
  }

  static let notebookRun = Command(
    "notebook", verb: "run", summary: "run a Jupyter notebook's kvlab cells; --check, --update",
    help: """
      Runs the code cells of FILE, a Jupyter notebook (nbformat 4) whose code cells hold kvlab \
      commands, one per line (blank lines and # comments allowed); paths inside it resolve \
      relative to its folder. A cell's stored output is its `stdout` stream: what its commands \
      printed, error lines included. Without a flag the output shows and the first cell with \
      an unexpected failure stops the run unless --keep-going. --check compares each code \
      cell's output with the stored one as `replay --check` does (values marked `~` match any \
      value) and stops at the first difference with a diff naming the cell (cells count from \
      1, markdown included). --update stores this run's output and execution counts and \
      replaces the file atomically; markdown cells, metadata and cell ids stay as they are.
      """,
    positionals: [
      Positional("FILE", .path(extensions: ["ipynb"]), help: "the notebook, e.g. quickstart.ipynb")
    ],
    options: [
      Option(
        "check", .toggle, default: "off", help: "compare each cell's output with the stored one"),
      Option(
        "update", .toggle, default: "off", help: "store the output of this run in the notebook"),
      Option("keep-going", .toggle, default: "off", help: "do not stop at the first failure"),
    ]
  ) { ctx in
    let typed = ctx.args.positional("FILE")!
    try ctx.repl.runNotebook(
      typed: typed, path: ctx.resolve(typed),
      mode: try replayMode(ctx, "notebook", "stored outputs"),
      keepGoing: ctx.args.toggle("keep-going"))
  }

  /// --check and --update: at most one.
  static func replayMode(
    _ ctx: CommandContext, _ command: String, _ recording: String
  ) throws -> ReplayMode {
    switch (ctx.args.toggle("check"), ctx.args.toggle("update")) {
    case (true, true):
      throw ReplError(
        command,
        "--check and --update do not go together (--check compares the \(recording), --update rewrites them)"
      )
    case (true, false): return .check
    case (false, true): return .update
    case (false, false): return .run
    }
  }

  static let quit = Command(
    "quit", summary: "leave kvlab (or end the script being replayed)",
    help: "Ends the session; in a replayed script, ends that script. Ctrl-D at the prompt also quits.",
    notRecorded: true
  ) { ctx in
    ctx.quitCode = 0
  }
}

extension ReplCommands {
  /// Why the prefill runs on the kernel it does, as `info` words it: named on the command
  /// line, `auto` pinned to the reference by a recording or replay, or `auto`'s choice on a CPU
  /// with `features`.
  static func prefillKernelReason(
    _ choice: PrefillKernel.Choice, pinnedToReference: Bool, features: [String]
  ) -> String {
    switch choice {
    case .named: return "chosen by --prefill-kernel"
    case .auto where pinnedToReference: return "auto: recording and replay run the float32 reference"
    case .auto:
      switch PrefillKernel.automatic(features: features) {
      case .bf16: return "auto: avx512_bf16; --prefill-kernel sgemm for the float32 reference"
      case .int8: return "auto: avx2 without avx512_bf16; --prefill-kernel sgemm for the float32 reference"
      case .sgemm: return "auto: no avx2"
      }
    }
  }
}

extension Format {
  /// `134.5M`, `1.2B`, `900`.
  /// Text for a table cell: quoted, control characters escaped, cut to `width` with "…".
  public static func preview(_ text: String, width: Int) -> String {
    var escaped = ""
    for ch in text {
      switch ch {
      case "\n": escaped += "\\n"
      case "\t": escaped += "\\t"
      case "\r": escaped += "\\r"
      default: escaped.append(ch)
      }
    }
    let body = escaped.count > width - 2 ? String(escaped.prefix(width - 3)) + "…" : escaped
    return "\"" + body + "\""
  }

  public static func count(_ n: Int) -> String {
    switch n {
    case 1_000_000_000...: return String(format: "%.2fB", Double(n) / 1e9)
    case 1_000_000...: return String(format: "%.2fM", Double(n) / 1e6)
    case 10_000...: return String(format: "%.1fK", Double(n) / 1e3)
    default: return String(n)
    }
  }

  /// Columns two spaces apart: those in `left` (the first by default) left-aligned, the rest
  /// right-aligned; no trailing blanks.
  public static func table(_ rows: [[String]], left: Set<Int> = [0]) -> [String] {
    let columns = rows.map(\.count).max() ?? 0
    var widths = [Int](repeating: 0, count: columns)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
      var line = ""
      for (i, c) in r.enumerated() {
        let pad = String(repeating: " ", count: widths[i] - c.count)
        line += (i == 0 ? "" : "  ") + (left.contains(i) ? c + pad : pad + c)
      }
      while line.hasSuffix(" ") { line.removeLast() }
      return line
    }
  }

  /// "1 tile", "2 tiles", "2 temporal patches".
  public static func plural(_ n: Int, _ noun: String) -> String {
    if n == 1 { return "1 \(noun)" }
    return "\(n) " + (noun.hasSuffix("ch") || noun.hasSuffix("s") ? noun + "es" : noun + "s")
  }
}

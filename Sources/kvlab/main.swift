import ArgumentParser
import Foundation
import KVEngine
import KVRepl
import KVTensor

/// `kvlab`: the REPL; `kvlab SCRIPT` / `kvlab replay SCRIPT [--check|--update]`;
/// `kvlab notebook run FILE.ipynb [--check|--update]`; `kvlab -c 'cmds'`; commands piped on
/// stdin.
struct KVLab: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kvlab",
    abstract: "A notebook-style REPL around a CPU inference engine with a budgeted KV cache.",
    usage: """
      kvlab [options]
      kvlab [options] SCRIPT [--check|--update]
      kvlab [options] replay SCRIPT [--check|--update]
      kvlab [options] notebook run FILE.ipynb [--check|--update]
      kvlab [options] -c 'COMMAND; COMMAND; ...'
      COMMANDS | kvlab [options]
      kvlab [options] --serve NONCE
      """,
    discussion: """
      With no script and stdin a terminal, starts the interactive REPL (history in \
      ~/.kvlab_history or $KVLAB_HISTORY; empty disables it). With a script, or commands on \
      stdin, runs them with no prompt, flushing after each, and exits non-zero at the first \
      error unless --keep-going. Inside kvlab, 'help' lists the commands.

      --serve NONCE is the pipe protocol a program drives kvlab with (the Jupyter kernel in \
      kernel/): command lines on stdin; on stdout each command's output as printed, its error \
      text framed as '\\x1Ekvlab:NONCE:err LEN' + newline + LEN bytes, and after every line \
      '\\x1Ekvlab:NONCE:done ok|failed|cancelled|quit CODE' + newline ('\\x1Ekvlab:NONCE:ready' \
      first). A line '\\x1Ekvlab:NONCE:complete TEXT' asks for the Tab completions of TEXT \
      (answered by a 'complete LEN' record of LEN bytes of JSON). A failing line does not end \
      it; SIGINT cancels the running command; EOF exits 0.
      """)

  @Argument(
    help: ArgumentHelp(
      "A script to run: SCRIPT, replay SCRIPT, or notebook run FILE.ipynb.", valueName: "SCRIPT"))
  var script: [String] = []

  @ArgumentParser.Option(
    name: .customShort("c"),
    help: ArgumentHelp(
      "Run these commands (';' separates them) and exit. Repeatable.", valueName: "commands"))
  var commands: [String] = []

  @Flag(help: "Compare each command's output with the script's #> lines (with SCRIPT).")
  var check = false

  @Flag(help: "Rewrite the script's #> lines (a notebook's outputs) with this run's output.")
  var update = false

  @Flag(name: .customLong("keep-going"), help: "Do not stop at the first failing command.")
  var keepGoing = false

  @ArgumentParser.Option(help: "Threads for OpenBLAS and the engine.")
  var threads: Int = 2

  @ArgumentParser.Option(
    name: .customLong("blas-core"),
    help: ArgumentHelp(
      "auto (the default): when OpenBLAS fell back to a generic kernel (Debian's 0.3.21 does on CPUs newer than it), re-execute once with OPENBLAS_CORETYPE chosen from the CPU's flags (SkylakeX for AVX-512, Haswell for AVX2); an OPENBLAS_CORETYPE already set is respected. keep: leave OpenBLAS's choice. A kernel name (Haswell, SkylakeX, Cooperlake, Prescott, ...) forces it, after checking the CPU has what it needs.",
      valueName: "auto|keep|CORE"))
  var blasCore: String = "auto"

  @ArgumentParser.Option(
    help: ArgumentHelp(
      "kvlab's own weight kernels: auto (the widest this CPU runs), avx512, avx2 or portable (float32 decode), avx512vnni, avx2-int8 or portable-int8 (decode with x quantized to int8, as llama.cpp). A path the CPU lacks is refused.",
      valueName: "auto|PATH"))
  var kernels: String = "auto"

  @ArgumentParser.Option(
    name: .customLong("prefill-kernel"),
    help: ArgumentHelp(
      "How prefill blocks multiply by weights stored below float32: auto (the default: bf16 where the CPU has avx512_bf16, else int8 where it has avx2, else sgemm), sgemm (OpenBLAS float32 on dequantized tiles: the float32 reference), bf16 (kvlab's AVX512-BF16 kernel: bfloat16 products, float32 sums) or int8 (kvlab's integer kernel for Q8_0/Q4_0/Q4_1 weights: activations quantized to int8 blocks, exact int32 block sums; other formats take sgemm). See `fidelity` for their distance from the reference. Under auto, recording, replay and notebook run use sgemm, so that recorded output is the same on every CPU; a kernel named here applies to them too.",
      valueName: "auto|sgemm|bf16|int8"))
  var prefillKernel: String = "auto"

  @ArgumentParser.Option(
    help: ArgumentHelp("Load this model first (as 'load PATH').", valueName: "PATH"))
  var model: String?

  @Flag(name: .customLong("no-history"), help: "Do not read or write the history file.")
  var noHistory = false

  @ArgumentParser.Option(
    help: ArgumentHelp(
      "Serve command lines from stdin over the pipe protocol (described above); NONCE (8-128 letters, digits, - or _) marks its records.",
      valueName: "NONCE"))
  var serve: String?

  mutating func validate() throws {
    if !["auto", "keep"].contains(blasCore) {
      do { try BLASCore.checkForced(blasCore) } catch { throw ValidationError("--blas-core: \(error)") }
    }
    do { try KernelPath.select(KernelPath.parse(kernels)) } catch {
      throw ValidationError("--kernels: \(error)")
    }
    do { try PrefillKernel.select(PrefillKernel.parse(prefillKernel)) } catch {
      throw ValidationError("--prefill-kernel: \(error)")
    }
    guard (1...256).contains(threads) else {
      throw ValidationError("--threads must be a whole number in 1...256, got \(threads)")
    }
    if script.first == "replay" {
      script.removeFirst()
      if script.isEmpty {
        throw ValidationError("replay needs a script: kvlab replay SCRIPT [--check]")
      }
    } else if script.first == "notebook" {
      guard script.count >= 2, script[1] == "run" else {
        throw ValidationError(
          "usage: kvlab notebook run FILE.ipynb [--check|--update] [--keep-going]")
      }
      guard script.count == 3 else {
        throw ValidationError("notebook run takes one notebook: kvlab notebook run FILE.ipynb")
      }
    }
    guard script.count <= 1 || script.first == "notebook" else {
      throw ValidationError(
        "expected one script, got \(script.count): \(script.joined(separator: " "))")
    }
    if !script.isEmpty && !commands.isEmpty {
      throw ValidationError("give either a script or -c commands, not both")
    }
    if let serve {
      guard ServeSink.isValidNonce(serve) else {
        throw ValidationError(
          "--serve needs a nonce of 8 to 128 letters, digits, '-' or '_', got '\(serve)'")
      }
      guard script.isEmpty && commands.isEmpty && model == nil else {
        throw ValidationError(
          "--serve reads its commands from stdin: give no script, -c or --model with it")
      }
    }
    if check && script.isEmpty {
      throw ValidationError("--check compares a script's output: kvlab SCRIPT --check")
    }
    if update && script.isEmpty {
      throw ValidationError("--update rewrites a script's output: kvlab SCRIPT --update")
    }
    if check && update {
      throw ValidationError(
        "--check and --update do not go together: --check compares the recorded output, --update rewrites it"
      )
    }
  }

  func run() throws {
    // A write past `ulimit -f` fails with EFBIG (each writer's error) instead of killing kvlab.
    FileSizeLimit.reportAsErrors()
    if blasCore == "auto" {
      reexecWithBetterBLASCore()
    } else if blasCore != "keep" {
      reexec(withBLASCore: blasCore)
    }
    ProcessMemory.returnLargeFreesToTheSystem()
    let session = Session(
      options: EngineOptions(threads: threads, modelDirectories: Self.modelDirectories()))
    let serveSink = serve.map { ServeSink(nonce: $0) }
    let repl = Repl(session: session, output: serveSink ?? StandardSink())
    repl.keepGoing = keepGoing
    let interactive = script.isEmpty && commands.isEmpty && isatty(0) == 1 && serveSink == nil
    // Serving, as at the prompt, SIGINT cancels the running command and never ends kvlab.
    repl.interrupts = InterruptRouter(interactive: interactive || serveSink != nil)

    // -c text must be UTF-8, as a script file must (Swift's arguments replace bad bytes).
    for k in 1..<Int(CommandLine.argc) {
      guard let arg = CommandLine.unsafeArgv[k] else { continue }
      let raw = Array(UnsafeBufferPointer(start: arg, count: strlen(arg))).map { UInt8(bitPattern: $0) }
      if String(validating: raw, as: UTF8.self) == nil {
        FileHandle.standardError.write(Data("error: argument \(k) is not UTF-8 text\n".utf8))
        throw ExitCode(1)
      }
    }
    var status: Int32 = 0
    if let model {
      status = Repl.exitCode(repl.run(line: "load \(Repl.quote(model))"))
      if status != 0 && !keepGoing { throw ExitCode(status) }
    }
    if let serveSink {
      let stdin = FileLineReader(fd: 0)
      status = repl.serve(serveSink) { stdin.next() }
    } else if let path = script.last {
      // `notebook run FILE`, or a file named *.ipynb: a notebook; anything else: a script.
      let mode: ReplayMode = check ? .check : update ? .update : .run
      let notebook = script.first == "notebook" || path.hasSuffix(".ipynb")
      status = max(
        status, notebook ? repl.runNotebook(path, mode: mode) : repl.runScript(path, mode: mode))
    } else if !commands.isEmpty {
      status = max(status, repl.runCommands(commands))
    } else if interactive {
      let history = noHistory ? nil : LineEditor.defaultHistoryFile()
      status = repl.runInteractive(historyFile: history)
    } else {
      let stdin = FileLineReader(fd: 0)
      status = max(status, repl.runLines(bytes: { stdin.nextBytes() }))
    }
    fflush(stdout)
    if status != 0 { throw ExitCode(status) }
  }

  /// Where `load` with no path looks for the embedded model: $KVLAB_MODELS, ./weights,
  /// ./models, then `weights` and `models` folders next to (or above) the executable, so that
  /// the binary in .build finds the repository's.
  static func modelDirectories() -> [String] {
    var dirs: [String] = []
    if let env = ProcessInfo.processInfo.environment[EngineOptions.modelsVariable], !env.isEmpty {
      dirs.append(env)
    }
    dirs += EngineOptions.modelFolders
    var folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
      .deletingLastPathComponent()
    for _ in 0..<5 {
      for name in EngineOptions.modelFolders {
        let candidate = folder.appendingPathComponent(name).path
        if FileManager.default.fileExists(atPath: candidate) && !dirs.contains(candidate) {
          dirs.append(candidate)
        }
      }
      folder.deleteLastPathComponent()
    }
    return dirs
  }

  /// `--blas-core auto`: OPENBLAS_CORETYPE is read when libopenblas loads, before main(), so
  /// choosing a kernel means running the program again with it set. Done at most once (a guard
  /// variable marks the child), never when the user set OPENBLAS_CORETYPE, and only when
  /// OpenBLAS fell back to a generic kernel and the CPU's flags name a better one.
  func reexecWithBetterBLASCore() {
    let env = ProcessInfo.processInfo.environment
    guard let core = BLASCore.reexecTarget(environment: env, currentCore: BLAS.coreName) else {
      return
    }
    reexec(withBLASCore: core)
  }

  /// Runs the program again with OPENBLAS_CORETYPE=core (once: the guard variable marks the
  /// child), or goes on with the kernel it has when that fails.
  func reexec(withBLASCore core: String) {
    if ProcessInfo.processInfo.environment[BLASCore.reexecGuard] != nil { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv(BLASCore.reexecGuard, BLAS.coreName, 1)
    fflush(stdout)
    fflush(stderr)
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
    argv.append(nil)
    execv("/proc/self/exe", argv)
    // Only reached when exec failed: go on with the kernel we have.
    let reason = String(cString: strerror(errno))
    fputs(
      "kvlab: --blas-core \(core): could not re-execute (\(reason)); keeping \(BLAS.coreName)\n",
      stderr)
    unsetenv("OPENBLAS_CORETYPE")
  }
}

KVLab.main()

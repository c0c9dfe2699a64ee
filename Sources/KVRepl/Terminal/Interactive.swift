import Foundation

extension Repl {
  /// The interactive session: libedit prompt, history, completion; Ctrl-C cancels the running
  /// command (or clears the line at the prompt), Ctrl-D or `quit` leaves.
  /// Needs `interrupts` set (an `InterruptRouter(interactive: true)`).
  public func runInteractive(historyFile: String?, banner: Bool = true) -> Int32 {
    let editor = LineEditor(historyFile: historyFile) { [unowned self] in
      Completer(table: self.table, directory: self.baseDirectory)
    }
    // The terminal would echo Ctrl-C as `^C` while a command runs; the REPL says
    // `^C cancelled: ...` itself, so the echo is turned off (and restored on the way out).
    var saved = termios()
    let haveTerminal = tcgetattr(0, &saved) == 0
    if haveTerminal {
      var quiet = saved
      quiet.c_lflag &= ~tcflag_t(ECHOCTL)
      tcsetattr(0, TCSANOW, &quiet)
    }
    defer { if haveTerminal { tcsetattr(0, TCSANOW, &saved) } }
    if banner { print("kvlab — 'help' lists the commands; Tab completes; Ctrl-D quits") }
    output.flush()
    while true {
      interrupts?.promptStarted()
      let line = editor.readLine(prompt: isRecording ? "kvlab rec> " : "kvlab> ")
      let interrupted = interrupts?.promptFinished() ?? false
      guard let line else {
        if interrupted {
          write("^C\n")
          output.flush()
          continue
        }
        write("\n")
        output.flush()
        return 0
      }
      editor.addHistory(line)
      if case .quit(let code) = run(line: line) { return code }
    }
  }
}

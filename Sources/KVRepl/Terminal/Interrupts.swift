import Dispatch
import Foundation
import KVEngine

/// Ctrl-C without a global: SIGINT's disposition is SIG_IGN and a DispatchSourceSignal
/// delivers it to this object on a private queue (libdispatch reads it through signalfd, so no
/// C handler runs). What it does depends on what the REPL is doing:
///
/// - a command runs: set that session's cancellation flag (the engine stops between blocks and
///   tokens and throws `EngineError.cancelled`); a third Ctrl-C in the same command exits (130),
///   for a command that never checks the flag;
/// - the prompt waits in libedit: kick the main thread with SIGUSR1, whose handler does nothing
///   but is installed without SA_RESTART, so libedit's read(2) fails with EINTR and the prompt
///   returns; the REPL then prints `^C` and a fresh prompt (the line is discarded);
/// - neither (between commands of a script or a pipe): exit with status 130 — unless
///   `interactive` (the prompt, or `kvlab --serve`, whose driver sends SIGINT to cancel a
///   command and may race its end): then it is ignored.
public final class InterruptRouter: @unchecked Sendable {
  private enum State {
    case idle
    case prompt
    case running(CancellationFlag, presses: Int)
  }

  private let lock = NSLock()
  private var state = State.idle
  private var promptInterrupted = false
  /// Whether the REPL runs at a terminal (progress lines go to stderr only then).
  public let interactive: Bool
  private let mainThread = pthread_self()
  private var source: DispatchSourceSignal?
  private let queue = DispatchQueue(label: "kvlab.sigint")

  /// Installs the handling. Call on the main thread (the one that reads input).
  public init(interactive: Bool) {
    self.interactive = interactive
    var kick = sigaction()
    #if os(Linux)
      kick.__sigaction_handler.sa_handler = { _ in }
    #else
      kick.__sigaction_u.__sa_handler = { _ in }
    #endif
    sigemptyset(&kick.sa_mask)
    kick.sa_flags = 0  // no SA_RESTART: the read in progress fails with EINTR
    sigaction(SIGUSR1, &kick, nil)
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: queue)
    source.setEventHandler { [weak self] in self?.interrupted() }
    source.resume()
    self.source = source
  }

  deinit {
    source?.cancel()
  }

  private func interrupted() {
    lock.lock()
    defer { lock.unlock() }
    switch state {
    case .prompt:
      promptInterrupted = true
      kickPrompt()
    case .running(let flag, let presses):
      flag.set()
      state = .running(flag, presses: presses + 1)
      if presses + 1 >= 3 {
        let message = "\nkvlab: interrupted 3 times; exiting\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        fflush(stdout)
        _exit(130)
      }
    case .idle:
      if !interactive {
        fflush(stdout)
        _exit(130)
      }
    }
  }

  /// Called with `lock` held. A kick that lands while libedit is not in read(2) (say, redrawing
  /// the line after a Tab's list) interrupts nothing, and its next read would wait with the
  /// Ctrl-C unseen: so kick again every 20 ms until the prompt has returned.
  private func kickPrompt() {
    pthread_kill(mainThread, SIGUSR1)
    queue.asyncAfter(deadline: .now() + .milliseconds(20)) { [weak self] in
      guard let self else { return }
      self.lock.lock()
      defer { self.lock.unlock() }
      if case .prompt = self.state, self.promptInterrupted { self.kickPrompt() }
    }
  }

  func commandStarted(_ flag: CancellationFlag) {
    lock.lock()
    state = .running(flag, presses: 0)
    lock.unlock()
  }

  func commandFinished() {
    lock.lock()
    state = .idle
    lock.unlock()
  }

  /// Call just before the prompt reads a line.
  public func promptStarted() {
    lock.lock()
    state = .prompt
    promptInterrupted = false
    lock.unlock()
  }

  /// Call when the prompt returned; true if Ctrl-C interrupted it.
  public func promptFinished() -> Bool {
    lock.lock()
    defer { lock.unlock() }
    state = .idle
    let was = promptInterrupted
    promptInterrupted = false
    return was
  }
}

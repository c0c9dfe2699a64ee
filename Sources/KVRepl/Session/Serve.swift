import Foundation

/// `kvlab --serve NONCE`: the pipe protocol a program (the Jupyter kernel in `kernel/`) drives
/// kvlab with. stdin carries command lines, one per line, run exactly as typed at the prompt.
/// stdout carries what each command prints, byte for byte, plus records, each
/// `\u{1E}kvlab:NONCE:` + a body + `\n` (`\u{1E}` is the ASCII record separator):
///
/// - `ready`: once, before the first line is read;
/// - `err LEN`: the next LEN bytes (UTF-8) are error text (an `error: …` line and its detail,
///   `^C cancelled: …`), kept in order with the output around them;
/// - `done STATUS` after every line, blank and comment lines included: `ok`, `failed`,
///   `cancelled` (Ctrl-C / SIGINT stopped it) or `quit CODE` (`quit` ran; kvlab then exits).
///
/// The NONCE is chosen by the driver for each process, so no command output can forge a record
/// (output is never framed; error text is framed by its length, so it is never scanned). A
/// record need not start a line: output a command left without a final newline is followed
/// directly by the record. After `done`, everything is flushed. A failing or cancelled line does
/// not end the process (SIGINT cancels the running command, as Ctrl-C does at the prompt, and is
/// ignored between commands); EOF on stdin ends it with status 0.
public final class ServeSink: OutputSink {
  public let nonce: String
  private let out: UnsafeMutablePointer<FILE>

  public init(nonce: String, out: UnsafeMutablePointer<FILE> = stdout) {
    self.nonce = nonce
    self.out = out
  }

  /// What every record starts with.
  public var recordPrefix: String { "\u{1E}kvlab:\(nonce):" }

  /// Letters, digits, `-` and `_`, 8 to 128 of them.
  public static func isValidNonce(_ nonce: String) -> Bool {
    (8...128).contains(nonce.utf8.count)
      && nonce.utf8.allSatisfy { c in
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
          || c == 0x2D
          || c == 0x5F
      }
  }

  public func write(_ text: String, to channel: OutputChannel) {
    guard !text.isEmpty else { return }
    switch channel {
    case .output:
      put(text)
    case .error:
      put(recordPrefix + "err \(text.utf8.count)\n")
      put(text)
    }
    fflush(out)
  }

  /// Writes every byte (fputs would stop at a NUL and break the length of an `err` record).
  private func put(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = fwrite(bytes.baseAddress, 1, bytes.count, out) }
  }

  /// Writes one record.
  public func record(_ body: String) {
    put(recordPrefix + body + "\n")
    fflush(out)
  }

  public func flush() { fflush(out) }
}

extension Repl {
  /// Serves `next()`'s lines over `sink` (see `ServeSink`): `ready`, then each line followed by
  /// its `done` record. Returns the exit status: 0 at EOF, or `quit`'s code.
  public func serve(_ sink: ServeSink, next: () -> String?) -> Int32 {
    sink.record("ready")
    while let line = next() {
      let status: String
      switch run(line: line) {
      case .ok: status = "ok"
      case .failed: status = "failed"
      case .cancelled: status = "cancelled"
      case .quit(let code):
        output.flush()
        sink.record("done quit \(code)")
        return code
      }
      output.flush()
      sink.record("done \(status)")
    }
    return 0
  }
}

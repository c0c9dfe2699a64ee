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
///   `cancelled` (Ctrl-C / SIGINT stopped it) or `quit CODE` (`quit` ran; kvlab then exits);
/// - `complete LEN`: LEN bytes of JSON `{"word": W, "candidates": [...]}` follow, the answer to
///   the request line `\u{1E}kvlab:NONCE:complete TEXT` (Tab completion of TEXT, the line before
///   the cursor, as at the prompt: W is the word being completed); then `done ok`.
///
/// - `display PNG TEXT`: a view shown as a picture (`cache map`, `mem plot` without out=): PNG
///   bytes of PNG image follow, then TEXT bytes (UTF-8) of the text that stands for it;
/// - `help LEN`: LEN bytes of help text follow, the answer to the request line
///   `\u{1E}kvlab:NONCE:help TEXT` (the help of the command TEXT starts with, as `help` prints
///   it; empty when TEXT names none); then `done ok`.
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

  public var showsImages: Bool { true }

  public func display(png: [UInt8], text: String) {
    put(recordPrefix + "display \(png.count) \(text.utf8.count)\n")
    _ = png.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, out) }
    put(text)
    fflush(out)
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
    // A driver's file size limit must fail a command (EFBIG), never end the served session.
    FileSizeLimit.reportAsErrors()
    sink.record("ready")
    let completeRequest = sink.recordPrefix + "complete "
    let helpRequest = sink.recordPrefix + "help "
    while let line = next() {
      if line.hasPrefix(helpRequest) {
        let text = helpText(startOf: String(line.dropFirst(helpRequest.count)))
        sink.record("help \(text.utf8.count)")
        sink.write(text, to: .output)  // to the driver only: never into a recording
        sink.record("done ok")
        continue
      }
      if line.hasPrefix(completeRequest) {
        let result = Completer(table: table, directory: baseDirectory)
          .complete(String(line.dropFirst(completeRequest.count)))
        let json = try? JSONEncoder().encode(
          ServeCompletion(word: result.word, candidates: result.candidates))
        let text =
          json.map { String(decoding: $0, as: UTF8.self) } ?? #"{"word":"","candidates":[]}"#
        sink.record("complete \(text.utf8.count)")
        sink.write(text, to: .output)
        sink.record("done ok")
        continue
      }
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

extension Repl {
  /// The help of the command a line starts with (its subcommand's, where the second word is
  /// one), as `help` prints it; empty when the line names no command.
  func helpText(startOf line: String) -> String {
    let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    guard let noun = words.first else { return "" }
    let verb = words.count > 1 && !words[1].contains("=") ? words[1] : nil
    let lines =
      (verb.flatMap { try? table.help(noun: noun, verb: $0) })
      ?? (try? table.help(noun: noun, verb: nil)) ?? []
    return lines.map { $0 + "\n" }.joined()
  }
}

/// The JSON of a `complete` record.
private struct ServeCompletion: Codable {
  var word: String
  var candidates: [String]
}

/// Lines from a file descriptor (stdin for `--serve`), read with read(2) and retried on EINTR.
/// Not Swift's `readLine`: it retries getline while errno is EINTR, and once a signal has
/// interrupted a read, errno stays EINTR, so at EOF (where getline fails without touching
/// errno) it spins forever — the kernel's SIGINT between commands followed by its EOF at
/// shutdown would leave kvlab burning a core.
public final class FileLineReader {
  private let fd: Int32
  private var buffer: [UInt8] = []
  private var start = 0
  private var eof = false

  public init(fd: Int32 = 0) { self.fd = fd }

  /// The next line without its `\n` (or `\r\n`); a last line without one counts; nil at EOF
  /// or on a read error.
  public func next() -> String? { nextBytes().map { String(decoding: $0, as: UTF8.self) } }

  /// The same as bytes, as read (not checked to be UTF-8).
  public func nextBytes() -> [UInt8]? {
    while true {
      if let i = buffer[start...].firstIndex(of: 0x0A) {
        var end = i
        if end > start && buffer[end - 1] == 0x0D { end -= 1 }
        let line = Array(buffer[start..<end])
        start = i + 1
        if start > 65536 {
          buffer.removeFirst(start)
          start = 0
        }
        return line
      }
      if eof {
        guard start < buffer.count else { return nil }
        let line = Array(buffer[start...])
        start = buffer.count
        return line
      }
      var chunk = [UInt8](repeating: 0, count: 65536)
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n > 0 {
        buffer.append(contentsOf: chunk[0..<n])
      } else if n == 0 || errno != EINTR {
        eof = true
      }
    }
  }
}

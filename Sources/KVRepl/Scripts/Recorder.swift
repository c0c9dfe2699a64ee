import Foundation

/// Writes a session script as it happens: each command line, then its output with every line
/// prefixed `#> `. Every piece goes to the file with write(2) at once, with no buffer in the
/// process, so a crash or SIGKILL loses nothing that was already shown.
public final class Recorder: OutputSink {
  /// The path as the user wrote it (what messages show).
  public let displayPath: String
  private let path: String
  /// The folder the recording is in (where its replay resolves relative paths).
  public var folder: String {
    let f = (path as NSString).deletingLastPathComponent
    return f.isEmpty ? "." : f
  }
  private var fd: Int32
  private var atLineStart = true
  public private(set) var commandCount = 0

  public enum Mode { case create, append }

  /// Opens `path` for recording: `.create` refuses an existing file (O_EXCL, so no race).
  public init(path: String, displayPath: String, mode: Mode) throws {
    self.displayPath = displayPath
    self.path = path
    var flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC
    if mode == .create { flags |= O_EXCL }
    let fd = open(path, flags, 0o644)
    guard fd >= 0 else {
      let e = errno
      if e == EEXIST {
        throw ReplError("record", "\(displayPath) already exists (use append=on to add to it)")
      }
      throw ReplError("record", "\(displayPath): \(Format.systemError(e))")
    }
    self.fd = fd
    var st = stat()
    if fstat(fd, &st) == 0 && st.st_size == 0 {
      try writeRaw(
        "# kvlab session. Replay: kvlab replay \((displayPath as NSString).lastPathComponent) [--check]\n"
      )
    } else if mode == .append {
      // A file whose last line lacks its newline would glue our first command to it.
      try endWithNewline(size: Int(st.st_size))
    }
  }

  deinit { stop() }

  /// Closes the file. Everything was written already; nothing is lost by not calling it.
  public func stop() {
    if fd >= 0 {
      posixClose(fd)
      fd = -1
    }
  }

  /// Starts a command: ends any unterminated output line, then writes the command line.
  /// - Parameter renames: paths as typed → as recorded (relative to the recording's folder);
  ///   the command's output, which names paths as typed, is recorded with them renamed too, so
  ///   that the replay, typing the recorded paths, prints what was recorded.
  public func begin(command line: String, renames: [(typed: String, recorded: String)] = []) {
    finishLine()
    try? writeRaw(line + "\n")
    commandCount += 1
    self.renames = renames
  }

  private var renames: [(typed: String, recorded: String)] = []

  /// The first write that failed (a full disk, a file size limit), after which the recorder
  /// writes nothing more: what is in the file stays as written, a prefix of the session.
  public private(set) var failure: ReplError?

  /// Ends the current command's output.
  public func end() { finishLine() }

  public func write(_ text: String, to channel: OutputChannel) {
    guard !text.isEmpty else { return }
    var text = text
    for (typed, recorded) in renames { text = text.replacingOccurrences(of: typed, with: recorded) }
    var chunk = ""
    for ch in text {
      if ch == "\n" {
        chunk += atLineStart ? "#>\n" : "\n"
        atLineStart = true
      } else {
        if atLineStart { chunk += "#> " }
        chunk.append(ch)
        atLineStart = false
      }
    }
    try? writeRaw(chunk)
  }

  public func flush() {}

  private func finishLine() {
    if !atLineStart {
      try? writeRaw("\n")
      atLineStart = true
    }
  }

  private func endWithNewline(size: Int) throws {
    guard size > 0 else { return }
    let rfd = open(path, O_RDONLY | O_CLOEXEC)
    defer { if rfd >= 0 { posixClose(rfd) } }
    guard rfd >= 0 else { return }
    var last: UInt8 = 0
    if pread(rfd, &last, 1, off_t(size - 1)) == 1 && last != UInt8(ascii: "\n") {
      try writeRaw("\n")
    }
  }

  private func writeRaw(_ s: String) throws {
    guard fd >= 0 else { return }
    var bytes = Array(s.utf8)
    var offset = 0
    while offset < bytes.count {
      let n = bytes.withUnsafeMutableBytes { buf in
        posixWrite(fd, buf.baseAddress! + offset, buf.count - offset)
      }
      if n < 0 {
        if errno == EINTR { continue }
        let e = ReplError(
          "record",
          "\(displayPath): \(Format.systemError(errno)); recording stopped after \(commandCount) command\(commandCount == 1 ? "" : "s") (what was written is intact)"
        )
        if failure == nil { failure = e }
        stop()
        throw e
      }
      offset += n
    }
    bytes.removeAll()
  }
}

// File-scope wrappers: inside the class, `write` and `close` would name its own methods.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
private func posixClose(_ fd: Int32) { close(fd) }

import Foundation
import KVRepl
import XCTest

/// `kvlab --serve NONCE`, the pipe protocol the Jupyter kernel drives, end to end over real
/// pipes: a `done` record after every line with its status, output between records exactly as
/// printed, error text framed by its length, forged records ignored, SIGINT cancelling a command
/// without ending the process, `quit` and EOF.
final class ServeTests: XCTestCase {
  static let nonce = "t3st-N0nce_0123456789"
  static let prefix = "\u{1E}kvlab:\(nonce):"

  var binary: String { builtKvlab }

  override func setUpWithError() throws {
    try XCTSkipUnless(
      FileManager.default.isExecutableFile(atPath: binary), "kvlab not built at \(binary)")
    signal(SIGPIPE, SIG_IGN)
  }

  /// One line's reply: the output bytes between records, the error text, the `done` status.
  struct Reply: Equatable {
    var output = ""
    var errors = ""
    var status = ""
  }

  /// A `kvlab --serve` child with its stdout read on a background thread.
  final class Served: @unchecked Sendable {
    let process = Process()
    let input = Pipe()
    let output = Pipe()
    private let lock = NSLock()
    private var buffer = Data()
    private var eof = false
    private var position = 0

    init(binary: String, folder: String) throws {
      process.executableURL = URL(fileURLWithPath: binary)
      process.arguments = ["--serve", ServeTests.nonce]
      process.currentDirectoryURL = URL(fileURLWithPath: folder)
      var env = ProcessInfo.processInfo.environment
      env["KVLAB_HISTORY"] = ""
      process.environment = env
      process.standardInput = input
      process.standardOutput = output
      process.standardError = FileHandle(forWritingAtPath: "/dev/null")
      try process.run()
      let reader = output.fileHandleForReading
      Thread.detachNewThread { [self] in
        while true {
          let chunk = reader.availableData
          lock.lock()
          if chunk.isEmpty { eof = true } else { buffer.append(chunk) }
          lock.unlock()
          if chunk.isEmpty { return }
        }
      }
    }

    /// Writes a line; a kvlab that has gone shows as a failed write (and then EOF), not SIGPIPE.
    func send(_ line: String) {
      XCTAssertNoThrow(try input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8)))
    }

    /// Waits (up to `timeout` seconds) until `count` more bytes have arrived, or EOF.
    private func take(_ count: Int, timeout: TimeInterval) -> Data? {
      let deadline = Date().addingTimeInterval(timeout)
      while Date() < deadline {
        lock.lock()
        if buffer.count - position >= count {
          let d = buffer.subdata(in: position..<position + count)
          position += count
          lock.unlock()
          return d
        }
        let ended = eof
        lock.unlock()
        if ended { return nil }
        usleep(2_000)
      }
      return nil
    }

    /// The next n bytes, or nil at EOF / after the timeout.
    func bytes(_ n: Int, timeout: TimeInterval = 30) -> Data? { take(n, timeout: timeout) }

    /// The next byte, or nil at EOF / after the timeout.
    private func byte(timeout: TimeInterval) -> UInt8? { take(1, timeout: timeout)?.first }

    /// Reads up to and including the next record; returns the bytes before it and its body.
    func nextRecord(timeout: TimeInterval = 30) -> (before: Data, body: String)? {
      let prefix = Data(ServeTests.prefix.utf8)
      var before = Data()
      while let b = byte(timeout: timeout) {
        before.append(b)
        if before.count >= prefix.count && before.suffix(prefix.count) == prefix {
          before.removeLast(prefix.count)
          var body = Data()
          while let c = byte(timeout: timeout), c != 0x0A { body.append(c) }
          return (before, String(decoding: body, as: UTF8.self))
        }
      }
      return nil
    }

    /// Reads one line's reply: output and `err` records up to its `done` record.
    func reply(timeout: TimeInterval = 30) -> Reply? {
      var r = Reply()
      while let (before, body) = nextRecord(timeout: timeout) {
        r.output += String(decoding: before, as: UTF8.self)
        if body.hasPrefix("err ") {
          guard let n = Int(body.dropFirst(4)), let text = take(n, timeout: timeout) else {
            return nil
          }
          r.errors += String(decoding: text, as: UTF8.self)
        } else if body.hasPrefix("done ") {
          r.status = String(body.dropFirst(5))
          return r
        } else {
          XCTFail("unexpected record '\(body)'")
          return nil
        }
      }
      return nil
    }

    func run(_ line: String) -> Reply? {
      send(line)
      return reply()
    }

    /// Everything left after EOF.
    func rest(timeout: TimeInterval = 30) -> String {
      let deadline = Date().addingTimeInterval(timeout)
      while Date() < deadline {
        lock.lock()
        let ended = eof
        lock.unlock()
        if ended { break }
        usleep(2_000)
      }
      lock.lock()
      defer { lock.unlock() }
      return String(decoding: buffer.suffix(from: position), as: UTF8.self)
    }

    /// Closes stdin and waits (up to 10 s) for the exit status; -1 if kvlab did not exit.
    func finish() -> Int32 {
      try? input.fileHandleForWriting.close()
      let deadline = Date().addingTimeInterval(10)
      while process.isRunning && Date() < deadline { usleep(10_000) }
      guard !process.isRunning else {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return -1
      }
      return process.terminationStatus
    }

    deinit {
      if process.isRunning { process.terminate() }
    }
  }

  func start() throws -> Served {
    let s = try Served(binary: binary, folder: temporaryFolder(self))
    let ready = s.nextRecord()
    XCTAssertEqual(ready?.body, "ready")
    XCTAssertEqual(ready?.before, Data())
    return s
  }

  func testEveryLineEndsWithItsStatus() throws {
    let s = try start()
    XCTAssertEqual(s.run("echo hello"), Reply(output: "hello\n", status: "ok"))
    XCTAssertEqual(s.run(""), Reply(status: "ok"))
    XCTAssertEqual(s.run("# a comment"), Reply(status: "ok"))
    XCTAssertEqual(
      s.run("lod"),
      Reply(errors: "error: unknown command 'lod' (did you mean 'load'?)\n", status: "failed"))
    // The process is still there, and a line stops at its first failing command.
    XCTAssertEqual(s.run("echo after"), Reply(output: "after\n", status: "ok"))
    XCTAssertEqual(
      s.run("echo a; tokenize hi; echo b"),
      Reply(
        output: "a\n", errors: "error: tokenize: no model loaded (use 'load' first)\n",
        status: "failed"))
    XCTAssertEqual(s.run(#"echo "two\nlines""#), Reply(output: "two\nlines\n", status: "ok"))
    XCTAssertEqual(s.run("help quit").map(\.output.isEmpty), false)
    XCTAssertEqual(s.finish(), 0)
    XCTAssertEqual(s.rest(), "")
  }

  /// Output that looks like a record, error text holding the real prefix (framed by its
  /// length, so never scanned), multi-byte characters and a multi-line error detail.
  func testForgedRecordsDoNotConfuseIt() throws {
    let s = try start()
    for forged in [
      "\u{1E}kvlab:done ok", "\u{1E}kvlab:other-nonce-1234:done ok",
      "x\u{1E}kvlab:\(Self.nonce)done ok",
      "kvlab:\(Self.nonce):done ok",
    ] {
      XCTAssertEqual(
        s.run("echo \(Repl.quote(forged))"), Reply(output: forged + "\n", status: "ok"))
    }
    let path = "\(Self.prefix)done ok é"
    XCTAssertEqual(
      s.run("load \(Repl.quote(path))"),
      Reply(errors: "error: load: \(path): no such file\n", status: "failed"))
    XCTAssertEqual(s.run("echo still here"), Reply(output: "still here\n", status: "ok"))
    // replay --check: an error line and its diff, in one framed piece each.
    let folder = s.process.currentDirectoryURL!.path
    _ = FileManager.default.createFile(
      atPath: folder + "/s.kvl", contents: Data("echo hi\n#> ho\n".utf8))
    let diff = s.run("replay s.kvl --check")
    XCTAssertEqual(diff?.status, "failed")
    XCTAssertEqual(diff?.output, "")
    XCTAssertEqual(
      diff?.errors,
      "error: replay: s.kvl:1: output differs from the recording\n--- expected (s.kvl:1)\n+++ actual\n@@ echo hi @@\n-ho\n+hi\n"
    )
    XCTAssertEqual(s.finish(), 0)
  }

  /// SIGINT cancels the running command and kvlab goes on reading; between commands it is
  /// ignored (a driver's interrupt may arrive just after a command ended).
  func testSIGINTCancelsTheCommandNotTheProcess() throws {
    let s = try start()
    usleep(200_000)  // kvlab is blocked reading stdin
    kill(s.process.processIdentifier, SIGINT)  // idle: ignored (and EOF still ends it, below)
    usleep(200_000)
    XCTAssertEqual(s.run("echo idle"), Reply(output: "idle\n", status: "ok"))
    s.send("sleep 60")
    usleep(500_000)
    let started = Date()
    kill(s.process.processIdentifier, SIGINT)
    let r = s.reply()
    XCTAssertEqual(r, Reply(errors: "^C cancelled: sleep stopped early\n", status: "cancelled"))
    XCTAssertLessThan(Date().timeIntervalSince(started), 10)
    XCTAssertTrue(s.process.isRunning)
    XCTAssertEqual(s.run("echo alive"), Reply(output: "alive\n", status: "ok"))
    XCTAssertEqual(s.finish(), 0)
  }

  func testQuitEndsTheProcessAfterItsRecord() throws {
    let s = try start()
    s.send("quit")
    s.send("echo never")
    XCTAssertEqual(s.reply(), Reply(status: "quit 0"))
    XCTAssertEqual(s.finish(), 0)
    XCTAssertEqual(s.rest(), "")
  }

  /// A completion request (the kernel's Tab) answers with a `complete` record of JSON, then
  /// `done ok`; the session is untouched.
  func testCompletionRequest() throws {
    let s = try start()
    for (text, word, candidates) in [
      ("policy snapkv win", "win", ["window="]), ("pol", "pol", ["policy"]), ("zzz", "zzz", []),
    ] {
      s.send("\(Self.prefix)complete \(text)")
      let record = try XCTUnwrap(s.nextRecord())
      XCTAssertEqual(record.before, Data())
      XCTAssertTrue(record.body.hasPrefix("complete "), record.body)
      let json = try XCTUnwrap(Int(record.body.dropFirst(9)).flatMap { s.bytes($0) })
      let object = try XCTUnwrap(JSONSerialization.jsonObject(with: json) as? [String: Any])
      XCTAssertEqual(object["word"] as? String, word)
      XCTAssertEqual(object["candidates"] as? [String], candidates)
      XCTAssertEqual(s.reply(), Reply(status: "ok"))
    }
    XCTAssertEqual(s.run("echo after"), Reply(output: "after\n", status: "ok"))
    XCTAssertEqual(s.finish(), 0)
  }

  /// `cache map` and `mem plot` come as pictures: a `display` record, the PNG, then the text
  /// a terminal would show; a help request answers with `help` text; neither is recorded.
  func testViewsArePicturesAndHelpRequests() throws {
    let s = try start()
    let record = temporaryFolder(self) + "/r.kvl"
    XCTAssertEqual(
      s.run("record start \(record); load \(repositoryRoot)/weights/kvlab-shapes")?.status, "ok")
    XCTAssertEqual(s.run("feed synthetic attribute seed=3")?.status, "ok")
    for (line, first) in [("cache map", "share of the "), ("mem plot", "memory plot: ")] {
      s.send(line)
      let header = try XCTUnwrap(s.nextRecord())
      XCTAssertEqual(header.before, Data(), line)
      let sizes = header.body.split(separator: " ")
      XCTAssertEqual(sizes.first, "display", header.body)
      let png = try XCTUnwrap(s.bytes(Int(sizes[1])!))
      XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], line)
      let text = String(decoding: try XCTUnwrap(s.bytes(Int(sizes[2])!)), as: UTF8.self)
      XCTAssertTrue(text.hasPrefix(first), text)
      XCTAssertEqual(s.reply(), Reply(status: "ok"), line)
    }
    for (text, expected) in [("cache map out=x.png", "usage: cache map [out=FILE.png]"), ("nosuch", "")] {
      s.send("\(Self.prefix)help \(text)")
      let header = try XCTUnwrap(s.nextRecord())
      XCTAssertTrue(header.body.hasPrefix("help "), header.body)
      let help = String(
        decoding: try XCTUnwrap(Int(header.body.dropFirst(5)).flatMap { s.bytes($0) }),
        as: UTF8.self)
      XCTAssertEqual(expected.isEmpty ? help.isEmpty : help.contains(expected), true, help)
      XCTAssertEqual(s.reply(), Reply(status: "ok"))
    }
    XCTAssertEqual(s.run("record stop")?.status, "ok")
    XCTAssertEqual(s.finish(), 0)
    // The recording holds the views as text, and no help request.
    let recorded = try String(contentsOfFile: record, encoding: .utf8)
    XCTAssertTrue(recorded.contains("#> share of the "), recorded)
    XCTAssertTrue(recorded.contains("#> memory plot: "), recorded)
    XCTAssertFalse(recorded.contains("usage:"), recorded)
  }

  func testBadNonceAndConflictingArguments() throws {
    for (args, message) in [
      (
        ["--serve", "short"],
        "--serve needs a nonce of 8 to 128 letters, digits, '-' or '_', got 'short'"
      ),
      (
        ["--serve", "has:colon-12345"],
        "--serve needs a nonce of 8 to 128 letters, digits, '-' or '_', got 'has:colon-12345'"
      ),
      (
        ["--serve", Self.nonce, "-c", "echo"],
        "--serve reads its commands from stdin: give no script, -c or --model with it"
      ),
    ] {
      let p = Process()
      p.executableURL = URL(fileURLWithPath: binary)
      p.arguments = args
      let err = Pipe()
      p.standardError = err
      p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
      p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
      try p.run()
      let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      p.waitUntilExit()
      XCTAssertEqual(p.terminationStatus, 64, text)
      XCTAssertTrue(text.hasPrefix("Error: \(message)\n"), text)
    }
  }
}

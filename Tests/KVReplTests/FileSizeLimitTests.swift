import Foundation
import XCTest

/// The `kvlab` executable under a file size limit (`ulimit -f`, RLIMIT_FSIZE): a write past it
/// would kill the process with SIGXFSZ; kvlab ignores that signal, so the write fails with EFBIG
/// and the writer says so in one line naming the file, leaves no half-written file claimed as
/// written, and the session goes on — from -c and from --serve. Skipped when the binary is not
/// built next to the test bundle.
final class FileSizeLimitTests: XCTestCase {
  struct Outcome {
    var status: Int32
    var killed: Bool
    var stdout: String
    var stderr: String
  }

  var binary: String { builtKvlab }

  var folder = ""

  /// What the reading thread hands back (read after the semaphore it signals).
  final class Collected: @unchecked Sendable {
    var data = Data()
  }

  /// The limit, in the shell's `ulimit -f` blocks (512 bytes for dash, 1024 for bash): 32 to
  /// 64 KiB, far below a logits table of the embedded model on a needle image (2.3 MB) and what the recording
  /// test writes (over 80 KB), far above the model's reads (limits apply to writes only).
  let blocks = 64

  override func setUpWithError() throws {
    try XCTSkipUnless(
      FileManager.default.isExecutableFile(atPath: binary), "kvlab not built at \(binary)")
    // Built with ThreadSanitizer (`scripts/sanitize.sh thread`), kvlab cannot start under a small
    // file size limit: the sanitizer's runtime takes a SIGBUS on its own shadow memory in the
    // Swift runtime's first type lookup, before any kvlab code runs (seen in gdb); a plain or
    // AddressSanitizer build runs these tests.
    try XCTSkipIf(
      dlsym(nil, "__tsan_init") != nil,
      "ThreadSanitizer's runtime faults under `ulimit -f \(blocks)` before kvlab starts")
    folder = temporaryFolder(self)
  }

  /// Runs `program args` under `sh -c 'ulimit -f N; exec ...'` in `folder`, output on pipes
  /// (the limit would cut output files short).
  func limited(_ program: String, _ args: [String], stdin: String = "") throws -> Outcome {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", "ulimit -f \(blocks) && exec \"$0\" \"$@\"", program] + args
    p.currentDirectoryURL = URL(fileURLWithPath: folder)
    var env = ProcessInfo.processInfo.environment
    env["KVLAB_HISTORY"] = ""
    env.removeValue(forKey: "OPENBLAS_CORETYPE")
    p.environment = env
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    // The child must start with SIGXFSZ's default action (death), as from a login shell:
    // an ignored signal is inherited through exec, and the test runner may ignore it.
    let previous = signal(SIGXFSZ, SIG_DFL)
    defer { signal(SIGXFSZ, previous) }
    try p.run()
    input.fileHandleForWriting.write(Data(stdin.utf8))
    try input.fileHandleForWriting.close()
    // stdout is read on another thread while stderr is read here, so neither pipe fills.
    let collected = Collected()
    let done = DispatchSemaphore(value: 0)
    Thread {
      collected.data = out.fileHandleForReading.readDataToEndOfFile()
      done.signal()
    }.start()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    done.wait()
    p.waitUntilExit()
    let outData = collected.data
    return Outcome(
      status: p.terminationStatus, killed: p.terminationReason == .uncaughtSignal,
      stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errData, as: UTF8.self))
  }

  func files() -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
  }

  /// The limit bites: a plain writer under it dies of SIGXFSZ (so kvlab surviving it is kvlab's
  /// doing).
  func checkTheLimitKills() throws {
    let control = try limited("/bin/sh", ["-c", "exec head -c 200000 /dev/zero > control.bin"])
    XCTAssertTrue(control.killed, "a writer past the limit is killed by SIGXFSZ")
    try? FileManager.default.removeItem(atPath: folder + "/control.bin")
  }

  func testLogitsPastTheLimitIsAnErrorAndLeavesNoFile() throws {
    try checkTheLimitKills()
    _ = FileManager.default.createFile(atPath: folder + "/old.npy", contents: Data("old".utf8))
    let r = try limited(
      binary,
      [
        "--keep-going", "-c",
        "load; feed synthetic needle-image seed=1; logits out=x.npy; logits out=old.npy; echo after",
      ])
    XCTAssertFalse(r.killed, "kvlab was killed by a signal:\n\(r.stderr)")
    XCTAssertEqual(r.status, 1, r.stderr)
    XCTAssertEqual(
      r.stderr, "error: logits: x.npy: file too large\nerror: logits: old.npy: file too large\n")
    XCTAssertTrue(r.stdout.hasSuffix("\nafter\n"), r.stdout)
    XCTAssertFalse(r.stdout.contains("wrote"), r.stdout)
    // No half-written array, no temporary file; a file already there is as it was.
    XCTAssertEqual(files(), ["old.npy"])
    XCTAssertEqual(readFile(folder + "/old.npy"), "old")
  }

  func testRecordingPastTheLimitStopsAndTheSessionGoesOn() throws {
    try checkTheLimitKills()
    let word = String(repeating: "w", count: 1000)
    let r = try limited(
      binary,
      ["-c", "record start r.kvl"] + (0..<40).flatMap { _ in ["-c", "echo \(word)"] } + [
        "-c", "echo after",
      ])
    XCTAssertFalse(r.killed, "kvlab was killed by a signal:\n\(r.stderr)")
    XCTAssertEqual(r.status, 0, "the recording's failure is not the commands'")
    let errors = r.stderr.split(separator: "\n")
    XCTAssertEqual(errors.count, 1, r.stderr)
    XCTAssertTrue(
      errors.first?.hasPrefix("error: record: r.kvl: file too large; recording stopped") == true,
      r.stderr)
    // Every echo ran and printed; the recording holds a prefix of them.
    XCTAssertEqual(r.stdout.split(separator: "\n").filter { $0 == word }.count, 40)
    XCTAssertTrue(r.stdout.hasSuffix("after\n"), String(r.stdout.suffix(200)))
    let recorded = readFile(folder + "/r.kvl")
    XCTAssertTrue(recorded.hasPrefix("# kvlab session."), String(recorded.prefix(100)))
    XCTAssertLessThan(recorded.utf8.count, 80_000)
  }

  func testDatasetPastTheLimitIsAnErrorAndLeavesNoPartialPNG() throws {
    try checkTheLimitKills()
    // A 2048-px needle image is about 500 KB of PNG.
    let r = try limited(
      binary, ["--keep-going", "-c", "synthetic write ds needle-image count=2 size=2048; echo after"])
    XCTAssertFalse(r.killed, "kvlab was killed by a signal:\n\(r.stderr)")
    XCTAssertEqual(
      r.stderr, "error: synthetic write: ds/needle-image-0.png: cannot write it: file too large\n")
    XCTAssertEqual(r.stdout, "after\n")
    XCTAssertEqual(
      (try? FileManager.default.contentsOfDirectory(atPath: folder + "/ds")) ?? ["?"], [])
  }

  func testServeSurvivesTheLimit() throws {
    try checkTheLimitKills()
    let nonce = "fsize-N0nce_0123"
    let r = try limited(
      binary, ["--serve", nonce],
      stdin: "load\nfeed synthetic needle-image seed=2\nlogits out=s.npy\necho alive\n")
    XCTAssertFalse(r.killed, "kvlab --serve was killed by a signal")
    XCTAssertEqual(r.status, 0)
    let prefix = "\u{1E}kvlab:\(nonce):"
    XCTAssertTrue(r.stdout.contains("error: logits: s.npy: file too large"), r.stdout)
    XCTAssertTrue(r.stdout.contains("alive\n\(prefix)done ok"), r.stdout)
    XCTAssertEqual(files(), [])
  }
}

import Foundation
import KVTensor
import XCTest

/// The `kvlab` executable end to end: exit statuses, -c, scripts, stdin, a recorder that
/// survives SIGKILL, OpenBLAS kernel selection. Skipped when the binary is not built next to
/// the test bundle.
final class ProcessTests: XCTestCase {
  struct Outcome {
    var status: Int32
    var stdout: String
    var stderr: String
  }

  var binary: String { builtKvlab }

  var folder = ""

  override func setUpWithError() throws {
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary), "kvlab not built at \(binary)")
    folder = temporaryFolder(self)
  }

  func kvlab(
    _ args: [String], stdin: String = "", stdinBytes: [UInt8]? = nil,
    environment: [String: String] = [:], executable: String? = nil
  ) throws -> Outcome {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable ?? binary)
    p.arguments = args
    p.currentDirectoryURL = URL(fileURLWithPath: folder)
    var env = ProcessInfo.processInfo.environment
    env["KVLAB_HISTORY"] = ""
    env.removeValue(forKey: "OPENBLAS_CORETYPE")
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let outPath = folder + "/.stdout", errPath = folder + "/.stderr", inPath = folder + "/.stdin"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    _ = FileManager.default.createFile(atPath: inPath, contents: Data(stdinBytes ?? Array(stdin.utf8)))
    p.standardOutput = FileHandle(forWritingAtPath: outPath)
    p.standardError = FileHandle(forWritingAtPath: errPath)
    p.standardInput = FileHandle(forReadingAtPath: inPath)
    try p.run()
    p.waitUntilExit()
    return Outcome(status: p.terminationStatus, stdout: readFile(outPath), stderr: readFile(errPath))
  }

  func write(_ name: String, _ text: String) {
    _ = FileManager.default.createFile(atPath: folder + "/" + name, contents: Data(text.utf8))
  }

  func testOneShotCommands() throws {
    let r = try kvlab(["-c", "echo a; echo b", "-c", "echo c"])
    XCTAssertEqual(r.status, 0)
    XCTAssertEqual(r.stdout, "a\nb\nc\n")
    XCTAssertEqual(r.stderr, "")
  }

  /// `load` with no path, from a folder with neither weights/ nor models/: the binary finds the
  /// repository's embedded model next to (above) itself and answers a synthetic question with it.
  func testBareLoadFindsTheEmbeddedModel() throws {
    let r = try kvlab(["-c", "load; feed synthetic attribute seed=3; synthetic ask"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let lines = r.stdout.split(separator: "\n").map(String.init)
    XCTAssertEqual(
      lines.first,
      "loaded kvlab-shapes: idefics3, 4 layers, vocab 483, 4.35M parameters, weights 16.60 MiB")
    XCTAssert(lines.contains("question: which shape is green?"), r.stdout)
    XCTAssert(lines.last?.hasPrefix("expected: cross, replied: ") == true, r.stdout)
  }

  /// KVLAB_MODELS is searched before anything else, and a binary away from any repository says
  /// how to point it at its models, then loads with the variable set.
  func testModelsVariable() throws {
    let decoy = folder + "/decoy"
    try FileManager.default.createDirectory(
      atPath: decoy + "/kvlab-shapes", withIntermediateDirectories: true)
    let first = try kvlab(["-c", "load"], environment: ["KVLAB_MODELS": decoy])
    XCTAssertNotEqual(first.status, 0)
    XCTAssertTrue(first.stderr.contains(decoy + "/kvlab-shapes: is a folder without config.json"), first.stderr)

    let away = folder + "/bin"
    try FileManager.default.createDirectory(atPath: away, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: binary, toPath: away + "/kvlab")
    let lost = try kvlab(["-c", "load"], environment: ["KVLAB_MODELS": ""], executable: away + "/kvlab")
    XCTAssertEqual(lost.status, 1, lost.stderr)
    XCTAssertEqual(lost.stdout, "")
    XCTAssertTrue(lost.stderr.contains("default model kvlab-shapes not found in weights, models"), lost.stderr)
    XCTAssertTrue(
      lost.stderr.contains("set KVLAB_MODELS to the folder that holds it, or give its path (load PATH)"),
      lost.stderr)
    XCTAssertEqual(lost.stderr.split(separator: "\n").count, 1, "one line: \(lost.stderr)")
    let found = try kvlab(
      ["-c", "load"], environment: ["KVLAB_MODELS": repositoryRoot + "/weights"],
      executable: away + "/kvlab")
    XCTAssertEqual(found.status, 0, found.stderr)
    XCTAssertTrue(found.stdout.hasPrefix("loaded kvlab-shapes: "), found.stdout)
  }

  /// `-c 'record start F; a; b; record stop'` records a and b: each command of -c is a line.
  func testOneShotRecords() throws {
    let folder = temporaryFolder(self)
    let script = folder + "/s.kvl"
    let r = try kvlab(["-c", #"record start \#(script); echo "x; y"; echo b; record stop"#])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.hasSuffix("recorded 2 commands to \(script)\n"), r.stdout)
    XCTAssertEqual(
      readFile(script).split(separator: "\n").dropFirst().joined(separator: "\n"),
      #"echo "x; y"\#n#> x; y\#necho b\#n#> b"#)
  }

  func testOneShotStopsAtTheFirstError() throws {
    let r = try kvlab(["-c", "echo a; lod; echo b"])
    XCTAssertEqual(r.status, 1)
    XCTAssertEqual(r.stdout, "a\n")
    XCTAssertEqual(r.stderr, "error: unknown command 'lod' (did you mean 'load'?)\n")
    let k = try kvlab(["--keep-going", "-c", "echo a; lod; echo b"])
    XCTAssertEqual(k.status, 1)
    XCTAssertEqual(k.stdout, "a\nb\n")
  }

  func testPipedStdin() throws {
    let r = try kvlab([], stdin: "echo a\n#> whatever\nlod\necho b\n")
    XCTAssertEqual(r.status, 1)
    XCTAssertEqual(r.stdout, "a\n")  // no prompt, no banner
    XCTAssertEqual(r.stderr, "error: unknown command 'lod' (did you mean 'load'?)\n")
    let q = try kvlab([], stdin: "echo a\nquit\necho b\n")
    XCTAssertEqual(q.status, 0)
    XCTAssertEqual(q.stdout, "a\n")
  }

  /// Bytes that are not UTF-8 are refused on stdin and in -c, as in a script file (they were
  /// replaced by U+FFFD and run); a byte-order mark starting stdin is skipped.
  func testNonUTF8InputIsRefusedAndAByteOrderMarkSkipped() throws {
    let r = try kvlab(
      ["--keep-going"], stdinBytes: [0xEF, 0xBB, 0xBF] + Array("echo a\necho caf".utf8) + [0xFF, 0x0A]
        + Array("echo b\n".utf8))
    XCTAssertEqual(r.status, 1)
    XCTAssertEqual(r.stdout, "a\nb\n")
    XCTAssertEqual(r.stderr, "error: stdin:2: not UTF-8 text\n")
    let stops = try kvlab([], stdinBytes: Array("echo caf".utf8) + [0xFF, 0x0A] + Array("echo b\n".utf8))
    XCTAssertEqual(stops.status, 1)
    XCTAssertEqual(stops.stdout, "")
    let c = try kvlab(
      ["-c", #"exec "$0" -c "$(printf 'echo caf\377')""#, binary], executable: "/bin/sh")
    XCTAssertEqual(c.status, 1)
    XCTAssertEqual(c.stdout, "")
    XCTAssertEqual(c.stderr, "error: argument 2 is not UTF-8 text\n")
  }

  func testScriptAndCheck() throws {
    write("s.kvl", "# demo\necho hi\n#> hi\nhelp quit\n#> usage: quit\n#>   Ends the session; in a replayed script, ends that script. Ctrl-D at the\n#>   prompt also quits.\n")
    let run = try kvlab(["s.kvl"])
    XCTAssertEqual(run.status, 0, run.stderr)
    XCTAssertTrue(run.stdout.hasPrefix("hi\nusage: quit\n"))
    for args in [["s.kvl", "--check"], ["replay", "s.kvl", "--check"]] {
      let r = try kvlab(args)
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertEqual(r.stdout, "checked s.kvl: 2 commands, output matches\n")
    }
    write("s.kvl", "echo hi\n#> ho\n")
    let bad = try kvlab(["s.kvl", "--check"])
    XCTAssertEqual(bad.status, 1)
    XCTAssertEqual(
      bad.stderr,
      "error: replay: s.kvl:1: output differs from the recording\n--- expected (s.kvl:1)\n+++ actual\n@@ echo hi @@\n-ho\n+hi\n")
    let missing = try kvlab(["nope.kvl"])
    XCTAssertEqual(missing.status, 1)
    XCTAssertEqual(missing.stderr, "error: replay: nope.kvl: no such file\n")
  }

  func testReplayUpdate() throws {
    write("s.kvl", "# kept\necho a\n#> b\n")
    for args in [["replay", "s.kvl", "--update"], ["s.kvl", "--update"]] {
      let r = try kvlab(args)
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertTrue(r.stdout.hasPrefix("updated s.kvl: 1 command run, "), r.stdout)
      XCTAssertEqual(readFile(folder + "/s.kvl"), "# kept\necho a\n#> a\n")
    }
    XCTAssertEqual(try kvlab(["s.kvl", "--check"]).status, 0)
    let both = try kvlab(["s.kvl", "--check", "--update"])
    XCTAssertEqual(both.status, 64)
    XCTAssertTrue(both.stderr.contains("--check and --update do not go together"), both.stderr)
    XCTAssertEqual(readFile(folder + "/s.kvl"), "# kept\necho a\n#> a\n")
  }

  func testNotebookRun() throws {
    write(
      "nb.ipynb",
      #"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "id": "c", "metadata": {}, "execution_count": null, "outputs": [], "source": "echo hi"}]}"#
    )
    let update = try kvlab(["notebook", "run", "nb.ipynb", "--update"])
    XCTAssertEqual(update.status, 0, update.stderr)
    XCTAssertEqual(update.stdout, "updated nb.ipynb: 1 code cell, 1 changed\n")
    for args in [["notebook", "run", "nb.ipynb", "--check"], ["nb.ipynb", "--check"]] {
      let r = try kvlab(args)
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertEqual(r.stdout, "checked nb.ipynb: 1 code cell, output matches\n")
    }
    let run = try kvlab(["notebook", "run", "nb.ipynb"])
    XCTAssertEqual(run.status, 0, run.stderr)
    XCTAssertEqual(run.stdout, "── code cell 1: echo hi (cell 1)\nhi\n")
    write("bad.ipynb", "nope")
    let bad = try kvlab(["notebook", "run", "bad.ipynb", "--check"])
    XCTAssertEqual(bad.status, 1)
    XCTAssertEqual(bad.stdout, "")
    XCTAssertEqual(bad.stderr, "error: notebook: bad.ipynb: not JSON (line 1, column 1: expected a value, found 'n')\n")
    let usage = try kvlab(["notebook", "nb.ipynb"])
    XCTAssertEqual(usage.status, 64)
    XCTAssertTrue(usage.stderr.contains("usage: kvlab notebook run FILE.ipynb"), usage.stderr)
    let both = try kvlab(["notebook", "run", "nb.ipynb", "--update", "--check"])
    XCTAssertEqual(both.status, 64)
  }

  func testUsageErrors() throws {
    let r = try kvlab(["--check"])
    XCTAssertEqual(r.status, 64)
    XCTAssertTrue(r.stderr.contains("--check compares a script's output"), r.stderr)
    let b = try kvlab(["--blas-core", "fast", "-c", "info"])
    XCTAssertEqual(b.status, 64)
    XCTAssertTrue(
      b.stderr.contains("--blas-core: unknown OpenBLAS kernel 'fast' (auto, keep, Cooperlake,"),
      b.stderr)
    let k = try kvlab(["--kernels", "sse9", "-c", "info"])
    XCTAssertEqual(k.status, 64)
    XCTAssertTrue(
      k.stderr.contains("--kernels: unknown kernel path 'sse9' (auto, portable, avx2, avx512"),
      k.stderr)
    let p = try kvlab(["--prefill-kernel", "int4", "-c", "info"])
    XCTAssertEqual(p.status, 64)
    XCTAssertTrue(p.stderr.contains("--prefill-kernel: unknown prefill kernel 'int4'"), p.stderr)
    // Every path this CPU runs is accepted and named by `info`.
    for path in KernelPath.allCases where path.isSupported {
      let r = try kvlab(["--kernels", path.rawValue, "-c", "info"])
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertTrue(r.stdout.contains("kernels: ~\(path.rawValue) "), r.stdout)
    }
  }

  func testRecordingSurvivesSIGKILL() throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.currentDirectoryURL = URL(fileURLWithPath: folder)
    p.environment = ProcessInfo.processInfo.environment.merging(["KVLAB_HISTORY": ""]) { $1 }
    let input = Pipe()
    p.standardInput = input
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    input.fileHandleForWriting.write(Data("record start k.kvl\necho one\necho two\n".utf8))
    let path = folder + "/k.kvl"
    let deadline = Date().addingTimeInterval(20)
    while !readFile(path).hasSuffix("#> two\n") && Date() < deadline { usleep(20_000) }
    kill(p.processIdentifier, SIGKILL)  // stdin stays open: kvlab is still running
    p.waitUntilExit()
    XCTAssertEqual(p.terminationReason, .uncaughtSignal)
    XCTAssertEqual(
      readFile(path), "# kvlab session. Replay: kvlab replay k.kvl [--check]\necho one\n#> one\necho two\n#> two\n")
  }

  func testBlasCoreRespectsOPENBLAS_CORETYPE() throws {
    let r = try kvlab(["--blas-core", "auto", "-c", "info"], environment: ["OPENBLAS_CORETYPE": "Haswell"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("blas: OpenBLAS, kernel ~Haswell ~(OPENBLAS_CORETYPE)"), r.stdout)
    let auto = try kvlab(["--blas-core", "auto", "-c", "info"])
    XCTAssertEqual(auto.status, 0, auto.stderr)
    XCTAssertTrue(auto.stdout.contains("blas: OpenBLAS, kernel ~"), auto.stdout)
    let keep = try kvlab(["-c", "info"])
    XCTAssertTrue(keep.stdout.contains("~(detected)"), keep.stdout)
  }
}

import KVTensor
import XCTest

@testable import KVRepl

final class RecordReplayTests: XCTestCase {
  var folder = ""

  override func setUp() {
    folder = temporaryFolder(self)
  }

  func repl(keepGoing: Bool = false) -> (Repl, CaptureSink) {
    let (r, out) = makeRepl(keepGoing: keepGoing)
    r.workingDirectory = folder
    return (r, out)
  }

  func write(_ name: String, _ text: String) {
    _ = FileManager.default.createFile(atPath: folder + "/" + name, contents: Data(text.utf8))
  }

  /// Records a session with output, an empty line, a `;` line and an expected error.
  func recordSession() -> String {
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "record start s.kvl"), .ok)
    XCTAssertTrue(r.isRecording)
    XCTAssertEqual(r.run(line: "echo hello"), .ok)
    XCTAssertEqual(r.run(line: #"echo "two words"; echo; mem unit=B rss=off"#), .ok)
    XCTAssertEqual(r.run(line: "# a comment is not recorded"), .ok)
    XCTAssertEqual(r.run(line: "tokenize hi"), .failed)
    XCTAssertEqual(r.run(line: "help quit"), .ok)
    XCTAssertEqual(r.run(line: "record stop"), .ok)
    XCTAssertFalse(r.isRecording)
    XCTAssertEqual(out.lines.first, "recording to s.kvl")
    XCTAssertEqual(out.lines.last, "recorded 4 commands to s.kvl")
    return readFile(folder + "/s.kvl")
  }

  func testRecordedScriptFormat() {
    let text = recordSession()
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    XCTAssertEqual(lines[0], "# kvlab session. Replay: kvlab replay s.kvl [--check]")
    XCTAssertEqual(
      Array(lines[1...5]),
      [
        "echo hello", "#> hello", #"echo "two words"; echo; mem unit=B rss=off"#, "#> two words",
        "#>",
      ])
    XCTAssertTrue(lines.contains("#> weights          0 B   0 B"), text)
    XCTAssertTrue(lines.contains("tokenize hi"))
    XCTAssertTrue(lines.contains("#> error: tokenize: no model loaded (use 'load' first)"))
    XCTAssertTrue(lines.contains("#> usage: quit"))
    XCTAssertFalse(text.contains("record"))
    XCTAssertTrue(text.hasSuffix("\n"))
  }

  /// Paths are stored as seen from the recording's folder, so the replay finds the same files
  /// from wherever it is run: relative where the folders share a parent, absolute otherwise.
  func testRecordedPathsReadFromTheRecordingsFolder() throws {
    let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"
    try FileManager.default.createDirectory(
      atPath: folder + "/data", withIntermediateDirectories: true)
    try FileManager.default.createDirectory(
      atPath: folder + "/rec", withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      atPath: vlm + "/images/img_33x33.png", toPath: folder + "/data/a b.png")
    let (r, out) = repl()
    for line in [
      "record start rec/s.kvl", "load \(vlm)/idefics3/model",
      #"feed image "data/a b.png"; cache map out=data/m.png"#,
      "record stop",
    ] {
      XCTAssertEqual(r.run(line: line), .ok, line + "\n" + out.text)
    }
    let lines = readFile(folder + "/rec/s.kvl").split(separator: "\n").map(String.init)
    // Relative when the model and the temporary folder share a top folder (a clone under /tmp),
    // else absolute.
    let shareTop = vlm.split(separator: "/").first == folder.split(separator: "/").first
    let load = try XCTUnwrap(lines.first { $0.hasPrefix("load ") })
    if shareTop {
      XCTAssertTrue(load.hasPrefix("load ../"), load)
      XCTAssertTrue(load.hasSuffix("/Tests/KVEngineTests/Fixtures/vlm/idefics3/model"), load)
    } else {
      XCTAssertEqual(load, "load \(vlm)/idefics3/model")
    }
    XCTAssertTrue(
      lines.contains(#"feed image "../data/a b.png"; cache map out=../data/m.png"#), "\(lines)")
    XCTAssertTrue(
      lines.contains("#> wrote ../data/m.png: 800×422 PNG, retention of 70 tokens"), "\(lines)")
    // Replayed from another folder (the recording's own), the paths still resolve.
    let (r2, out2) = repl()
    r2.workingDirectory = "/"
    XCTAssertEqual(r2.run(line: "replay \(folder)/rec/s.kvl --check"), .ok, out2.text)
  }

  /// A recording that cannot be written (here a file size limit: EFBIG, as a full disk gives
  /// ENOSPC) stops with one clear error; the file keeps what was written, the session goes on.
  func testRecordingStopsCleanlyWhenTheDiskIsFull() throws {
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "record start s.kvl"), .ok)
    XCTAssertEqual(r.run(line: "echo first"), .ok)
    let path = folder + "/s.kvl"
    let before = readFile(path)
    let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
    // The command itself runs (ok); the recording stops.
    let said = try withFileSizeLimit(size + 20) {
      output(of: "echo " + String(repeating: "x", count: 200), in: r, out)
    }
    XCTAssertTrue(
      said.hasSuffix(
        "error: record: s.kvl: file too large; recording stopped after 1 command (what was written is intact)\n"
      ), said)
    XCTAssertFalse(r.isRecording)
    let after = readFile(path)
    XCTAssertTrue(after.hasPrefix(before), "what was written before is intact")
    XCTAssertLessThanOrEqual(after.utf8.count, size + 20)
    XCTAssertEqual(r.run(line: "echo still here"), .ok)
    XCTAssertEqual(readFile(path), after, "nothing more is written")
  }

  func testRecordThenReplayCheckPasses() {
    _ = recordSession()
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .ok, out.text)
    XCTAssertEqual(out.text, "checked s.kvl: 4 commands, output matches\n")
    // Without --check the output shows; the expected error does not stop the script.
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "replay s.kvl"), .ok, out2.text)
    XCTAssertTrue(out2.text.hasPrefix("hello\ntwo words\n\nmemory"), out2.text)
    XCTAssertTrue(
      out2.text.contains("error: tokenize: no model loaded (use 'load' first)\nusage: quit"),
      out2.text)
  }

  func testScriptStartingWithAByteOrderMarkRuns() {
    let script = recordSession()
    write("bom.kvl", "\u{FEFF}" + script)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay bom.kvl --check"), .ok, out.text)
    XCTAssertEqual(out.text, "checked bom.kvl: 4 commands, output matches\n")
  }

  func testEditedExpectedLineFailsWithDiff() {
    let text = recordSession()
    write("s.kvl", text.replacingOccurrences(of: "#> two words", with: "#> two birds"))
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .failed)
    XCTAssertEqual(
      out.lines,
      [
        "error: replay: s.kvl:4: output differs from the recording",
        "--- expected (s.kvl:4)",
        "+++ actual",
        #"@@ echo "two words"; echo; mem unit=B rss=off @@"#,
        "-two birds",
        "+two words",
      ] + out.lines.dropFirst(6).filter { $0.hasPrefix(" ") })
    XCTAssertTrue(out.lines.contains(" weights          0 B   0 B"), out.text)
    // The check stopped there: nothing after it ran.
    XCTAssertFalse(out.text.contains("checked"))
  }

  func testCheckKeepGoingReportsEveryDifference() {
    write("s.kvl", "echo a\n#> b\necho c\n#> c\necho d\n#> e\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check --keep-going"), .failed)
    XCTAssertEqual(
      out.lines.filter { $0.hasPrefix("error") },
      [
        "error: replay: s.kvl:1: output differs from the recording",
        "error: replay: s.kvl:5: output differs from the recording",
        "error: replay: s.kvl: 2 of 3 commands differ from the recording (lines 1, 5)",
      ])
  }

  func testMissingOutputAndExtraOutputDiffer() {
    write("s.kvl", "echo a\necho b\n#> b\n#> extra\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .failed)
    XCTAssertEqual(
      out.lines,
      [
        "error: replay: s.kvl:1: output differs from the recording", "--- expected (s.kvl:1)",
        "+++ actual", "@@ echo a @@", "+a",
      ])
  }

  func testMaskedValuesMatch() {
    // Values marked with ~ differ, and so does the spacing around them: still a match.
    write(
      "s.kvl",
      "probe\n#> rss   ~1.5 MiB ~2 MiB\n#> decode 3 tokens ~0.1 s (~30.0 tok/s), kernel ~Zen ~(detected)\n"
    )
    let (r, out) = repl()
    var n = 0
    r.register([
      Command("probe", summary: "s", help: "h") { ctx in
        n += 1
        ctx.print("rss ~\(100 * n).25 MiB     ~2000.5 MiB")
        ctx.print("decode 3 tokens ~12.345 s (~0.2 tok/s), kernel ~Haswell ~(auto)")
      }
    ])
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .ok, out.text)
    // A changed unit or count is still a difference.
    write(
      "s.kvl",
      "probe\n#> rss ~1.5 GiB ~2 MiB\n#> decode 3 tokens ~0.1 s (~30.0 tok/s), kernel ~Zen ~(detected)\n"
    )
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .failed)
  }

  func testMemWithRSSReplays() {
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "record start m.kvl"), .ok)
    XCTAssertEqual(r.run(line: "mem --rss; mem reset; mem rss=on unit=KiB"), .ok)
    XCTAssertEqual(r.run(line: "record stop"), .ok)
    XCTAssertEqual(r.run(line: "replay m.kvl --check"), .ok, out.text)
  }

  func testRecorderWritesEachPieceAsItHappens() {
    let (r, _) = repl()
    let path = folder + "/live.kvl"
    var seenInside = ""
    r.register([
      Command("probe", summary: "s", help: "h") { ctx in
        ctx.write("partial")
        seenInside = readFile(path)
        ctx.write(" line\nnext\n")
      }
    ])
    XCTAssertEqual(r.run(line: "record start live.kvl"), .ok)
    XCTAssertEqual(r.run(line: "echo one"), .ok)
    // Read while the recorder is still open: the command and its output are there.
    XCTAssertTrue(readFile(path).hasSuffix("echo one\n#> one\n"), readFile(path))
    XCTAssertEqual(r.run(line: "probe"), .ok)
    XCTAssertTrue(seenInside.hasSuffix("probe\n#> partial"), seenInside)
    XCTAssertTrue(readFile(path).hasSuffix("probe\n#> partial line\n#> next\n"), readFile(path))
    XCTAssertEqual(r.run(line: "record stop"), .ok)
  }

  func testAppendAddsToAnExistingScript() {
    write("a.kvl", "echo first\n#> first")  // no final newline
    let (r, _) = repl()
    XCTAssertEqual(r.run(line: "record start a.kvl append=on"), .ok)
    XCTAssertEqual(r.run(line: "echo second"), .ok)
    XCTAssertEqual(r.run(line: "record stop"), .ok)
    XCTAssertEqual(readFile(folder + "/a.kvl"), "echo first\n#> first\necho second\n#> second\n")
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "replay a.kvl --check"), .ok, out2.text)
  }

  func testScriptStopsAtFirstError() {
    write("s.kvl", "echo a\nlod\necho b\n")
    let (r, out) = repl()
    XCTAssertEqual(r.runScript("s.kvl", check: false), 1)
    XCTAssertEqual(
      out.lines, ["a", "error: s.kvl:2: unknown command 'lod' (did you mean 'load'?)"])
  }

  func testScriptKeepGoing() {
    write("s.kvl", "echo a\nlod\necho b\nmem rss=maybe\necho c\n")
    let (r, out) = repl(keepGoing: true)
    XCTAssertEqual(r.runScript("s.kvl", check: false), 1)
    XCTAssertEqual(
      out.lines,
      [
        "a", "error: s.kvl:2: unknown command 'lod' (did you mean 'load'?)", "b",
        "error: s.kvl:4: mem: rss must be on or off, got 'maybe'", "c",
        "error: replay: s.kvl: 2 of 5 commands failed (lines 2, 4)",
      ])
  }

  func testQuitEndsOnlyTheScript() {
    write("s.kvl", "echo a\nquit\necho b\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl; echo after"), .ok)
    XCTAssertEqual(out.lines, ["a", "after"])
  }

  func testPathsResolveAgainstTheScriptsFolder() throws {
    try FileManager.default.createDirectory(
      atPath: folder + "/sub", withIntermediateDirectories: true)
    write(
      "sub/outer.kvl", "replay inner.kvl\n#> inner\nrecord start made.kvl\necho x\nrecord stop\n")
    write("sub/inner.kvl", "echo inner\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay sub/outer.kvl"), .ok, out.text)
    XCTAssertEqual(
      readFile(folder + "/sub/made.kvl").components(separatedBy: "\n").dropFirst().joined(
        separator: "\n"), "echo x\n#> x\n")
    XCTAssertEqual(r.run(line: "replay sub/outer.kvl --check"), .failed)  // made.kvl exists now
    XCTAssertTrue(
      out.text.contains("+error: sub/outer.kvl:3: record start: made.kvl already exists"), out.text)
  }

  func testCommandsSeparatedBySemicolons() {
    let (r, out) = repl()
    XCTAssertEqual(r.runCommands(["echo a; echo b", "echo c"]), 0)
    XCTAssertEqual(out.lines, ["a", "b", "c"])
    let (r2, out2) = repl()
    XCTAssertEqual(r2.runCommands(["echo a; lod; echo b", "echo c"]), 1)
    XCTAssertEqual(out2.lines, ["a", "error: unknown command 'lod' (did you mean 'load'?)"])
    let (r3, out3) = repl(keepGoing: true)
    XCTAssertEqual(r3.runCommands(["echo a; lod; echo b", "echo c"]), 1)
    XCTAssertEqual(
      out3.lines, ["a", "error: unknown command 'lod' (did you mean 'load'?)", "b", "c"])
    let (r4, out4) = repl()
    XCTAssertEqual(r4.runCommands(["echo a; quit; echo b"]), 0)
    XCTAssertEqual(out4.lines, ["a"])
  }

  func testPipedLines() {
    var input = ["echo a", "#> ignored", "# comment", "", "lod", "echo b"][...]
    let (r, out) = repl()
    XCTAssertEqual(r.runLines { input.popFirst() }, 1)
    XCTAssertEqual(out.lines, ["a", "error: unknown command 'lod' (did you mean 'load'?)"])
    input = ["echo a", "lod", "echo b"][...]
    let (r2, out2) = repl(keepGoing: true)
    XCTAssertEqual(r2.runLines { input.popFirst() }, 1)
    XCTAssertEqual(out2.lines.last, "b")
  }

  func testMaskRule() {
    XCTAssertEqual(Mask.apply("rss  ~1.25 MiB   ~3 MiB  "), "rss ~* MiB ~* MiB")
    XCTAssertEqual(
      Mask.apply("decode 5 tokens ~0.104 s (~48.1 tok/s)"), "decode 5 tokens ~* s (~* tok/s)")
    XCTAssertEqual(Mask.apply("a~b ~"), "a~b ~*")
    XCTAssertEqual(Mask.apply("kernel ~Zen ~(detected), x"), "kernel ~* ~*), x")
    XCTAssertEqual(Mask.apply("  indented"), "indented")
    XCTAssertTrue(
      Mask.matches(
        expected: ["blas: OpenBLAS, kernel ~Zen ~(detected)"],
        actual: ["blas: OpenBLAS, kernel ~SkylakeX ~(auto)"]))
    XCTAssertFalse(Mask.matches(expected: ["kv 1.00 MiB"], actual: ["kv 1.01 MiB"]))
    XCTAssertFalse(Mask.matches(expected: ["a"], actual: ["a", ""]))
  }

  func testLineDiff() {
    XCTAssertEqual(
      LineDiff.unified(expected: ["a", "b", "c"], actual: ["a", "x", "c", "d"]),
      [" a", "-b", "+x", " c", "+d"])
    XCTAssertEqual(LineDiff.unified(expected: [], actual: []), [])
  }

  /// Under `--prefill-kernel auto` (bf16 on this CPU), what is recorded and what is replayed
  /// (a script, a notebook) runs on the float32 reference, so a recording checks on a CPU with
  /// avx512_bf16 and one without; a named kernel applies to them as to anything else.
  func testRecordingAndReplayRunTheReferenceUnderAuto() throws {
    guard defaultModelPath != nil else { throw XCTSkip("needs the text model (scripts/setup.sh)") }
    guard PrefillKernel.automatic == .bf16 else {
      throw XCTSkip("auto is sgemm on this CPU (no avx512_bf16)")
    }
    defer { try? PrefillKernel.select(.sgemm) }
    // A capped prefill's eviction scores: they differ between the two kernels.
    let commands = [
      "load", "policy snapkv window=8", "budget 16 tokens", "prefill mode=capped block=8",
      #"feed text "The keeper counted the boats in the harbour and wrote the numbers in a small book every evening.""#,
      "cache log",
    ]
    func outputOn(_ kernel: PrefillKernel) throws -> [String] {
      try PrefillKernel.select(kernel)
      let (r, out) = repl()
      for c in commands { XCTAssertEqual(r.run(line: c), .ok, out.text) }
      return out.lines
    }
    let sgemm = try outputOn(.sgemm)
    XCTAssertNotEqual(sgemm, try outputOn(.bf16), "the output shows which kernel ran")

    try PrefillKernel.select(.auto)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "record start s.kvl"), .ok)
    for c in commands { XCTAssertEqual(r.run(line: c), .ok, out.text) }
    XCTAssertEqual(r.run(line: "record stop"), .ok)
    let recorded = readFile(folder + "/s.kvl").split(separator: "\n").filter { $0.hasPrefix("#>") }
      .map { String($0.dropFirst(3)) }
    XCTAssertEqual(recorded, sgemm, "recorded under auto: the reference's output")
    XCTAssertTrue(output(of: "info", in: r, out).contains("prefill ~bf16 ~(auto: avx512_bf16;"))

    // The notebook of the same commands, its outputs written under auto.
    let cell: [String: Any] = [
      "cell_type": "code", "id": "c", "metadata": [:], "execution_count": NSNull(),
      "outputs": [], "source": commands.joined(separator: "\n"),
    ]
    let notebook: [String: Any] = [
      "nbformat": 4, "nbformat_minor": 5, "metadata": [:], "cells": [cell],
    ]
    try JSONSerialization.data(withJSONObject: notebook).write(
      to: URL(fileURLWithPath: folder + "/nb.ipynb"))
    let (fresh, freshOut) = repl()
    XCTAssertEqual(fresh.run(line: "notebook run nb.ipynb --update"), .ok, freshOut.text)

    for (kernel, result) in [
      (PrefillKernel.Choice.auto, CommandResult.ok), (.named(.sgemm), .ok), (.named(.bf16), .failed),
    ] {
      try PrefillKernel.select(kernel)
      for line in ["replay s.kvl --check", "notebook run nb.ipynb --check"] {
        let (r, out) = repl()
        XCTAssertEqual(r.run(line: line), result, "\(kernel): \(line)\n\(out.text)")
      }
    }
  }
}

final class FixtureScriptTests: XCTestCase {
  /// The bad-input table, kept as a script: every expected error still reads exactly so.
  func testBadInputScriptChecks() throws {
    let url = try XCTUnwrap(
      Bundle.module.url(forResource: "bad_inputs", withExtension: "kvl", subdirectory: "Fixtures"))
    let (r, out) = makeRepl()
    XCTAssertEqual(r.runScript(url.path, check: true), 0, out.text)
    XCTAssertTrue(out.text.hasSuffix("output matches\n"), out.text)
    // Without --check the expected errors do not stop it either.
    let (r2, out2) = makeRepl()
    XCTAssertEqual(r2.runScript(url.path, check: false), 0, out2.text)
    XCTAssertTrue(out2.text.hasSuffix("still running\n"), out2.text)
  }
}


import Foundation
import XCTest

@testable import KVRepl

/// `replay SCRIPT --update`: the `#>` lines become what the commands print now; everything
/// else in the script stays as it was, and the file is replaced atomically.
final class ReplayUpdateTests: XCTestCase {
  var folder = ""

  override func setUp() {
    folder = temporaryFolder(self)
  }

  func repl() -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    r.workingDirectory = folder
    return (r, out)
  }

  func write(_ name: String, _ text: String) {
    _ = FileManager.default.createFile(atPath: folder + "/" + name, contents: Data(text.utf8))
  }

  static let stale = """
    # kvlab session. Replay: kvlab replay s.kvl [--check]
    # A comment, then a blank line.

    echo hello
    #> goodbye
    #> and a line too many
    echo "two words"; echo
      # an indented comment between commands
    tokenize hi
    #> error: tokenize: an old message
    sleep 30
    #> ^C cancelled: sleep
    echo new
    #> new
    # the end
    """

  static let fixed = """
    # kvlab session. Replay: kvlab replay s.kvl [--check]
    # A comment, then a blank line.

    echo hello
    #> hello
    echo "two words"; echo
    #> two words
    #>
      # an indented comment between commands
    tokenize hi
    #> error: tokenize: no model loaded (use 'load' first)
    sleep 30
    #> ^C cancelled: sleep
    echo new
    #> new
    # the end
    """

  func testUpdateKeepsCommentsAndFixesWrongOutput() throws {
    write("s.kvl", Self.stale + "\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .failed)
    XCTAssertEqual(r.run(line: "replay s.kvl --update"), .ok, out.text)
    XCTAssertTrue(
      out.text.hasSuffix("updated s.kvl: 4 commands run, 3 changed; recorded errors: line 9\n"),
      out.text)
    XCTAssertEqual(readFile(folder + "/s.kvl"), Self.fixed + "\n")
    // Then the check passes, and a second update changes no byte (tokenize is a line lower
    // now: "two words" got its output).
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "replay s.kvl --check"), .ok, out2.text)
    XCTAssertEqual(r2.run(line: "replay s.kvl --update"), .ok, out2.text)
    XCTAssertTrue(
      out2.text.hasSuffix("updated s.kvl: 4 commands run, 0 changed; recorded errors: line 10\n"),
      out2.text)
    XCTAssertEqual(readFile(folder + "/s.kvl"), Self.fixed + "\n")
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["s.kvl"])
  }

  func testRewriteKeepsAFileWithoutAFinalNewlineAndCarriageReturns() {
    XCTAssertEqual(Script.rewrite("echo a", outputs: [1: ["a"]]), "echo a\n#> a")
    XCTAssertEqual(
      Script.rewrite("echo a\r\n#> b\r\n", outputs: [1: ["a", ""]]), "echo a\r\n#> a\r\n#>\r\n")
    // A command not run (after quit, or skipped) keeps its lines.
    XCTAssertEqual(Script.rewrite("quit\necho a\n#> b\n", outputs: [1: []]), "quit\necho a\n#> b\n")
  }

  func testQuitLeavesTheRestAsItWas() {
    write("s.kvl", "echo a\n#> x\nquit\necho b\n#> y\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --update"), .ok, out.text)
    XCTAssertEqual(readFile(folder + "/s.kvl"), "echo a\n#> a\nquit\necho b\n#> y\n")
  }

  /// Masked values (`~`) are written as they are now, not as masks.
  func testUpdateWritesTheActualVaryingValues() {
    write("s.kvl", "probe\n#> took ~1.000 s\n")
    let (r, out) = repl()
    r.register([Command("probe", summary: "s", help: "h") { ctx in ctx.print("took ~2.500 s") }])
    XCTAssertEqual(r.run(line: "replay s.kvl --check"), .ok, out.text)
    XCTAssertEqual(r.run(line: "replay s.kvl --update"), .ok, out.text)
    XCTAssertEqual(readFile(folder + "/s.kvl"), "probe\n#> took ~2.500 s\n")
  }

  func testCheckAndUpdateTogetherIsAnError() {
    write("s.kvl", "echo a\n#> a\n")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --check --update"), .failed)
    XCTAssertEqual(
      out.text,
      "error: replay: --check and --update do not go together (--check compares the #> lines, --update rewrites them)\n"
    )
  }

  /// A write that fails half way (the file size limit) leaves the script as it was, and no
  /// temporary file.
  func testFailedUpdateLeavesTheOriginal() throws {
    let original = "echo " + String(repeating: "x", count: 100) + "\n#> stale\n"
    write("s.kvl", original)
    let (r, out) = repl()
    let result = try withFileSizeLimit(64) { r.run(line: "replay s.kvl --update") }
    XCTAssertEqual(result, .failed)
    XCTAssertEqual(out.lines, ["error: replay: s.kvl: cannot write it: file too large"])
    XCTAssertEqual(readFile(folder + "/s.kvl"), original)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["s.kvl"])
  }

  func testUpdateInAReadOnlyFolderFailsClearly() throws {
    try XCTSkipIf(geteuid() == 0, "root writes into read-only folders")
    write("s.kvl", "echo a\n#> b\n")
    chmod(folder, 0o555)
    defer { chmod(folder, 0o755) }
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --update"), .failed)
    XCTAssertEqual(
      out.lines,
      ["error: replay: s.kvl: cannot write a temporary file next to it: permission denied"])
    XCTAssertEqual(readFile(folder + "/s.kvl"), "echo a\n#> b\n")
  }

  /// An update through a symbolic link replaces the file it points to; the link stays.
  func testUpdateThroughALinkKeepsTheLink() throws {
    write("real.kvl", "echo a\n#> b\n")
    try FileManager.default.createSymbolicLink(
      atPath: folder + "/link.kvl", withDestinationPath: "real.kvl")
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay link.kvl --update"), .ok, out.text)
    XCTAssertEqual(
      try FileManager.default.destinationOfSymbolicLink(atPath: folder + "/link.kvl"), "real.kvl")
    XCTAssertEqual(readFile(folder + "/real.kvl"), "echo a\n#> a\n")
  }

  /// The temporary file takes the original's permission bits.
  func testUpdateKeepsThePermissions() throws {
    write("s.kvl", "echo a\n#> b\n")
    chmod(folder + "/s.kvl", 0o600)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "replay s.kvl --update"), .ok, out.text)
    let mode =
      try FileManager.default.attributesOfItem(atPath: folder + "/s.kvl")[.posixPermissions] as? Int
    XCTAssertEqual(mode, 0o600)
  }
}

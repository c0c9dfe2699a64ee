import Foundation
import XCTest

@testable import KVRepl

/// Jupyter notebooks (nbformat 4) of kvlab commands: reading and writing them byte for byte,
/// `notebook run` with --check and --update, bad notebooks, and the tutorial notebooks.
final class NotebookTests: XCTestCase {
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

  /// A notebook as a person might have written it: keys in any order, indent 2, one source a
  /// string and one a list, no outputs yet.
  static let handWritten = #"""
    {
      "nbformat": 4, "nbformat_minor": 5,
      "metadata": {"kernelspec": {"name": "kvlab", "display_name": "kvlab", "language": "kvlab"},
                   "language_info": {"name": "kvlab"},
                   "zeta": {"b": [1, 2.50, -0.0, 1E5, true, false, null], "a": "é\u2028\"q\"\t\u0001/"},
                   "authors": [{"name": "Ada"}]},
      "cells": [
        {"cell_type": "markdown", "id": "intro", "metadata": {"tags": ["x"]},
         "source": ["# Title\n", "Some *markdown* — with ünïcode.\n", "\n", "end"],
         "attachments": {"a.png": {"image/png": "iVBORw0KGgo="}}},
        {"cell_type": "code", "id": "one", "metadata": {"collapsed": false}, "execution_count": null,
         "outputs": [], "source": "echo hello"},
        {"cell_type": "code", "id": "two", "metadata": {}, "execution_count": 7, "outputs": [],
         "source": ["# a comment\n", "\n", "echo a; echo b\n", "  echo   spaced  \n"]},
        {"cell_type": "raw", "id": "raw", "metadata": {}, "source": "kept as is"},
        {"cell_type": "code", "id": "three", "metadata": {}, "execution_count": null, "outputs": [],
         "source": ["tokenize hi"]}
      ]
    }
    """#

  func notebook(_ text: String, _ name: String = "nb.ipynb") throws -> Notebook {
    try Notebook(bytes: Array(text.utf8), displayName: name)
  }

  // MARK: reading and writing

  func testReadsCellsSourcesAndOutputs() throws {
    let nb = try notebook(Self.handWritten)
    XCTAssertEqual(nb.cells.map(\.kind), ["markdown", "code", "code", "raw", "code"])
    XCTAssertEqual(nb.cells.map(\.number), [1, 2, 3, 4, 5])
    XCTAssertEqual(nb.cells[2].source, "# a comment\n\necho a; echo b\n  echo   spaced  \n")
    XCTAssertEqual(nb.cells[2].commandLines.map(\.line), ["echo a; echo b", "  echo   spaced  "])
    XCTAssertEqual(nb.cells[2].commandLines.map(\.number), [3, 4])
    XCTAssertEqual(nb.cells[1].outputText, "")
  }

  func testRoundTripKeepsUnknownMetadataAndMarkdownByteForByte() throws {
    let original = try notebook(Self.handWritten)
    let first = original.serialized()
    let reread = try Notebook(bytes: first, displayName: "nb.ipynb")
    XCTAssertEqual(reread.serialized(), first)
    // Nothing was lost or changed, key order aside: metadata, markdown and raw cells.
    XCTAssertEqual(reread.document, original.document)
    XCTAssertEqual(reread.document["metadata"]?["zeta"], original.document["metadata"]?["zeta"])
    let text = String(decoding: first, as: UTF8.self)
    // Numbers keep the text they were written with; non-ASCII stays as it is.
    let numbers = [
      "   \"b\": [", "    1,", "    2.50,", "    -0.0,", "    1E5,", "    true,", "    false,",
      "    null", "   ]",
    ]
    XCTAssertTrue(text.contains(numbers.joined(separator: "\n")), text)
    XCTAssertTrue(text.contains(#""a": "é\#u{2028}\"q\"\t\u0001/","#), text)
    XCTAssertTrue(text.contains(#""Some *markdown* — with ünïcode.\n","#), text)
    XCTAssertTrue(text.hasSuffix("}\n"))
    // An update changes the code cells' outputs and nothing else.
    var updated = reread
    updated.setOutput(ofCell: 2, parts: [.text("hello\n")], executionCount: 1)
    updated.complete()
    let after = try Notebook(bytes: updated.serialized(), displayName: "nb.ipynb")
    guard case .array(let before)? = original.document["cells"],
      case .array(let now)? = after.document["cells"]
    else { return XCTFail("no cells") }
    XCTAssertEqual(now[0], before[0])
    XCTAssertEqual(now[3], before[3])
    XCTAssertEqual(now[2], before[2])
    XCTAssertEqual(after.document["metadata"], original.document["metadata"])
    XCTAssertEqual(after.cells[1].outputText, "hello\n")
  }

  /// The layout is nbformat's (json.dumps with sort_keys=True, indent=1, ensure_ascii=False).
  func testWritesLikeNbformat() {
    let v = JSONValue.object([
      ("b", .array([.number("1"), .string("x\ny"), .array([]), .object([])])),
      ("a", .object([("z", .null), ("Z", .bool(true))])),
    ])
    XCTAssertEqual(
      JSONWriter.write(v),
      """
      {
       "a": {
        "Z": true,
        "z": null
       },
       "b": [
        1,
        "x\\ny",
        [],
        {}
       ]
      }
      """)
  }

  func testOutputsAreSplitIntoLinesAsNbformatDoes() {
    XCTAssertEqual(
      Notebook.splitLines("a\nb\r\nc\rd"),
      .array([.string("a\n"), .string("b\r\n"), .string("c\r"), .string("d")]))
    XCTAssertEqual(Notebook.splitLines(""), .array([]))
  }

  func testCompleteAddsIdsMinorAndKernelspecButChangesNothingPresent() throws {
    let nb = try notebook(
      #"{"nbformat": 4, "nbformat_minor": 4, "metadata": {"kernelspec": {"name": "other"}}, "cells": [{"cell_type": "code", "metadata": {}, "source": "echo", "outputs": [], "execution_count": null}, {"cell_type": "markdown", "id": "cell-1", "metadata": {}, "source": "x"}]}"#
    )
    var c = nb
    c.complete()
    XCTAssertEqual(c.document["nbformat_minor"], .number("5"))
    XCTAssertEqual(c.document["metadata"]?["kernelspec"], .object([("name", .string("other"))]))
    XCTAssertEqual(c.document["metadata"]?["language_info"], Notebook.languageInfo)
    guard case .array(let cells)? = c.document["cells"] else { return XCTFail("no cells") }
    XCTAssertEqual(cells.map { $0["id"] }, [.string("cell-1-2"), .string("cell-1")])
  }

  // MARK: notebook run

  func testUpdateThenCheck() throws {
    write("nb.ipynb", Self.handWritten)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb --update"), .ok, out.text)
    XCTAssertEqual(out.text, "updated nb.ipynb: 3 code cells, 3 changed; recorded errors: cell 5\n")
    let nb = try Notebook(
      bytes: Array(readFile(folder + "/nb.ipynb").utf8), displayName: "nb.ipynb")
    XCTAssertEqual(
      nb.cells.map(\.outputText),
      [
        "", "hello\n", "a\nb\nspaced\n", "",
        "error: tokenize: no model loaded (use 'load' first)\n",
      ])
    guard case .array(let cells)? = nb.document["cells"] else { return XCTFail("no cells") }
    XCTAssertEqual(
      cells.map { $0["execution_count"] }, [nil, .number("1"), .number("2"), nil, .number("3")])
    XCTAssertEqual(
      cells[1]["outputs"],
      .array([
        .object([
          ("name", .string("stdout")), ("output_type", .string("stream")),
          ("text", .array([.string("hello\n")])),
        ])
      ]))
    // The check passes, twice, with the same output; a second update gives the same bytes.
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --check"), .ok, out2.text)
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --check"), .ok, out2.text)
    XCTAssertEqual(
      out2.text, String(repeating: "checked nb.ipynb: 3 code cells, output matches\n", count: 2))
    let once = readFile(folder + "/nb.ipynb")
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --update"), .ok)
    XCTAssertTrue(
      out2.text.hasSuffix("updated nb.ipynb: 3 code cells, 0 changed; recorded errors: cell 5\n"),
      out2.text)
    XCTAssertEqual(readFile(folder + "/nb.ipynb"), once)
    // No temporary file is left behind.
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["nb.ipynb"])
  }

  /// `cache map` and `mem plot` in a notebook are pictures: --update stores display_data (a
  /// PNG, with the terminal's text as text/plain) between the text around them; --check
  /// compares that text.
  func testViewsAreStoredAsPictures() throws {
    let cell = #"{"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [], "source": "#
    write(
      "nb.ipynb",
      #"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": ["#
        + cell + #""load \#(repositoryRoot)/weights/kvlab-shapes\nfeed synthetic attribute seed=3"},"#
        + cell + #""echo before\ncache map\nmem plot\necho after"}]}"#)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb --update"), .ok, out.text)
    let nb = try Notebook(
      bytes: Array(readFile(folder + "/nb.ipynb").utf8), displayName: "nb.ipynb")
    guard case .array(let cells)? = nb.document["cells"],
      case .array(let outputs)? = cells[1]["outputs"]
    else { return XCTFail("no outputs") }
    XCTAssertEqual(
      outputs.map { $0["output_type"]?.string },
      ["stream", "display_data", "display_data", "stream"])
    for (o, first) in zip(outputs[1...2], ["share of the ", "memory plot: "]) {
      let png = try XCTUnwrap(
        o["data"]?["image/png"]?.string.flatMap {
          Data(base64Encoded: $0, options: .ignoreUnknownCharacters)
        })
      XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
      XCTAssertTrue(Notebook.text(o["data"]?["text/plain"])?.hasPrefix(first) ?? false, first)
    }
    XCTAssertTrue(nb.cells[1].outputText.hasPrefix("before\nshare of the "), nb.cells[1].outputText)
    XCTAssertTrue(nb.cells[1].outputText.hasSuffix("after\n"))
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --check"), .ok, out2.text)
    // At a terminal mem plot needs a file, and cache map is text.
    let (r3, out3) = repl()
    XCTAssertEqual(r3.run(line: "notebook run nb.ipynb"), .failed)
    XCTAssertTrue(
      out3.text.contains("mem plot: out=FILE.png is needed here (a notebook shows the plot inline)"),
      out3.text)
  }

  func testEditedOutputFailsWithDiff() throws {
    write("nb.ipynb", Self.handWritten)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb --update"), .ok, out.text)
    let text = readFile(folder + "/nb.ipynb")
    XCTAssertTrue(text.contains(#""b\n","#))
    write("nb.ipynb", text.replacingOccurrences(of: #""b\n","#, with: #""B\n","#))
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --check"), .failed)
    XCTAssertEqual(
      out2.lines,
      [
        "error: notebook: nb.ipynb: cell 3 (code cell 2: echo a; echo b): output differs from the recording",
        "--- expected (nb.ipynb: cell 3 (code cell 2: echo a; echo b))", "+++ actual",
        "@@ code cell 2: echo a; echo b @@", " a", "-B", "+b", " spaced",
      ])
    // With --keep-going every differing cell is reported, then a summary.
    let (r3, out3) = repl()
    XCTAssertEqual(r3.run(line: "notebook run nb.ipynb --check --keep-going"), .failed)
    XCTAssertEqual(
      out3.lines.filter { $0.hasPrefix("error") },
      [
        "error: notebook: nb.ipynb: cell 3 (code cell 2: echo a; echo b): output differs from the recording",
        "error: notebook: nb.ipynb: 1 of 3 code cells differ from the stored output (cells 3)",
      ])
  }

  func testRunShowsOutputAndStopsAtTheFirstFailingCell() {
    write(
      "nb.ipynb",
      Self.handWritten.replacingOccurrences(
        of: #""tokenize hi""#, with: #""tokenize hi\n", "echo after""#))
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb"), .failed)
    XCTAssertEqual(
      out.lines,
      [
        "── code cell 1: echo hello (cell 2)", "hello",
        "── code cell 2: echo a; echo b (cell 3)", "a", "b", "spaced",
        "── code cell 3: tokenize hi (cell 5)",
        "error: nb.ipynb: cell 5, line 1: tokenize: no model loaded (use 'load' first)",
      ])
    // --keep-going goes on, and says which cells failed.
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "notebook run nb.ipynb --keep-going"), .failed)
    XCTAssertEqual(
      out2.lines.suffix(2),
      ["after", "error: notebook: nb.ipynb: 1 of 3 code cells failed (cells 5)"])
    // A stored error line makes the failure expected: the run succeeds.
    let (r3, out3) = repl()
    XCTAssertEqual(r3.run(line: "notebook run nb.ipynb --update"), .ok, out3.text)
    XCTAssertEqual(r3.run(line: "notebook run nb.ipynb"), .ok, out3.text)
  }

  func testPathsResolveAgainstTheNotebooksFolder() throws {
    try FileManager.default.createDirectory(
      atPath: folder + "/sub", withIntermediateDirectories: true)
    write("sub/inner.kvl", "echo from inner\n#> from inner\n")
    write(
      "sub/nb.ipynb",
      #"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "id": "c", "metadata": {}, "execution_count": null, "outputs": [], "source": "replay inner.kvl --check"}]}"#
    )
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run sub/nb.ipynb"), .ok, out.text)
    XCTAssertEqual(
      out.text,
      "── code cell 1: replay inner.kvl --check (cell 1)\nchecked inner.kvl: 1 command, output matches\n")
  }

  func testCheckAndUpdateTogetherIsAnError() {
    write("nb.ipynb", Self.handWritten)
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb --check --update"), .failed)
    XCTAssertEqual(
      out.text,
      "error: notebook: --check and --update do not go together (--check compares the stored outputs, --update rewrites them)\n"
    )
  }

  /// An update that cannot write leaves the notebook exactly as it was, and no temporary file.
  func testFailedUpdateLeavesTheOriginal() throws {
    write("nb.ipynb", Self.handWritten)
    let (r, out) = repl()
    let failed = try withFileSizeLimit(64) { r.run(line: "notebook run nb.ipynb --update") }
    XCTAssertEqual(failed, .failed)
    XCTAssertEqual(out.lines, ["error: notebook: nb.ipynb: cannot write it: file too large"])
    XCTAssertEqual(readFile(folder + "/nb.ipynb"), Self.handWritten)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["nb.ipynb"])
  }

  func testUpdateInAReadOnlyFolderFailsClearly() throws {
    try XCTSkipIf(geteuid() == 0, "root writes into read-only folders")
    write("nb.ipynb", Self.handWritten)
    chmod(folder, 0o555)
    defer { chmod(folder, 0o755) }
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run nb.ipynb --update"), .failed)
    XCTAssertEqual(
      out.lines,
      ["error: notebook: nb.ipynb: cannot write a temporary file next to it: permission denied"])
    XCTAssertEqual(readFile(folder + "/nb.ipynb"), Self.handWritten)
  }

  // MARK: bad notebooks

  func expectError(_ file: String, _ contents: String?, _ message: String, line: UInt = #line) {
    if let contents { write(file, contents) }
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "notebook run \(file)"), .failed, line: line)
    XCTAssertEqual(out.text, message + "\n", line: line)
    XCTAssertEqual(r.run(line: "echo alive"), .ok, line: line)
  }

  func testNotJSON() {
    expectError(
      "bad.ipynb", #"{"cells": ["#,
      "error: notebook: bad.ipynb: not JSON (line 1, column 12: expected a value, found the end of the file)"
    )
    expectError(
      "bad2.ipynb", "this is not json\n",
      "error: notebook: bad2.ipynb: not JSON (line 1, column 1: expected a value, found 't')")
    expectError(
      "bad3.ipynb", "",
      "error: notebook: bad3.ipynb: not JSON (line 1, column 1: expected a value, found the end of the file)"
    )
    expectError(
      "deep.ipynb", String(repeating: "[", count: 100_000),
      "error: notebook: deep.ipynb: not JSON (line 1, column 513: nested more than 512 deep)")
  }

  func testNotANotebookObject() {
    expectError(
      "list.ipynb", "[1, 2]",
      "error: notebook: list.ipynb: not a notebook (the JSON is a list, not an object)")
  }

  func testNbformat3() {
    expectError(
      "old.ipynb",
      #"{"metadata": {}, "nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}]}"#,
      "error: notebook: old.ipynb: not an nbformat 4 notebook (nbformat 3)")
  }

  func testMissingNbformat() {
    expectError(
      "none.ipynb", #"{"cells": []}"#,
      "error: notebook: none.ipynb: not an nbformat 4 notebook (no nbformat field)")
  }

  func testMissingCells() {
    expectError(
      "nocells.ipynb", #"{"metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
      "error: notebook: nocells.ipynb: not an nbformat 4 notebook (no 'cells' list)")
  }

  func testSourceNeitherStringNorListOfStrings() {
    let cell =
      #"{"cell_type": "code", "id": "x", "metadata": {}, "outputs": [], "execution_count": null, "source": SOURCE}"#
    for source in ["42", #"["echo a\n", 7]"#, "null", #"{"a": "b"}"#] {
      expectError(
        "src.ipynb",
        #"{"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": ""}, "#
          + cell.replacingOccurrences(of: "SOURCE", with: source) + "]}",
        "error: notebook: src.ipynb: cell 2: source must be a string or a list of strings")
    }
  }

  func testMissingFile() {
    expectError("nope.ipynb", nil, "error: notebook: nope.ipynb: no such file")
  }

  func testFolder() throws {
    try FileManager.default.createDirectory(
      atPath: folder + "/d.ipynb", withIntermediateDirectories: true)
    expectError("d.ipynb", nil, "error: notebook: d.ipynb: is a folder, not a notebook")
  }

  func testWrongExtension() {
    expectError("nb.json", "{}", "error: notebook run: FILE must name a .ipynb file, got 'nb.json'")
  }

  // MARK: the tutorial notebooks

  var tutorials: [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/notebooks")) ?? [])
      .filter { $0.hasSuffix(".ipynb") }.sorted()
  }

  func testTutorialNotebooksAreCommitted() {
    XCTAssertEqual(
      tutorials,
      [
        "budgets-and-policies.ipynb", "long-clip.ipynb", "post-vs-capped.ipynb",
        "quickstart.ipynb", "reading-the-cache.ipynb",
      ])
  }

  /// A committed notebook is in the form this writer (and nbformat) writes: reading and
  /// writing it changes no byte.
  func testTutorialNotebooksAreWrittenCanonically() throws {
    for name in tutorials {
      let path = repositoryRoot + "/notebooks/" + name
      let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
      let nb = try Notebook(bytes: bytes, displayName: name)
      XCTAssertEqual(nb.serialized(), bytes, name)
      XCTAssertEqual(nb.document["metadata"]?["kernelspec"], Notebook.kernelspec, name)
    }
  }

  func checkTutorial(_ name: String) {
    let (r, out) = makeRepl()
    r.workingDirectory = repositoryRoot
    XCTAssertEqual(r.run(line: "notebook run notebooks/\(name) --check"), .ok, out.text)
    XCTAssertTrue(out.text.hasPrefix("checked notebooks/\(name): "), out.text)
  }

  func testBudgetsAndPoliciesNotebookChecks() { checkTutorial("budgets-and-policies.ipynb") }

  func testReadingTheCacheNotebookChecks() { checkTutorial("reading-the-cache.ipynb") }

  func testPostVsCappedNotebookChecks() { checkTutorial("post-vs-capped.ipynb") }

  func testQuickstartNotebookChecks() throws {
    try XCTSkipIf(defaultModelPath == nil, "SmolLM2 not set up (scripts/setup.sh)")
    checkTutorial("quickstart.ipynb")
  }
}

/// Runs `body` with the process's file size limit (RLIMIT_FSIZE) at `bytes`, so that a write
/// past it fails with EFBIG (SIGXFSZ is ignored meanwhile): a write that fails half way,
/// which even root cannot get around.
func withFileSizeLimit<T>(_ bytes: Int, _ body: () throws -> T) throws -> T {
  var old = rlimit()
  guard getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old) == 0 else { throw XCTSkip("no getrlimit") }
  let oldHandler = signal(SIGXFSZ, SIG_IGN)
  var limited = old
  limited.rlim_cur = rlim_t(bytes)
  guard setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited) == 0 else {
    throw XCTSkip("cannot lower RLIMIT_FSIZE")
  }
  defer {
    setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
    signal(SIGXFSZ, oldHandler)
  }
  return try body()
}

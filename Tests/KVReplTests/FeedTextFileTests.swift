import Foundation
import XCTest

@testable import KVEngine
@testable import KVRepl

/// `feed text @FILE`: the file's text goes in exactly as the same text typed would; a missing,
/// binary, non-UTF-8, empty or too large file is a one-line error naming the file, and the
/// session is unchanged.
final class FeedTextFileTests: XCTestCase {
  func embedded() -> (Repl, CaptureSink, String) {
    let (repl, capture) = makeEmbeddedRepl(self, load: true)
    return (repl, capture, repl.workingDirectory!)
  }

  func testFileTextIsFedAsTyped() throws {
    let text = "a red circle\nand a blue square, side by side\n"
    let (a, aout, folder) = embedded()
    try Data(text.utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt"))
    XCTAssertEqual(a.run(line: "feed text @notes.txt"), .ok, aout.text)
    let (b, bout, _) = embedded()
    XCTAssertEqual(b.run(line: "feed text \(Repl.quote(text))"), .ok, bout.text)
    XCTAssertEqual(a.session.context, b.session.context)
    XCTAssertEqual(aout.lines.last, bout.lines.last)
    // An absolute path, and @@ for a text that starts with @.
    let (c, cout, _) = embedded()
    XCTAssertEqual(c.run(line: "feed text @\(folder)/notes.txt"), .ok, cout.text)
    XCTAssertEqual(c.session.context, a.session.context)
    let (d, dout, _) = embedded()
    XCTAssertEqual(d.run(line: #"feed text "@@home""#), .ok, dout.text)
    let (e, eout, _) = embedded()
    XCTAssertEqual(e.run(line: #"feed text "@home""#), .failed)
    XCTAssertEqual(eout.lines.last, "error: feed text: home: no such file")
    XCTAssertEqual(d.session.tokenizer?.decode(d.session.context).contains("@home"), true)
  }

  func testBadFilesAreOneLineErrors() throws {
    let (r, out, folder) = embedded()
    XCTAssertEqual(r.run(line: #"feed text "first""#), .ok)
    let context = r.session.context
    let fm = FileManager.default
    fm.createFile(atPath: folder + "/blob.bin", contents: Data([0x68, 0x69, 0x00, 0x01]))
    fm.createFile(atPath: folder + "/latin1.txt", contents: Data([0x63, 0x61, 0x66, 0xE9]))
    fm.createFile(atPath: folder + "/empty.txt", contents: Data())
    fm.createFile(atPath: folder + "/blank.txt", contents: Data(" \n\n".utf8))
    try fm.createDirectory(atPath: folder + "/dir", withIntermediateDirectories: true)
    // Larger than the limit without writing it: a sparse file.
    let big = folder + "/big.txt"
    fm.createFile(atPath: big, contents: Data())
    let handle = try XCTUnwrap(FileHandle(forWritingAtPath: big))
    try handle.truncate(atOffset: UInt64(SessionCommands.maxTextFileBytes + 1))
    try handle.close()
    for (line, message) in [
      ("feed text @missing.txt", "missing.txt: no such file"),
      ("feed text @blob.bin", "blob.bin: a binary file (a NUL byte at offset 2), not text"),
      ("feed text @latin1.txt", "latin1.txt: not UTF-8 text"),
      ("feed text @empty.txt", "empty.txt: no text to feed (the file is empty or blank)"),
      ("feed text @blank.txt", "blank.txt: no text to feed (the file is empty or blank)"),
      ("feed text @dir", "dir: is a folder, not a text file"),
      (
        "feed text @big.txt",
        "big.txt: file is \(SessionCommands.maxTextFileBytes + 1) bytes, more than the limit of \(SessionCommands.maxTextFileBytes) for a text to feed"
      ),
      ("feed text @", "@ needs a file name (feed text @notes.txt; @@ for a text starting with @)"),
    ] {
      XCTAssertEqual(
        CaptureSink.lines(output(of: line, in: r, out, expecting: .failed)),
        ["error: feed text: " + message], line)
      XCTAssertEqual(r.session.context, context, line)
    }
  }
}

import XCTest

@testable import KVRepl

/// The bad-input table: each input, the exact one-line error it gives, and that the REPL
/// keeps running afterwards (no trap; the next command works).
final class BadInputTests: XCTestCase {
  /// Runs `line` in a fresh REPL; checks it fails with exactly `message`, then that the REPL
  /// still answers.
  func expect(_ line: String, _ message: String, setUp: ((Repl, String) -> Void)? = nil, file: StaticString = #filePath, lineNumber: UInt = #line) {
    let (repl, out) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    setUp?(repl, folder)
    let before = out.text.count
    XCTAssertEqual(repl.run(line: line), .failed, file: file, line: lineNumber)
    let printed = String(out.text.dropFirst(before))
    XCTAssertEqual(printed, message + "\n", file: file, line: lineNumber)
    XCTAssertEqual(repl.run(line: "echo alive"), .ok, file: file, line: lineNumber)
    XCTAssertTrue(out.text.hasSuffix("alive\n"), file: file, line: lineNumber)
  }

  func testUnknownCommandSuggests() { expect("lod x", "error: unknown command 'lod' (did you mean 'load'?)") }
  func testUnknownCommandWithoutNearWord() { expect("xyzzy", "error: unknown command 'xyzzy' (type 'help' for the list)") }
  func testUnknownSubcommand() { expect("record strat a.kvl", "error: record: unknown subcommand 'strat' (did you mean 'start'?)") }
  func testMissingSubcommand() { expect("record", "error: record: missing subcommand (expected start or stop)") }
  func testUnknownOption() { expect("mem rsss=on", "error: mem: unknown option 'rsss' (did you mean 'rss'?)") }
  func testUnknownFlag() { expect("replay a.kvl --chek", "error: replay: unknown option '--chek' (did you mean '--check'?)") }
  func testOptionOnCommandWithoutOptions() { expect("info x=1", "error: info: unknown option 'x' (info takes no options)") }
  func testBadToggle() { expect("mem rss=yes", "error: mem: rss must be on or off, got 'yes'") }
  func testBadInteger() { expect(#"ask "hi" max=abc"#, "error: ask: max must be a whole number in 1...65536, got 'abc'") }
  func testIntegerOutOfRange() { expect(#"ask "hi" max=0"#, "error: ask: max must be a whole number in 1...65536, got '0'") }
  func testNumberOutOfRange() { expect(#"ask "hi" temp=-1"#, "error: ask: temp must be a number in 0...10, got '-1'") }
  func testNotANumber() { expect(#"ask "hi" top-p=nan"#, "error: ask: top-p must be a number in 0...1, got 'nan'") }
  func testBadChoice() { expect("mem unit=mb", "error: mem: unit must be one of auto, B, KiB, MiB, GiB, got 'mb' (did you mean 'MiB'?)") }
  func testOptionTwice() { expect("mem rss=on rss=off", "error: mem: option 'rss' given twice") }
  func testFlagWithoutValue() { expect("ask --max", "error: ask: --max needs a value (max=N)") }
  func testTooManyArguments() { expect("tokenize hello world", #"error: tokenize: unexpected argument 'world' (put text with spaces in quotes: "...")"#) }
  func testArgumentToCommandWithoutArguments() { expect("info extra", "error: info: unexpected argument 'extra' (info takes no arguments)") }
  func testMissingArgument() { expect("tokenize", "error: tokenize: missing TEXT (usage: tokenize TEXT)") }
  func testMissingRequiredOption() { expect("logits", "error: logits: missing out=FILE.npy") }
  func testWrongExtension() { expect("logits out=x.txt", "error: logits: out must name a .npy file, got 'x.txt'") }
  func testUnterminatedQuote() { expect(#"feed text "abc"#, "error: feed: unterminated quote (opened at column 11)") }
  func testUnknownEscape() { expect(#"echo "a\qb""#, #"error: echo: unknown escape '\q' at column 8 (inside quotes use \" \\ \n \t)"#) }
  func testControlCharacter() { expect("echo a\u{7}b", "error: echo: control character U+0007 at column 7") }
  func testOverLongLine() {
    let line = "echo " + String(repeating: "x", count: 70000)
    expect(line, "error: line too long (70005 bytes; the limit is 65536)")
  }
  func testNoModel() { expect("tokenize hi", "error: tokenize: no model loaded (use 'load' first)") }
  func testModelFileMissing() { expect("load nope.gguf", "error: load: nope.gguf: no such file") }
  func testHelpOfUnknownCommand() { expect("help lod", "error: help: unknown command 'lod' (did you mean 'load'?)") }
  func testHelpOfUnknownSubcommand() { expect("help record strt", "error: help: 'record' has no subcommand 'strt' (did you mean 'start'?)") }
  func testReplayMissingFile() { expect("replay nope.kvl", "error: replay: nope.kvl: no such file") }
  func testReplayFolder() {
    expect("replay sub.kvl", "error: replay: sub.kvl: is a folder, not a script") { _, folder in
      try! FileManager.default.createDirectory(atPath: folder + "/sub.kvl", withIntermediateDirectories: true)
    }
  }
  func testReplayWrongExtension() { expect("replay notes.md", "error: replay: FILE must name a .kvl or .txt file, got 'notes.md'") }
  func testRecordRefusesToOverwrite() {
    expect("record start old.kvl", "error: record start: old.kvl already exists (use append=on to add to it)") { _, folder in
      _ = FileManager.default.createFile(atPath: folder + "/old.kvl", contents: Data("echo x\n".utf8))
    }
  }
  func testRecordIntoMissingFolder() { expect("record start no/such/s.kvl", "error: record start: no/such/s.kvl: no such file or directory") }
  func testRecordTwice() {
    expect("record start b.kvl", "error: record start: already recording to a.kvl (use 'record stop' first)") { repl, _ in
      XCTAssertEqual(repl.run(line: "record start a.kvl"), .ok)
    }
  }
  func testRecordStopWhenNotRecording() { expect("record stop", "error: record stop: not recording") }
  func testScriptOutputBeforeCommand() {
    expect("replay s.kvl", "error: replay: s.kvl:1: expected output (#>) before any command") { _, folder in
      _ = FileManager.default.createFile(atPath: folder + "/s.kvl", contents: Data("#> stray\necho x\n".utf8))
    }
  }
  func testScriptNotText() {
    expect("replay s.kvl", "error: replay: s.kvl: not UTF-8 text") { _, folder in
      _ = FileManager.default.createFile(atPath: folder + "/s.kvl", contents: Data([0x65, 0xFF, 0xFE, 0x0A]))
    }
  }
  func testScriptReplaysItself() {
    expect("replay loop.kvl", "error: loop.kvl:1: replay: loop.kvl: scripts nested more than 8 deep (does it replay itself?)") { _, folder in
      _ = FileManager.default.createFile(atPath: folder + "/loop.kvl", contents: Data("replay loop.kvl\n".utf8))
    }
  }
  func testScriptErrorNamesFileAndLine() {
    expect("replay s.kvl", "error: s.kvl:2: unknown command 'lod' (did you mean 'load'?)") { _, folder in
      _ = FileManager.default.createFile(atPath: folder + "/s.kvl", contents: Data("# test\nlod\necho never\n".utf8))
    }
  }
}

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
    let printed = output(
      of: line, in: repl, out, expecting: .failed, file: file, line: lineNumber)
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
  func testArgumentToCommandWithoutArguments() { expect("reset extra", "error: reset: unexpected argument 'extra' (reset takes no arguments)") }
  func testUnknownSubcommandOfANounWithAPlainForm() { expect("info extra", "error: info: unknown subcommand 'extra' (expected model or models)") }
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

  // The budgeted cache's commands (no model needed; with one, CacheCommandTests checks that
  // the cache is untouched by each).
  func testBudgetZero() { expect("budget 0", "error: budget: must be positive, got '0'") }
  func testBudgetNegative() { expect("budget -5 tokens", "error: budget: must be positive, got '-5 tokens'") }
  func testBudgetUnitSuggestsNearest() { expect("budget 16 mibs", "error: budget: unknown unit 'mibs' (did you mean 'MiB'?)") }
  func testBudgetUnknownUnit() { expect("budget 12 parsecs", "error: budget: unknown unit 'parsecs'; use tokens, B, KB, MB, GB, KiB, MiB or GiB") }
  func testBudgetGarbage() { expect("budget lots", "error: budget: 'lots' is not a budget; expected e.g. '1024 tokens' or '24MiB'") }
  func testBudgetFractionalTokens() { expect("budget 1.5 tokens", "error: budget: tokens must be a whole number, got '1.5 tokens'") }
  func testBudgetBelowPolicyMinimum() { expect("budget 16 tokens", "error: budget: budget of 16 tokens is below what snapkv window=32 kernel=5 needs (32)") }
  func testUnknownPolicySuggests() { expect("policy snapk", "error: policy: unknown policy 'snapk' (did you mean 'snapkv'?)") }
  func testUnknownPolicyLists() { expect("policy lru", "error: policy: unknown policy 'lru' (known: snapkv, keydiff, knorm, vnorm, random, streaming, h2o, infinipot, gridpool, floors, oracle)") }
  func testPolicyUnknownOptionSuggestsAndLists() { expect("policy snapkv windw=3", "error: policy snapkv: unknown option 'windw' (did you mean 'window'? options: window, kernel, pooling)") }
  func testPolicyUnknownOptionLists() { expect("policy h2o window=8", "error: policy h2o: unknown option 'window' (options: recent)") }
  func testPolicyWithoutOptions() { expect("policy keydiff x=1", "error: policy keydiff: unknown option 'x' (policy keydiff takes no options)") }
  func testPolicyEvenKernel() { expect("policy snapkv kernel=4", "error: policy snapkv: kernel must be odd, got 4") }
  func testPolicyWindowOutOfRange() { expect("policy snapkv window=0", "error: policy snapkv: window must be a whole number in 1...65536, got '0'") }
  func testPolicyFractionOutOfRange() { expect("policy infinipot alpha=2", "error: policy infinipot: alpha must be a number in 0...1, got '2'") }
  func testPrefillModeNeedsBudget() { expect("prefill mode=capped", "error: prefill: mode=capped needs a budget first (e.g. 'budget 1024 tokens')") }
  func testPrefillBlockZero() { expect("prefill block=0", "error: prefill: block must be a number of tokens (e.g. 256), tile, frame or Nframes (e.g. 4frames), got '0'") }
  func testQuotaTwoUnits() { expect("quota frame=2 tile=3", "error: quota: frame= and tile= given; the cache keeps one quota (frame=N, tile=N or image=N)") }
  func testQuotaOffAndUnit() { expect("quota off tile=3", "error: quota: give either off or tile=N, not both") }
  func testCacheWithoutModel() { expect("cache", "error: cache: no model loaded (use 'load' first)") }
}

import XCTest

@testable import KVRepl

final class CompleterTests: XCTestCase {
  var folder = ""
  var completer: Completer!

  override func setUp() {
    folder = temporaryFolder(self)
    let fm = FileManager.default
    try! fm.createDirectory(atPath: folder + "/scripts", withIntermediateDirectories: true)
    try! fm.createDirectory(atPath: folder + "/my dir", withIntermediateDirectories: true)
    for f in ["a.kvl", "b.txt", "c.npy", "scripts/one.kvl", ".hidden.kvl", "my dir/x.kvl"] {
      _ = fm.createFile(atPath: folder + "/" + f, contents: Data())
    }
    completer = Completer(table: CommandTable(Repl.standardCommands), directory: folder)
  }

  func complete(_ line: String) -> [String] { completer.complete(line).candidates }

  func testCommandNames() {
    XCTAssertEqual(complete("lo"), ["load", "logits"])
    XCTAssertEqual(complete("re"), ["record", "replay", "reset"])
    XCTAssertTrue(complete("").contains("tokenize"))
    XCTAssertEqual(complete("echo a; me"), ["mem"])
    XCTAssertEqual(completer.complete("lo").word, "lo")
  }

  func testSubcommands() {
    XCTAssertEqual(complete("record "), ["start", "stop"])
    XCTAssertEqual(complete("record sta"), ["start"])
    XCTAssertEqual(complete("feed "), ["frames", "image", "synthetic", "text"])
    XCTAssertEqual(complete("feed synthetic nee"), ["needle-image", "needle-video"])
    XCTAssertEqual(complete("synthetic "), ["ask", "vocab", "write"])
    // A noun with a plain form offers its verbs and its options.
    XCTAssertEqual(complete("mem "), ["plot", "reset", "rss=", "unit="])
  }

  func testOptionKeysAndValues() {
    XCTAssertEqual(complete("policy snapkv win"), ["window="])
    XCTAssertEqual(
      complete("prefill mode="), ["mode=capped", "mode=full", "mode=post", "mode=sequential"])
    XCTAssertEqual(complete("mem unit=M"), ["unit=MiB"])
    XCTAssertEqual(complete("mem rss="), ["rss=off", "rss=on"])
    XCTAssertEqual(complete("mem --r"), ["--rss"])
    XCTAssertEqual(complete(#"ask "Why?" ma"#), ["max="])
    XCTAssertEqual(complete("ask \"Why?\" max=8 m"), [])  // max is given already
    XCTAssertEqual(complete("replay a.kvl --"), ["--check", "--help", "--keep-going", "--update"])
    XCTAssertEqual(complete("notebook "), ["run"])
    XCTAssertEqual(complete("notebook run nb.ipynb --u"), ["--update"])
    XCTAssertEqual(complete("generate top"), ["top-k=", "top-p="])
  }

  /// Each policy is a form of `policy` with its own options, from the catalog; aliases select
  /// the same form but are not offered.
  func testPolicyNamesAndTheirOptions() {
    XCTAssertEqual(
      complete("policy "),
      ["floors", "gridpool", "h2o", "infinipot", "keydiff", "knorm", "oracle", "random", "snapkv", "streaming", "vnorm"])
    XCTAssertEqual(complete("policy s"), ["snapkv", "streaming"])
    XCTAssertEqual(complete("policy snapkv "), ["kernel=", "pooling=", "window="])
    XCTAssertEqual(complete("policy snapkv pooling="), ["pooling=avg", "pooling=max"])
    XCTAssertEqual(complete("policy snapkv window=8 "), ["kernel=", "pooling="])
    XCTAssertEqual(complete("policy h2o "), ["recent="])
    XCTAssertEqual(complete("policy infinipot "), ["alpha=", "fill=", "recent=", "window="])
    XCTAssertEqual(complete("policy keydiff "), [])
    XCTAssertEqual(complete("policy streamingllm s"), ["sinks="])
    XCTAssertEqual(complete("policy snapkv --"), ["--help"])
  }

  func testCacheCommands() {
    XCTAssertEqual(complete("cache "), ["export", "layer", "log", "map"])
    XCTAssertEqual(complete("cache log "), ["layer="])
    XCTAssertEqual(complete("quota "), ["frame=", "image=", "off", "tile="])
    XCTAssertEqual(complete("protect "), ["system=", "text="])
    XCTAssertEqual(complete("protect text="), ["text=off", "text=on"])
    XCTAssertEqual(complete("protect --"), ["--help", "--system", "--text"])
    XCTAssertEqual(
      complete("prefill "),
      ["block=", "bulk=", "evict_every=", "mode=", "proxy=", "run", "step", "stepping"])
    XCTAssertEqual(complete("bu"), ["budget"])
  }

  func testPaths() {
    XCTAssertEqual(
      complete("replay "),
      ["\"my dir/", "a.kvl", "b.txt", "check=", "keep-going=", "scripts/", "update="])
    XCTAssertEqual(complete("replay s"), ["scripts/"])
    XCTAssertEqual(complete("replay scripts/"), ["scripts/one.kvl"])
    XCTAssertEqual(complete("replay ."), [".hidden.kvl"])
    XCTAssertEqual(complete("replay \"my dir/"), ["\"my dir/x.kvl\""])
    XCTAssertEqual(complete("logits out="), ["out=\"my dir/", "out=c.npy", "out=scripts/"])
    XCTAssertEqual(complete("record start a"), ["a.kvl", "append="])
  }

  func testTextArgumentsOfferOnlyOptions() {
    XCTAssertEqual(complete(#"feed text "abc"#), [])
    XCTAssertEqual(complete("tokenize "), [])
  }

  func testHelpCompletesCommandsAndVerbs() {
    XCTAssertEqual(complete("help tok"), ["tokenize"])
    XCTAssertEqual(complete("help record "), ["start", "stop"])
  }
}

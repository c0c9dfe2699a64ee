import KVCache
import XCTest

@testable import KVRepl

final class CommandTableTests: XCTestCase {
  let table = CommandTable(Repl.standardCommands)

  func parse(_ line: String) throws -> (Command, Arguments) {
    guard case .run(let c, let a) = try table.parse(try Lexer.commands(line)[0]) else {
      throw ReplError(nil, "not a run")
    }
    return (c, a)
  }

  func testIssueCommandsExist() {
    for name in [
      "load", "feed text", "ask", "generate", "mem", "info", "help", "tokenize", "logits",
      "record start", "record stop", "replay", "notebook run", "quit", "budget", "policy",
      "policy snapkv",
      "policy h2o", "protect", "quota", "prefill", "cache", "cache layer", "cache log", "cache map",
    ] {
      let parts = name.split(separator: " ").map(String.init)
      XCTAssertNotNil(table.command(parts[0], parts.count > 1 ? parts[1] : nil), name)
    }
  }

  func testHelpForEveryCommand() throws {
    let (repl, out) = makeRepl()
    for c in table.commands {
      let lines = try table.help(noun: c.noun, verb: c.verb)
      XCTAssertEqual(lines.first, "usage: \(c.usage)", c.name)
      XCTAssertGreaterThan(lines.count, 1, c.name)
      for o in c.options { XCTAssertTrue(lines.contains { $0.contains(o.help) }, "\(c.name) \(o.name)") }
      // `help CMD` and `CMD --help` print the same, and neither runs the command.
      let a = CaptureSink()
      repl.pushSink(a)
      XCTAssertEqual(repl.run(line: "help \(c.name)"), .ok)
      repl.popSink()
      let b = CaptureSink()
      repl.pushSink(b)
      XCTAssertEqual(repl.run(line: "\(c.name) --help"), .ok)
      repl.popSink()
      XCTAssertEqual(a.text, b.text, c.name)
      XCTAssertEqual(a.lines, lines, c.name)
    }
    XCTAssertEqual(out.text, "")
    // Every command is in the overview.
    let overview = table.overview().joined(separator: "\n")
    for c in table.commands { XCTAssertTrue(overview.contains(c.summary), c.name) }
  }

  func testHelpOfNounListsItsForms() throws {
    let lines = try table.help(noun: "record", verb: nil)
    XCTAssertTrue(lines.contains("usage: record start FILE [--append]"))
    XCTAssertTrue(lines.contains("usage: record stop"))
  }

  func testArgumentsAndDefaults() throws {
    let (c, a) = try parse(#"ask "Why?" max=8 temp=0.5 --timing"#)
    XCTAssertEqual(c.name, "ask")
    XCTAssertEqual(a.positional("QUESTION"), "Why?")
    XCTAssertEqual(a.int("max"), 8)
    XCTAssertEqual(a.number("temp"), 0.5)
    XCTAssertTrue(a.toggle("timing"))
    XCTAssertEqual(a.int("top-k"), 0)
    XCTAssertEqual(a.number("top-p"), 1)
    XCTAssertTrue(a.isGiven("max"))
    XCTAssertFalse(a.isGiven("seed"))
  }

  func testVerbsAndPlainForms() throws {
    XCTAssertEqual(try parse("mem").0.name, "mem")
    XCTAssertEqual(try parse("mem reset").0.name, "mem reset")
    XCTAssertEqual(try parse("mem unit=mib").1.string("unit"), "MiB")
    XCTAssertEqual(try parse("mem rss=ON").1.string("rss"), "on")
    XCTAssertEqual(try parse(#"feed text "x" raw=on"#).1.toggle("raw"), true)
    XCTAssertEqual(try parse("record start a.kvl --append").1.toggle("append"), true)
    XCTAssertEqual(try parse("replay a.kvl --check --keep-going").1.toggle("keep-going"), true)
    // A quoted word is never a verb.
    XCTAssertThrowsError(try parse(#"feed "text" x"#))
  }

  /// `policy NAME`: one form per catalog policy, with the catalog's options, defaults and help;
  /// aliases select the same form.
  func testPolicyFormsComeFromTheCatalog() throws {
    XCTAssertEqual(table.verbs(of: "policy"), PolicyCatalog.names)
    for spec in PolicyCatalog.specs {
      let c = try XCTUnwrap(table.command("policy", spec.name))
      XCTAssertEqual(c.options.map(\.name), spec.options.map(\.name))
      XCTAssertEqual(c.options.map(\.defaultValue), spec.options.map(\.defaultValue))
      XCTAssertEqual(c.summary, spec.summary)
      for alias in spec.aliases { XCTAssertEqual(try parse("policy \(alias)").0.name, "policy \(spec.name)") }
    }
    XCTAssertEqual(try parse("policy snapkv window=8").1.int("window"), 8)
    XCTAssertEqual(try parse("policy snapkv").1.int("kernel"), 5)
    let help = try table.help(noun: "policy", verb: "vnorm")
    XCTAssertEqual(help.first, "usage: policy vnorm")
    XCTAssertTrue(help.contains("  Also written: policy van, policy valuenorm."), "\(help)")
    XCTAssertEqual(try table.help(noun: "policy", verb: "van"), help)
    XCTAssertThrowsError(try table.help(noun: "policy", verb: "snapk")) { e in
      XCTAssertEqual("\(e)", "help: unknown policy 'snapk' (did you mean 'snapkv'?)")
    }
    XCTAssertEqual(
      try table.help(noun: "policy", verb: "h2o"),
      [
        "usage: policy h2o [recent=N]",
        "  H2O: each entry accumulates the attention it receives from every query after",
        "  it enters; the heaviest are kept, plus the RECENT most recent entries (by",
        "  default half the budget).",
        "options:",
        "  recent=N              most recent entries always kept (default: half the budget) (0...65536)",
      ])
  }

  func testSuggestions() {
    XCTAssertEqual(Suggest.nearest("lod", in: table.nouns), "load")
    XCTAssertEqual(Suggest.nearest("laod", in: table.nouns), "load")
    XCTAssertEqual(Suggest.nearest("tokenise", in: table.nouns), "tokenize")
    XCTAssertEqual(Suggest.nearest("gen", in: table.nouns), "generate")
    XCTAssertEqual(Suggest.nearest("replya", in: table.nouns), "replay")
    XCTAssertNil(Suggest.nearest("xyzzy", in: table.nouns))
    XCTAssertEqual(Suggest.nearest("mb", in: ["auto", "B", "KiB", "MiB", "GiB"]), "MiB")
  }

  func testRegisteringACommand() {
    let (repl, out) = makeRepl()
    repl.register([
      Command(
        "widget", verb: "frob", summary: "s", help: "h",
        options: [CommandOptionFixture.window]
      ) { ctx in ctx.print("window \(ctx.args.int("window"))") }
    ])
    XCTAssertEqual(runLines(repl, "widget frob window=16"), .ok)
    XCTAssertEqual(out.lines, ["window 16"])
  }
}

enum CommandOptionFixture {
  static let window = Option("window", .int(1...1024), default: "32", help: "observation window")
}

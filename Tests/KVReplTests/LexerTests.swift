import XCTest

@testable import KVRepl

final class LexerTests: XCTestCase {
  func words(_ line: String) throws -> [String] {
    try Lexer.commands(line).flatMap { $0.map(\.text) }
  }

  func testWordsAndBlanks() throws {
    XCTAssertEqual(try words("  feed   text\thello  "), ["feed", "text", "hello"])
    XCTAssertEqual(try Lexer.commands("   "), [])
  }

  func testQuotesAndEscapes() throws {
    XCTAssertEqual(try words(#"feed text "a b; c = d # e""#), ["feed", "text", "a b; c = d # e"])
    XCTAssertEqual(try words(#"echo "say \"hi\" \\ done""#), ["echo", #"say "hi" \ done"#])
    XCTAssertEqual(try words(#"echo "a\nb\tc""#), ["echo", "a\nb\tc"])
    // A comment from an unquoted `#` that starts a word; inside a word or quotes it is text.
    XCTAssertEqual(try words(#"cache map   # retention; heatmap"#), ["cache", "map"])
    XCTAssertEqual(try words(##"echo a#b "#c" #d"##), ["echo", "a#b", "#c"])
    XCTAssertEqual(try Lexer.commands("protect text=on; quota frame=4  # on top; of it").count, 2)
    XCTAssertEqual(try words(#"echo """#), ["echo", ""])
    // Quotes may join parts of one word; backslashes outside quotes are literal.
    XCTAssertEqual(try words(#"echo ab"c d"e C:\x"#), ["echo", "abc de", #"C:\x"#])
    let t = try Lexer.commands(#"echo "x""#)[0][1]
    XCTAssertTrue(t.quoted)
    XCTAssertEqual(t.column, 6)
  }

  func testSemicolonsSplitCommands() throws {
    let cmds = try Lexer.commands(#"load; feed text "a;b";; logits out=x.npy;"#)
    XCTAssertEqual(cmds.map { $0.map(\.text) }, [["load"], ["feed", "text", "a;b"], ["logits", "out=x.npy"]])
  }

  func testOptionsAndFlags() throws {
    let t = try Lexer.commands(#"ask "q" max=8 top-k=40 out="a b.npy" --timing --max=3 "k=v" k"=v" --"x""#)[0]
    XCTAssertNil(t[1].key)
    XCTAssertEqual(t[2].key, "max")
    XCTAssertEqual(t[2].value, "8")
    XCTAssertFalse(t[2].isFlag)
    XCTAssertEqual(t[3].key, "top-k")
    XCTAssertEqual(t[4].key, "out")
    XCTAssertEqual(t[4].value, "a b.npy")
    XCTAssertEqual(t[5].key, "timing")
    XCTAssertNil(t[5].value)
    XCTAssertTrue(t[5].isFlag)
    XCTAssertEqual(t[6].key, "max")
    XCTAssertEqual(t[6].value, "3")
    XCTAssertTrue(t[6].isFlag)
    // A quoted key is not an option: "k=v", k"=v", --"x" are plain words.
    XCTAssertNil(t[7].key)
    XCTAssertNil(t[8].key)
    XCTAssertEqual(t[8].text, "k=v")
    XCTAssertNil(t[9].key)
    XCTAssertEqual(t[9].text, "--x")
    // Not an identifier before '=': a plain word.
    XCTAssertNil(try Lexer.commands("echo =x 1=2")[0][1].key)
    XCTAssertNil(try Lexer.commands("echo =x 1=2")[0][2].key)
  }

  func testUnterminatedQuote() {
    XCTAssertThrowsError(try Lexer.commands(#"feed text "abc"#)) { e in
      XCTAssertEqual(e as? LexError, LexError(message: "unterminated quote (opened at column 11)", column: 11, command: "feed"))
    }
  }

  func testBadEscape() {
    XCTAssertThrowsError(try Lexer.commands(#"echo "a\qb""#)) { e in
      XCTAssertEqual((e as? LexError)?.message, #"unknown escape '\q' at column 8 (inside quotes use \" \\ \n \t)"#)
    }
  }

  func testControlCharacter() {
    XCTAssertThrowsError(try Lexer.commands("echo a\u{7}b")) { e in
      XCTAssertEqual((e as? LexError)?.message, "control character U+0007 at column 7")
    }
  }

  func testPartialForCompletion() {
    let p = Lexer.partial(#"feed text "abc"#)
    XCTAssertEqual(p.words.map(\.text), ["feed", "text", "abc"])
    XCTAssertTrue(p.words[2].unterminated)
    XCTAssertFalse(p.endsInSpace)
    XCTAssertTrue(Lexer.partial("load; mem ").endsInSpace)
    XCTAssertEqual(Lexer.partial("load; mem ").words.map(\.text), ["mem"])
  }

  func testQuoteRoundTrip() throws {
    for s in ["plain", "two words", #"q"uote"#, #"back\slash"#, "a;b", "k=v", "", "line\nbreak"] {
      XCTAssertEqual(try words("echo " + Repl.quote(s)), ["echo", s], s)
    }
  }

  func testCommandLinesKeepQuotedSemicolons() {
    XCTAssertEqual(Lexer.commandLines(#"echo "a; b" ;echo c;;  load x.gguf ; "#), [#"echo "a; b""#, "echo c", "load x.gguf"])
    XCTAssertEqual(Lexer.commandLines("echo one"), ["echo one"])
    XCTAssertEqual(Lexer.commandLines(#"echo "open; x"#), [#"echo "open; x"#])  // reported by run
  }
}

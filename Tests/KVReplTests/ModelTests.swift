import Foundation
import XCTest

@testable import KVRepl

/// Commands on the real SmolLM2 model (skipped when models/ does not hold it).
final class ModelTests: XCTestCase {
  var folder = ""

  override func setUpWithError() throws {
    try XCTSkipIf(defaultModelPath == nil, "no models/SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/setup.sh)")
    folder = temporaryFolder(self)
  }

  func repl() -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    r.workingDirectory = folder
    return (r, out)
  }

  func testSessionRecordsAndReplaysExactly() throws {
    let (r, out) = repl()
    for line in [
      "record start chat.kvl",
      "load",
      #"tokenize "Hello, world!""#,
      #"feed text "The sky is blue.""#,
      #"ask "What color is the sky?" max=6"#,
      "logits out=l.npy",
      "mem",
      "info",
      "record stop",
    ] {
      XCTAssertEqual(r.run(line: line), .ok, "\(line)\n\(out.text)")
    }
    XCTAssertTrue(out.text.contains("\n19556 28 905 17\n"), out.text)
    let script = readFile(folder + "/chat.kvl")
    XCTAssertTrue(script.contains("logits out=l.npy\n#> wrote l.npy: "), script)
    // The .npy holds float32 (rows × 49152), rows = the context when it was written.
    let npy = try Data(contentsOf: URL(fileURLWithPath: folder + "/l.npy"))
    XCTAssertEqual(Array(npy.prefix(6)), [0x93] + Array("NUMPY".utf8))
    let header = String(decoding: npy.dropFirst(10).prefix(118), as: UTF8.self)
    XCTAssertTrue(header.contains("'descr': '<f4'"), header)
    XCTAssertTrue(header.contains(", 49152)"), header)
    // A fresh session replays it with identical output.
    let (r2, out2) = repl()
    XCTAssertEqual(r2.run(line: "replay chat.kvl --check"), .ok, out2.text)
  }

  func testCancellingGeneration() throws {
    let (r, out) = repl()
    XCTAssertEqual(r.run(line: "load"), .ok)
    let flag = r.session.cancellation
    // Soon enough that the story cannot have ended (tens of tokens at most).
    DispatchQueue.global().asyncAfter(deadline: .now() + 0.25) { flag.set() }
    XCTAssertEqual(r.run(line: #"ask "Tell me a long story." max=4000"#), .cancelled)
    XCTAssertTrue(out.text.contains("^C cancelled: generation stopped after "), out.text)
    // The session is still usable.
    XCTAssertEqual(r.run(line: #"tokenize "ok""#), .ok)
  }
}

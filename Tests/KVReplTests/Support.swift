import Foundation
import KVEngine
import XCTest

@testable import KVRepl

/// The repository's root (for the models folder).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  .deletingLastPathComponent().deletingLastPathComponent().path

/// A REPL writing into a capture, with the repository's models folder.
func makeRepl(keepGoing: Bool = false) -> (Repl, CaptureSink) {
  let capture = CaptureSink()
  // Bare `load` in these tests means the text model (the embedded VLM has its own tests).
  let session = Session(
    options: EngineOptions(
      threads: 2, modelDirectories: [repositoryRoot + "/models"],
      defaultModel: EngineOptions.textModelFile))
  let repl = Repl(session: session, output: capture)
  repl.keepGoing = keepGoing
  return (repl, capture)
}

/// A REPL whose bare `load` loads the embedded model (weights/kvlab-shapes), working in a fresh
/// folder of `test`'s; with `load`, the model is loaded first (and must load).
func makeEmbeddedRepl(_ test: XCTestCase, load: Bool = false) -> (Repl, CaptureSink) {
  let capture = CaptureSink()
  let session = Session(
    options: EngineOptions(threads: 2, modelDirectories: [repositoryRoot + "/weights"]))
  let repl = Repl(session: session, output: capture)
  repl.workingDirectory = temporaryFolder(test)
  if load { XCTAssertEqual(repl.run(line: "load"), .ok, capture.text) }
  return (repl, capture)
}

/// Runs lines and returns the result of the last and everything printed.
@discardableResult
func runLines(_ repl: Repl, _ lines: String...) -> CommandResult {
  var last = CommandResult.ok
  for l in lines { last = repl.run(line: l) }
  return last
}

/// Runs `line`, expects `result` (else fails with the line and what it printed) and returns
/// what it printed.
@discardableResult
func output(
  of line: String, in repl: Repl, _ out: CaptureSink, expecting result: CommandResult = .ok,
  file: StaticString = #filePath, line at: UInt = #line
) -> String {
  let before = out.text.count
  let got = repl.run(line: line)
  let printed = String(out.text.dropFirst(before))
  XCTAssertEqual(got, result, "\(line)\n\(printed)", file: file, line: at)
  return printed
}

/// The kvlab executable built next to the test bundle (tests that run it skip without it).
let builtKvlab = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
  .appendingPathComponent("kvlab").path

/// A fresh empty folder, removed at the end of the test.
func temporaryFolder(_ test: XCTestCase) -> String {
  let path = FileManager.default.temporaryDirectory
    .appendingPathComponent("kvrepl-\(UUID().uuidString)").path
  try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
  return path
}

func readFile(_ path: String) -> String {
  (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<missing \(path)>"
}

/// The text model, if set up (scripts/setup.sh); model tests skip without it.
var defaultModelPath: String? {
  let p = repositoryRoot + "/models/" + EngineOptions.textModelFile
  return FileManager.default.fileExists(atPath: p) ? p : nil
}

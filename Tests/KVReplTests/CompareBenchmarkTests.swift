import Foundation
import KVEngine
import XCTest

@testable import KVRepl

/// `compare seeds=… tasks=…` on the embedded model (weights/kvlab-shapes): its accuracy per
/// setting is what running each sample alone (`feed synthetic`, `synthetic ask`) under each
/// setting gives, out=FILE.csv / FILE.json hold every sample's reply, and bad input is one line
/// with the session unchanged.
final class CompareBenchmarkTests: XCTestCase {
  static let seeds = 0...3
  static let tasks = ["count", "attribute"]
  /// The settings as the REPL sets them one by one, by the labels compare gives them.
  static let settings: [(mode: String, budget: String, policy: String, lines: [String])] = [
    ("full", "-", "-", []),
    ("capped", "8", "keydiff", ["policy keydiff", "budget 8 tokens", "prefill mode=capped"]),
    ("capped", "50%", "keydiff", ["policy keydiff", "budget 50%", "prefill mode=capped"]),
    ("capped", "8", "knorm", ["policy knorm", "budget 8 tokens", "prefill mode=capped"]),
    ("capped", "50%", "knorm", ["policy knorm", "budget 50%", "prefill mode=capped"]),
  ]
  static let command =
    "compare seeds=0-3 tasks=count,attribute budgets=8,50% policies=keydiff,knorm modes=capped"

  /// Whether the sample is answered right under a setting run alone, as `synthetic ask` says.
  func aloneCorrect(_ task: String, _ seed: Int, _ lines: [String]) -> Bool {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    for line in lines + ["feed synthetic \(task) seed=\(seed)", "synthetic ask max=4"] {
      XCTAssertEqual(repl.run(line: line), .ok, line + "\n" + out.text)
    }
    let verdict = out.lines.last!
    XCTAssertTrue(verdict.hasPrefix("expected: "), verdict)
    return verdict.hasSuffix("(correct)")
  }

  func testAccuracyIsEachSampleRunAloneAndTheFilesHoldEveryReply() throws {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    let dir = repl.workingDirectory ?? ""
    // After a synthetic feed, with no ask: the session's own input stays as it was.
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=9"), .ok, out.text)
    let context = repl.session.context
    let settings = repl.session.cacheSettings.description
    var expected: [String: Int] = [:]  // "task mode budget policy" → correct
    for task in Self.tasks {
      for s in Self.settings {
        let right = Self.seeds.filter { aloneCorrect(task, $0, s.lines) }.count
        expected["\(task) \(s.mode) \(s.budget) \(s.policy)"] = right
      }
    }
    for format in ["csv", "json"] {
      let shown = CaptureSink.lines(output(of: Self.command + " out=acc.\(format)", in: repl, out))
      XCTAssertEqual(shown[0], "8 samples (count, attribute; seeds 0-3), each in a fresh cache:")
      // Rows: per task (count, attribute) then all, each full + 4 settings.
      let rows = shown[2...].prefix(15).map { $0.split(separator: " ").map(String.init) }
      XCTAssertEqual(rows.count, 15, shown.joined(separator: "\n"))
      if format == "json" { break }  // its contents are checked against the CSV's below
      for row in rows {
        let key = row[0..<4].joined(separator: " ")
        let right: Int
        if row[0] == "all" {
          right = Self.tasks.map { expected["\($0) \(row[1...3].joined(separator: " "))"]! }
            .reduce(0, +)
          XCTAssertEqual(row[4], "\(right)/8", key)
        } else {
          right = try XCTUnwrap(expected[key], key)
          XCTAssertEqual(row[4], "\(right)/4", key)
        }
        XCTAssertEqual(row[5], String(format: "%.1f%%", 100 * Double(right) / Double(row[0] == "all" ? 8 : 4)))
      }
      // The full cache answers some of them: the numbers are not all zero.
      XCTAssertTrue(expected.values.contains { $0 > 0 }, "\(expected)")
      // The CSV: a header and 8 samples × 5 settings, each the same verdict as alone.
      let csv = readFile(dir + "/acc.csv").components(separatedBy: "\r\n").filter { !$0.isEmpty }
      XCTAssertEqual(
        csv[0],
        "task,seed,question_kind,mode,budget,policy,expected,replied,correct,kv_peak_bytes,error")
      XCTAssertEqual(csv.count, 1 + 8 * 5)
      var counted: [String: Int] = [:]
      for line in csv.dropFirst() {
        let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(f.count, 11, line)
        XCTAssertEqual(f[8] == "true", f[6] == f[7], line)
        XCTAssertEqual(f[10], "", line)
        counted["\(f[0]) \(f[3]) \(f[4]) \(f[5])", default: 0] += f[8] == "true" ? 1 : 0
      }
      for (key, right) in expected { XCTAssertEqual(counted[key] ?? 0, right, key) }
    }
    // The JSON: the same records, as a list of objects.
    let json = try KVRepl.JSONReader.parse(Array(readFile(dir + "/acc.json").utf8))
    guard case .array(let records) = json else { return XCTFail("not a list: \(json)") }
    XCTAssertEqual(records.count, 8 * 5)
    let csv = readFile(dir + "/acc.csv").components(separatedBy: "\r\n").filter { !$0.isEmpty }
    for (record, line) in zip(records, csv.dropFirst()) {
      let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
      XCTAssertEqual(record["task"]?.string, f[0])
      XCTAssertEqual(record["seed"], .number(f[1]))
      XCTAssertEqual(record["replied"]?.string, f[7])
      XCTAssertEqual(record["correct"], .bool(f[8] == "true"))
    }
    XCTAssertEqual(repl.session.context, context)
    XCTAssertEqual(repl.session.cacheSettings.description, settings)
  }

  /// Plain compare after `feed synthetic` asks its question (no `synthetic ask` needed) and
  /// marks each answer against the expected one.
  func testCompareAfterFeedSyntheticAsksItsQuestion() throws {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    XCTAssertEqual(repl.run(line: "feed synthetic attribute seed=2"), .ok, out.text)
    let shown = CaptureSink.lines(
      output(of: "compare budgets=8 policies=keydiff max=4", in: repl, out))
    XCTAssertEqual(
      shown[0].split(separator: " ").map(String.init),
      ["mode", "budget", "policy", "answer", "=full", "correct", "kv", "peak", "rss", "peak",
        "prefill"])
    let full = shown[1].split(separator: " ").map(String.init)
    let alone = aloneCorrect("attribute", 2, [])
    XCTAssertEqual(full[5], alone ? "yes" : "no", shown.joined(separator: "\n"))
    XCTAssertTrue(shown.last!.hasPrefix("expected  "), shown.last!)
  }

  func testBadInputIsOneLineAndTheSessionIsUnchanged() throws {
    let (repl, out) = makeEmbeddedRepl(self, load: true)
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=1"), .ok, out.text)
    let context = repl.session.context
    let settings = repl.session.cacheSettings.description
    let dir = repl.workingDirectory ?? ""
    let cases: [(String, String)] = [
      ("compare seeds=3-1 budgets=8", "error: compare: seeds: '3-1' is not a seed or a range of seeds (e.g. 0-7 or 0,3,5)"),
      ("compare seeds=x budgets=8", "error: compare: seeds: 'x' is not a seed or a range of seeds (e.g. 0-7 or 0,3,5)"),
      ("compare tasks=count,cats seeds=0 budgets=8", "error: compare: tasks: unknown task 'cats' (known: needle-image, needle-video, count, attribute)"),
      ("compare seeds=0 budgets=8 out=no/such/acc.csv", "error: compare: no/such/acc.csv: no such folder"),
      ("compare seeds=0 budgets=8 out=acc.txt", nil),
      ("compare seeds=0 budgets=8 question=\"what?\"", "error: compare: question= asks over the current inputs; the benchmark asks each sample's own"),
      ("compare seeds=0-5000 budgets=8", "error: compare: seeds: '0-5000' is more than 1000 seeds"),
    ].map { ($0.0, $0.1 ?? "") }
    for (line, message) in cases {
      let shown = CaptureSink.lines(output(of: line, in: repl, out, expecting: .failed))
      XCTAssertEqual(shown.count, 1, "\(line): \(shown)")
      if !message.isEmpty { XCTAssertEqual(shown.first, message, line) }
      XCTAssertTrue(shown.first!.hasPrefix("error: compare: "), shown.first!)
    }
    // Unwritable: a folder that refuses writes (as root, a path under a file).
    FileManager.default.createFile(atPath: dir + "/plain", contents: Data())
    let shown = CaptureSink.lines(
      output(of: "compare seeds=0 budgets=8 out=plain/acc.csv", in: repl, out, expecting: .failed))
    XCTAssertEqual(shown, ["error: compare: plain/acc.csv: no such folder"])
    XCTAssertEqual(repl.session.context, context)
    XCTAssertEqual(repl.session.cacheSettings.description, settings)
    XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/acc.csv"))
  }
}

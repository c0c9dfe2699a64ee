import Foundation
import KVEngine
import KVTasks
import XCTest

@testable import KVModels
@testable import KVRepl

/// `feed synthetic`, `synthetic ask`, `synthetic write`, `synthetic vocab` on the tiny Idefics3
/// fixture (its tiles are 32 px of 2×2 = 4 tokens, and its processor first resizes images to a
/// longest edge of 96 px).
final class SyntheticTests: XCTestCase {
  static let idefics3 = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm/idefics3/model"

  func loaded() -> (Repl, CaptureSink) {
    let (repl, out) = makeRepl()
    repl.workingDirectory = temporaryFolder(self)
    XCTAssertEqual(repl.run(line: "load \(Self.idefics3)"), .ok, out.text)
    return (repl, out)
  }

  func testFeedNeedleImageAndAsk() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic needle-image seed=7"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleImage, seed: 7)
    // 512 px is resized to the fixture's 96 px: 3×3 tiles + the global image.
    XCTAssertEqual(
      Array(out.lines.suffix(3)),
      [
        "fed needle-image seed=7 (512×512): 10 tiles, 40 visual + \(repl.session.context.count - 40) text tokens (context \(repl.session.context.count))",
        "question: \(sample.question)",
        "expected: \(sample.answer)",
      ])
    XCTAssertEqual(repl.run(line: "synthetic ask max=3"), .ok, out.text)
    let last = out.lines.last!
    XCTAssertTrue(last.hasPrefix("expected: \(sample.answer), replied: "), last)
    XCTAssertTrue(last.hasSuffix(" (wrong)") || last.hasSuffix(" (correct)"), last)
  }

  /// The reply and the expected answer are separate fields: an empty reply is shown as such,
  /// never as the expected answer, and the verdict compares the reply's first word.
  func testVerdictKeepsTheReplyAndTheExpectedAnswerApart() {
    XCTAssertEqual(
      SyntheticCommands.verdict(reply: "", expected: "red"),
      ["(nothing generated)", "expected: red, replied: (nothing) (wrong)"])
    XCTAssertEqual(
      SyntheticCommands.verdict(reply: " \n", expected: "red"),
      ["(nothing generated)", "expected: red, replied: (nothing) (wrong)"])
    XCTAssertEqual(
      SyntheticCommands.verdict(reply: "Red.", expected: "red"),
      ["expected: red, replied: red (correct)"])
    XCTAssertEqual(
      SyntheticCommands.verdict(reply: "blue square", expected: "red"),
      ["expected: red, replied: blue (wrong)"])
  }

  /// The default needle image is over 1,000 visual tokens where tiles are small enough. With
  /// the embedded model's processor (longest edge 512, 64-px tiles of 16 tokens) it is 8×8
  /// tiles + the global image = 1,040 tokens; with the fixture's resize raised to 512 px it is
  /// 16×16 + 1 tiles of 32 px × 4 = 1,028, though its decoder (1,024 positions) cannot hold
  /// that with the tiles' marker text (1,536 tokens), so the feed end to end runs at size=256:
  /// 8×8 + 1 tiles.
  /// Count and attribute samples are one tile by design: fed unsplit (as the embedded model is
  /// trained), not upscaled and tiled like a large image.
  func testSingleTileTasksAreFedUnsplit() throws {
    for task in ["count", "attribute"] {
      let (repl, out) = loaded()
      XCTAssertEqual(repl.run(line: "feed synthetic \(task) seed=3"), .ok, out.text)
      let fed = try XCTUnwrap(out.lines.first { $0.hasPrefix("fed \(task)") })
      XCTAssertTrue(fed.contains(": 1 tile, 4 visual + "), fed)
    }
  }

  func testNeedleImageVisualTokens() throws {
    let (repl, out) = loaded()
    let idefics = try XCTUnwrap(repl.session.vision as? Idefics3Model)
    var designed = idefics.splitter
    designed.longestEdge = 512
    designed.tileSize = 64
    let plan = try designed.plan(height: 512, width: 512)
    XCTAssertEqual((plan.rows * plan.cols + 1) * 16, 1040)
    idefics.splitter.longestEdge = 512
    let fixture = try idefics.splitter.plan(height: 512, width: 512)
    XCTAssertEqual((fixture.rows * fixture.cols + 1) * 4, 1028)
    // Idefics3 resizes to the longest edge even upwards, so a 256-px image needs 256 here.
    idefics.splitter.longestEdge = 256
    XCTAssertEqual(
      repl.run(line: "feed synthetic needle-image seed=1 size=256 question=region"), .ok, out.text)
    XCTAssertTrue(
      out.lines.contains {
        $0.hasPrefix("fed needle-image seed=1 (256×256): 65 tiles, 260 visual + ")
      }, out.text)
  }

  func testFeedClip() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(
      repl.run(line: "feed synthetic needle-video seed=3 question=time"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleVideo, seed: 3, question: .time)
    XCTAssertTrue(
      out.lines.contains {
        $0.hasPrefix("fed needle-video seed=3 (32 frames of 64×64): 32 tiles, 128 visual + ")
      },
      out.text)
    XCTAssertEqual(
      out.lines.suffix(2), ["question: \(sample.question)", "expected: \(sample.answer)"])
    XCTAssertTrue(["beginning", "middle", "end"].contains(sample.answer))
  }

  /// `feed` and `show tokens` count the same way in the same words: visual tokens are the
  /// units' grids, everything else (markers, prompts) is text; the context line adds up the
  /// feeds' lines.
  func testFeedAndShowTokensAgree() throws {
    let (repl, out) = loaded()
    var visual = 0
    var text = 0
    for line in [
      #"feed text "count the shapes""#, "feed synthetic needle-image seed=7",
      "feed synthetic needle-video seed=3 frames=12",
    ] {
      XCTAssertEqual(repl.run(line: line), .ok, out.text)
      let fed = try XCTUnwrap(out.lines.last { $0.hasPrefix("fed ") })
      if let m = fed.firstMatch(of: #/(\d+) visual \+ (\d+) text tokens/#) {
        visual += Int(m.1)!
        text += Int(m.2)!
      } else {
        text += Int(try XCTUnwrap(fed.firstMatch(of: #/^fed (\d+) tokens/#)).1)!
      }
    }
    XCTAssertEqual(visual + text, repl.session.context.count)
    XCTAssertEqual(repl.run(line: "show tokens"), .ok, out.text)
    XCTAssertEqual(
      out.lines.last,
      "context: \(repl.session.context.count) tokens (\(visual) visual + \(text) text)")
    XCTAssertEqual(visual, repl.session.visualTokensFed)
  }

  func testWriteDataset() throws {
    let (repl, out) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    XCTAssertEqual(
      repl.run(line: "synthetic write clips needle-video count=2 seed=5 frames=12"), .ok, out.text)
    XCTAssertEqual(
      out.lines.last, "wrote 2 needle-video samples (24 PNG files) and clips/samples.jsonl")
    XCTAssertEqual(repl.run(line: "synthetic write d count count=3 seed=9"), .ok, out.text)
    let lines = readFile(folder + "/d/samples.jsonl").split(separator: "\n").map(String.init)
    XCTAssertEqual(lines.count, 3)
    for (i, line) in lines.enumerated() {
      let json = try JSONReader.parse(Array(line.utf8))
      let sample = try SyntheticGenerator.generate(.count, seed: UInt64(9 + i))
      XCTAssertEqual(line, sample.jsonLine)
      XCTAssertEqual(json["task"], KVRepl.JSONValue.string("count"))
      XCTAssertEqual(json["answer"], KVRepl.JSONValue.string(sample.answer))
      XCTAssertEqual(json["images"], KVRepl.JSONValue.array([.string("count-\(9 + i).png")]))
      guard case .array(let shapes)? = json["shapes"] else { return XCTFail("no shapes: \(line)") }
      XCTAssertEqual(shapes.count, sample.shapes.count)
      XCTAssertEqual(shapes.last?["x"], KVRepl.JSONValue.number(String(sample.shapes.last!.x)))
      // The PNG holds the generated pixels exactly.
      let image = try ImageDecoder.decode(path: folder + "/d/count-\(9 + i).png")
      XCTAssertEqual(image, sample.images[0])
    }
    let clip = readFile(folder + "/clips/samples.jsonl").split(separator: "\n")
    XCTAssertEqual(clip.count, 2)
    XCTAssertTrue(clip[0].contains(#""images":["needle-video-5/frame-000.png","#), String(clip[0]))
    XCTAssertTrue(
      FileManager.default.fileExists(atPath: folder + "/clips/needle-video-6/frame-011.png"))

    // An existing dataset is refused, and left as it was; force=on replaces it.
    let before = readFile(folder + "/d/samples.jsonl")
    XCTAssertEqual(repl.run(line: "synthetic write d attribute count=1"), .failed)
    XCTAssertEqual(
      out.lines.last,
      "error: synthetic write: d already holds a dataset (samples.jsonl); force=on overwrites it")
    XCTAssertEqual(readFile(folder + "/d/samples.jsonl"), before)
    XCTAssertEqual(repl.run(line: "synthetic write d attribute count=1 force=on"), .ok, out.text)
    XCTAssertEqual(readFile(folder + "/d/samples.jsonl").split(separator: "\n").count, 1)
  }

  func testVocab() throws {
    let (repl, out) = makeRepl()
    XCTAssertEqual(repl.run(line: "synthetic vocab"), .ok)
    XCTAssertEqual(out.lines.last, SyntheticVocabulary.allWords.joined(separator: " "))
    XCTAssertEqual(repl.run(line: "synthetic vocab what=answers"), .ok)
    XCTAssertEqual(
      out.lines.last,
      "beginning blue bottom-left bottom-right circle cross diamond end five four green middle one orange purple red square three top-left top-right triangle two yellow"
    )
    XCTAssertEqual(repl.run(line: "synthetic vocab what=templates"), .ok)
    XCTAssertEqual(out.lines.suffix(9).first, "needle-image color what color is the {shape}?")
  }

  /// Bad input: one line each, and the session keeps its context.
  func testBadInput() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=2"), .ok, out.text)
    let context = repl.session.context
    let cases: [(String, String)] = [
      (
        "feed synthetic needle-imag",
        "error: feed synthetic: TASK must be one of needle-image, needle-video, count, attribute, got 'needle-imag' (did you mean 'needle-image'?)"
      ),
      (
        "feed synthetic count size=70",
        "error: feed synthetic: size 70 for count: must be a multiple of 16 from 64 to 1024"
      ),
      (
        "feed synthetic needle-image size=100",
        "error: feed synthetic: size 100 for needle-image: must be a multiple of 64 from 128 to 2048"
      ),
      (
        "feed synthetic needle-video frames=4",
        "error: feed synthetic: frames 4: must be from 12 to 4096"
      ),
      (
        "feed synthetic attribute question=time",
        "error: feed synthetic: attribute asks no time question (it asks: color, shape)"
      ),
      (
        "synthetic write x count count=0",
        "error: synthetic write: count must be a whole number in 1...1000000, got '0'"
      ),
      ("synthetic write x count", "error: synthetic write: missing count=N"),
    ]
    for (line, message) in cases {
      let printed = output(of: line, in: repl, out, expecting: .failed)
      XCTAssertEqual(printed, message + "\n", line)
      XCTAssertEqual(repl.session.context, context, line)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: repl.workingDirectory! + "/x"))
    let (fresh, freshOut) = makeRepl()
    XCTAssertEqual(fresh.run(line: "synthetic ask"), .failed)
    XCTAssertEqual(
      freshOut.lines.last,
      "error: synthetic ask: no synthetic sample fed yet (feed synthetic TASK seed=N)")
  }
}

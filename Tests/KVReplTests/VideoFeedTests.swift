import Foundation
import KVEngine
@testable import KVModels
import KVTasks
import XCTest

@testable import KVRepl

/// `feed frames VIDEO` on the embedded model (weights/kvlab-shapes) with clips that ffmpeg
/// encodes here from the synthetic needle video's frames (the tests skip only when ffmpeg is
/// not installed; scripts/setup.sh installs it).
final class VideoFeedTests: XCTestCase {
  var ffmpeg: String!

  override func setUpWithError() throws {
    guard let found = Frames.findFFmpeg(), Frames.findTool("ffprobe") != nil else {
      throw XCTSkip("ffmpeg is not installed (scripts/setup.sh installs it)")
    }
    ffmpeg = found
  }

  func embedded() -> (Repl, CaptureSink) { makeEmbeddedRepl(self, load: true) }

  /// The frames of needle-video `seed` as PNGs in `folder`/frames, and clips of them at 1 fps:
  /// FFV1 (lossless RGB) and H.264 (lossy 4:2:0, as cameras and the web encode).
  func clips(seed: UInt64, in folder: String) throws -> (frames: String, ffv1: String, h264: String)
  {
    let sample = try SyntheticGenerator.generate(.needleVideo, seed: seed)
    let frames = folder + "/frames-\(seed)"
    try FileManager.default.createDirectory(atPath: frames, withIntermediateDirectories: true)
    for (i, image) in sample.images.enumerated() {
      try PNGEncoder.encode(image).write(
        to: URL(fileURLWithPath: frames + String(format: "/frame%03d.png", i + 1)))
    }
    let ffv1 = folder + "/needle-\(seed).mkv"
    let h264 = folder + "/needle-\(seed).mp4"
    for (out, codec) in [
      (ffv1, ["-c:v", "ffv1", "-pix_fmt", "bgr0"]),
      (h264, ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"]),
    ] {
      let run = try Subprocess.capture(
        ffmpeg,
        ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-framerate", "1", "-i",
         frames + "/frame%03d.png"] + codec + [out], name: out)
      XCTAssertEqual(run.status, 0, run.errorLines.joined(separator: "\n"))
    }
    return (frames, ffv1, h264)
  }

  func logits(_ session: Session, _ path: String) throws -> Data {
    _ = try session.writeLogits(to: path)
    return try Data(contentsOf: URL(fileURLWithPath: path))
  }

  /// The lossless clip gives the frame folder's pixels, so the same tokens, origins and
  /// logits, and the same answer; the clip's frames are read again for the logits dump.
  func testLosslessClipMatchesTheFrameFolder() throws {
    let (a, outA) = embedded()
    let (b, outB) = embedded()
    let dir = a.workingDirectory!
    let (frames, ffv1, _) = try clips(seed: 3, in: dir)
    XCTAssertEqual(a.run(line: "feed frames \(frames)"), .ok, outA.text)
    XCTAssertEqual(b.run(line: "feed frames \(ffv1) times=off"), .ok, outB.text)
    XCTAssertEqual(
      outB.lines.last,
      "fed 32 frames of \(ffv1): 32 tiles, 512 visual + \(b.session.context.count - 512) text tokens (context \(b.session.context.count))"
    )
    XCTAssertEqual(a.session.context, b.session.context)
    XCTAssertEqual(a.session.contextOrigins, b.session.contextOrigins)
    XCTAssertEqual(try logits(a.session, dir + "/a.npy"), try logits(b.session, dir + "/b.npy"))
    XCTAssertEqual(a.run(line: "ask \"when did the square appear?\" max=3"), .ok, outA.text)
    XCTAssertEqual(b.run(line: "ask \"when did the square appear?\" max=3"), .ok, outB.text)
    XCTAssertEqual(outA.lines.last, outB.lines.last)
  }

  /// H.264 changes pixels a little (4:2:0 chroma, quantised): the embedded model gives the
  /// same answers as from the frames themselves, on held-out seeds and every question kind.
  func testH264ClipGivesTheSameAnswers() throws {
    let dir = temporaryFolder(self)
    for seed in [11, 12, 13] as [UInt64] {
      let (frames, _, h264) = try clips(seed: seed, in: dir)
      for kind in [QuestionKind.shape, .time, .color] {
        let question = try SyntheticGenerator.generate(.needleVideo, seed: seed, question: kind)
          .question
        var answers: [String] = []
        for feed in ["feed frames \(frames)", "feed frames \(h264) times=off"] {
          let (repl, out) = embedded()
          XCTAssertEqual(repl.run(line: feed), .ok, out.text)
          XCTAssertEqual(repl.run(line: "ask \"\(question)\" max=4"), .ok, out.text)
          answers.append(out.lines.last ?? "")
        }
        XCTAssertEqual(answers[0], answers[1], "seed \(seed), \(question)")
      }
    }
  }

  /// With times on (the default), the clip is laid out as SmolVLM's processor lays out a video
  /// (transformers' SmolVLMProcessor: DEFAULT_VIDEO_INTRO, FRAME_TIMESTAMP_MESSAGE,
  /// DEFAULT_MEDIA_OUTTRO, num2words for the count).
  func testTimesInThePrompt() throws {
    let (repl, out) = embedded()
    let (_, ffv1, _) = try clips(seed: 3, in: repl.workingDirectory!)
    XCTAssertEqual(repl.run(line: "feed frames \(ffv1) start=0:04 end=10 every=2"), .ok, out.text)
    let s = repl.session
    let text = s.tokenizer!.decode(s.context)
    let image = "<fake_token_around_image><global-img>" + String(repeating: "<image>", count: 16)
      + "<fake_token_around_image>"
    let expected =
      "You are provided the following series of three frames from a 0:00:32 [H:MM:SS] video.\n"
      + [4, 6, 8].map { "\nFrame from 00:0\($0):" + image }.joined() + "\n\n"
    XCTAssertTrue(text.hasSuffix(expected), text)
    XCTAssertEqual(NumberWords.english(3600), "three thousand, six hundred")
    XCTAssertEqual(NumberWords.english(121), "one hundred and twenty-one")
    XCTAssertEqual(NumberWords.english(1001), "one thousand and one")
    XCTAssertEqual(NumberWords.english(1_001_000), "one million, one thousand")
    // More of num2words 0.5.14's output:
    for (n, words) in [
      (0, "zero"), (13, "thirteen"), (40, "forty"), (115, "one hundred and fifteen"),
      (2000, "two thousand"), (5050, "five thousand and fifty"),
      (123_456, "one hundred and twenty-three thousand, four hundred and fifty-six"),
      (1_000_001, "one million and one"),
    ] {
      XCTAssertEqual(NumberWords.english(n), words)
    }
  }

  /// Ctrl-C part way through a video leaves the frames fed so far, consistent: ask works.
  func testCancelledVideoFeedLeavesAUsableContext() throws {
    let (repl, out) = embedded()
    let (_, ffv1, _) = try clips(seed: 3, in: repl.workingDirectory!)
    let s = repl.session
    XCTAssertEqual(runLines(repl, "budget 200 tokens", "prefill mode=capped"), .ok, out.text)
    let clip = VideoClip(try VideoPlan.probe(ffv1, selection: VideoSelection()))
    clip.onFrame = { if $0 == 9 { s.cancellation.set() } }
    XCTAssertThrowsError(try s.feedVideo(clip, times: false)) {
      XCTAssertTrue("\($0)".contains("prefill stopped after"), "\($0)")
    }
    s.cancellation.clear()
    let frames = Set(s.contextOrigins.compactMap(\.frame))
    XCTAssertTrue(frames.count >= 10 && frames.count < 32, "\(frames.count) frames fed")
    XCTAssertEqual(repl.run(line: "ask \"what red shape appeared?\" max=3"), .ok, out.text)
    XCTAssertEqual(repl.run(line: "show tokens"), .ok, out.text)
  }

  /// A bad video fails in one line naming it, and the session is as it was.
  func testBadVideoLeavesTheSessionUnchanged() throws {
    let (repl, out) = embedded()
    let dir = repl.workingDirectory!
    let (_, ffv1, _) = try clips(seed: 3, in: dir)
    let bytes = try Data(contentsOf: URL(fileURLWithPath: ffv1))
    try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: dir + "/cut.mkv"))
    try Data("hello".utf8).write(to: URL(fileURLWithPath: dir + "/hello.mp4"))
    XCTAssertEqual(repl.run(line: "feed text \"look:\""), .ok, out.text)
    let context = repl.session.context
    for (line, error) in [
      ("feed frames cut.mkv", "error: feed frames: cut.mkv: damaged or truncated (File ended prematurely)"),
      ("feed frames hello.mp4", "error: feed frames: hello.mp4: not a video ffmpeg can read (Invalid data found when processing input)"),
      ("feed frames needle-3.mkv start=5:00", "error: feed frames: needle-3.mkv: no frames in the selection (32 frames over 00:32, start=05:00)"),
      ("feed frames needle-3.mkv start=1:75", "error: feed frames: start=1:75: expected seconds (90, 12.5) or [h:]mm:ss (1:30)"),
      ("feed frames needle-3.mkv end=0", "error: feed frames: needle-3.mkv: end= must come after start="),
    ] {
      XCTAssertEqual(repl.run(line: line), .failed, out.text)
      XCTAssertEqual(out.lines.last, error)
      XCTAssertEqual(repl.session.context, context)
    }
    XCTAssertEqual(repl.run(line: "feed frames needle-3.mkv max=2 times=off"), .ok, out.text)
  }
}

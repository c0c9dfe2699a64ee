import Foundation
import XCTest

@testable import KVModels

/// Videos decoded as a stream by the installed ffmpeg (scripts/setup.sh installs it; without it
/// these tests skip): a lossless clip gives the pixels of the frames it was made from, the
/// selection (fps, every, max, start, end) takes the planned frames, bad videos fail in one
/// line naming the file, and ffmpeg is never left running.
final class VideoStreamTests: XCTestCase {
  var ffmpeg: String!

  override func setUpWithError() throws {
    guard let found = Frames.findFFmpeg(), Frames.findTool("ffprobe") != nil else {
      throw XCTSkip("ffmpeg is not installed (scripts/setup.sh installs it)")
    }
    ffmpeg = found
  }

  /// Runs ffmpeg with `args` (quiet, overwriting) and requires it to succeed.
  func make(_ args: [String]) throws {
    let run = try Subprocess.capture(
      ffmpeg, ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"] + args, name: "ffmpeg")
    XCTAssertEqual(run.status, 0, run.errorLines.joined(separator: "\n"))
  }

  /// 12 PNG frames of ffmpeg's test pattern (64×48) and a lossless FFV1 clip of them at 4 fps.
  func losslessClip() throws -> (folder: String, clip: String) {
    let dir = try makeTemporaryFolder(self)
    let frames = dir + "/frames"
    try FileManager.default.createDirectory(atPath: frames, withIntermediateDirectories: true)
    try make([
      "-f", "lavfi", "-i", "testsrc=size=64x48:rate=4", "-frames:v", "12",
      frames + "/frame%03d.png",
    ])
    let clip = dir + "/clip.mkv"
    try make([
      "-framerate", "4", "-i", frames + "/frame%03d.png", "-c:v", "ffv1", "-pix_fmt", "bgr0", clip,
    ])
    return (frames, clip)
  }

  /// The ffmpeg and ffprobe processes this test process started and that still exist
  /// (running or unreaped).
  func children() -> [String] {
    let me = getpid()
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { pid -> String? in
      guard Int32(pid) != nil,
        let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { return nil }
      let name = stat[stat.index(after: stat.firstIndex(of: "(")!)..<close]
      let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
      guard fields.count > 1, Int32(fields[1]) == me, name == "ffmpeg" || name == "ffprobe"
      else { return nil }
      return "\(name) \(pid) state \(fields[0])"
    }
  }

  func testLosslessClipGivesTheFramesPixelsInOrder() throws {
    let (folder, clip) = try losslessClip()
    let pngs = try Frames.list(folder: folder)
    let plan = try VideoPlan.probe(clip, selection: VideoSelection(fps: 4))
    XCTAssertEqual(plan.frameCount, 12)
    XCTAssertEqual([plan.width, plan.height], [64, 48])
    XCTAssertEqual(plan.promptTimes, (0..<12).map { Double($0) * 0.25 })
    let stream = try VideoStream(plan)
    for (i, png) in pngs.enumerated() {
      XCTAssertEqual(try stream.next(), try ImageDecoder.decode(path: png), "frame \(i)")
    }
    XCTAssertNil(try stream.next())
    XCTAssertEqual(children(), [])
  }

  /// fps keeps a frame at least 1/fps after the last kept; start/end cut by the frames'
  /// times; every and max then thin and cut, as for a folder.
  func testSelection() throws {
    let (folder, clip) = try losslessClip()
    let pngs = try Frames.list(folder: folder)
    func picked(_ s: VideoSelection) throws -> [RGBImage?] {
      let stream = try VideoStream(try VideoPlan.probe(clip, selection: s))
      var out: [RGBImage?] = []
      while let f = try stream.next() { out.append(f) }
      return out
    }
    func expected(_ indices: [Int]) throws -> [RGBImage?] {
      try indices.map { try ImageDecoder.decode(path: pngs[$0]) }
    }
    XCTAssertEqual(try picked(VideoSelection(fps: 2)), try expected([0, 2, 4, 6, 8, 10]))
    XCTAssertEqual(try picked(VideoSelection(fps: 1, every: 2)), try expected([0, 8]))
    XCTAssertEqual(
      try picked(VideoSelection(fps: 4, max: 3, start: 0.5)), try expected([2, 3, 4]))
    XCTAssertEqual(
      try picked(VideoSelection(fps: 4, start: 1, end: 2)), try expected([4, 5, 6, 7]))
    XCTAssertEqual(try picked(VideoSelection(fps: 100)).count, 12)
    XCTAssertEqual(children(), [])
  }

  /// start= seeks in a container that indexes its keyframes (-ss before -i, to a time inside
  /// a group of pictures of an H.264 clip, Matroska with a non-zero first timestamp too) and
  /// still gives exactly the frames, and times, that decoding from the beginning gives; in
  /// MPEG-TS, where ffmpeg's seek can land late, it decodes from the beginning.
  func testStartSeeksToTheExactFrames() throws {
    let dir = try makeTemporaryFolder(self)
    for (name, extra, seeks) in [
      ("clip.mp4", [] as [String], true), ("offset.mkv", ["-output_ts_offset", "2.5"], true),
      ("clip.ts", [], false),
    ] {
      let clip = dir + "/" + name
      try make(
        ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=4", "-t", "20", "-c:v", "libx264",
         "-g", "16", "-pix_fmt", "yuv420p"] + extra + [clip])
      let whole = try VideoPlan.probe(clip, selection: VideoSelection(fps: 4))
      var all: [RGBImage] = []
      let through = try VideoStream(whole)
      while let f = try through.next() { all.append(f) }
      // 13.25 s is frame 53, five frames after the keyframe at 12 s.
      let plan = try VideoPlan.probe(clip, selection: VideoSelection(fps: 4, max: 6, start: 13.25))
      XCTAssertEqual(plan.seekable, seeks, name)
      let args = VideoStream.arguments(plan)
      XCTAssertEqual(args.firstIndex(of: "-ss").map { $0 < args.firstIndex(of: "-i")! }, seeks ? true : nil, name)
      XCTAssertEqual(plan.promptTimes.map { ($0 * 100).rounded() / 100 }, [13.25, 13.5, 13.75, 14, 14.25, 14.5], name)
      let first = whole.times.firstIndex(of: plan.times[0])!
      XCTAssertEqual(whole.promptTimes[first], plan.promptTimes[0], name)
      let stream = try VideoStream(plan)
      var got: [RGBImage] = []
      while let f = try stream.next() { got.append(f) }
      XCTAssertEqual(got.count, 6, name)
      XCTAssertTrue(got == Array(all[first..<(first + 6)]), "\(name): frames differ")
    }
    XCTAssertEqual(children(), [])
  }

  /// Frames asked for again from the start (a rebuild) restart the stream.
  func testClipRestartsForAnEarlierFrame() throws {
    let (folder, clip) = try losslessClip()
    let pngs = try Frames.list(folder: folder)
    let video = VideoClip(try VideoPlan.probe(clip, selection: VideoSelection(fps: 4)))
    XCTAssertEqual(try video.frame(0), try ImageDecoder.decode(path: pngs[0]))
    XCTAssertEqual(try video.frame(5), try ImageDecoder.decode(path: pngs[5]))
    XCTAssertEqual(try video.frame(1), try ImageDecoder.decode(path: pngs[1]))
    XCTAssertEqual(video.framesDecoded, 8)
    video.close()
    XCTAssertEqual(children(), [])
  }

  /// Closing a stream part way kills ffmpeg and reaps it.
  func testCloseKillsAndReapsFFmpeg() throws {
    let dir = try makeTemporaryFolder(self)
    let clip = dir + "/long.mkv"
    try make([
      "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "20", "-c:v", "ffv1", clip,
    ])
    let stream = try VideoStream(
      try VideoPlan.probe(clip, selection: VideoSelection(fps: 25)))
    XCTAssertNotNil(try stream.next())
    XCTAssertEqual(children().count, 1)
    stream.close()
    XCTAssertEqual(children(), [])
  }

  func testBadVideos() throws {
    let (_, clip) = try losslessClip()
    let dir = (clip as NSString).deletingLastPathComponent
    let bytes = try Data(contentsOf: URL(fileURLWithPath: clip))
    func expectError(_ path: String, _ message: String, _ s: VideoSelection = VideoSelection()) {
      XCTAssertThrowsError(try VideoPlan.probe(path, selection: s, maxPixels: 10_000)) {
        XCTAssertEqual("\($0)", "\(path): \(message)")
        XCTAssertFalse("\($0)".contains("\n"))
      }
    }
    let truncated = dir + "/truncated.mkv"
    try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
    expectError(truncated, "damaged or truncated (File ended prematurely)")

    let text = dir + "/notes.mp4"
    try Data("not a video\n".utf8).write(to: URL(fileURLWithPath: text))
    expectError(text, "not a video ffmpeg can read (Invalid data found when processing input)")

    let audio = dir + "/tone.mka"
    try make(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "flac", audio])
    expectError(audio, "has no video stream")

    // An H.264 clip whose codec tag is changed to one no decoder knows.
    let h264 = dir + "/clip.mp4"
    try make([
      "-f", "lavfi", "-i", "testsrc=size=64x48:rate=4", "-frames:v", "4", "-c:v", "libx264",
      h264,
    ])
    // Every "avc1" (the file type's brand list has one too, before the sample description).
    var mp4 = [UInt8](try Data(contentsOf: URL(fileURLWithPath: h264)))
    let tag = Array("avc1".utf8)
    let at = (0...(mp4.count - 4)).filter { Array(mp4[$0..<$0 + 4]) == tag }
    XCTAssertGreaterThanOrEqual(at.count, 2)
    for i in at { mp4.replaceSubrange(i..<i + 4, with: Array("zzz1".utf8)) }
    let unknown = dir + "/unknown.mp4"
    try Data(mp4).write(to: URL(fileURLWithPath: unknown))
    expectError(unknown, "unknown video codec: ffmpeg has no decoder for it")

    let huge = dir + "/huge.mkv"
    try make(["-f", "lavfi", "-i", "testsrc=size=200x100:rate=1", "-frames:v", "1", "-c:v", "ffv1", huge])
    expectError(huge, "frames of 200×100 are over the limit of 10000 pixels")

    expectError(
      clip, "no frames in the selection (12 frames over 00:03, start=00:10)",
      VideoSelection(start: 10))

    let empty = dir + "/empty.y4m"
    try Data("YUV4MPEG2 W64 H48 F1:1 Ip A1:1 C420jpeg\n".utf8).write(to: URL(fileURLWithPath: empty))
    expectError(empty, "has no frames")
    XCTAssertEqual(children(), [])
  }
}

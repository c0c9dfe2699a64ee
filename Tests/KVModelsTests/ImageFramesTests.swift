import Foundation
import XCTest

@testable import KVModels

final class ImageFramesTests: XCTestCase {
  private func folderOfFrames(_ names: [String], extra: [String: String] = [:]) throws -> String {
    let dir = try makeTemporaryFolder(self)
    let png = try imageFixtureData("gray_1bit_19x11.png")
    for name in names {
      try png.write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(name)))
    }
    for (name, text) in extra {
      try Data(text.utf8).write(
        to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(name)))
    }
    return dir
  }

  private func names(_ paths: [String]) -> [String] {
    paths.map { ($0 as NSString).lastPathComponent }
  }

  func testNaturalOrder() {
    let sorted = [
      "frame10.png", "frame2.png", "frame1.png", "frame002.png", "a.png", "frame_b.png",
      "frame100.png", "x9y10", "x9y9", "x10y1",
    ]
    .sorted(by: Frames.naturalLess)
    XCTAssertEqual(
      sorted,
      [
        "a.png", "frame1.png", "frame002.png", "frame2.png", "frame10.png", "frame100.png",
        "frame_b.png", "x9y9", "x9y10", "x10y1",
      ])
    // Digit runs longer than Int compare too.
    XCTAssertTrue(Frames.naturalLess("f99999999999999999999998", "f99999999999999999999999"))
  }

  func testFolderSortedEveryAndMax() throws {
    // Images are recognised by content: the .txt is skipped, the extension-less PNG is kept.
    let dir = try folderOfFrames(
      [
        "frame10.png", "frame2.png", "frame1.png", "frame3.jpg", "frame11", "frame20.png",
        ".hidden.png",
      ],
      extra: ["notes.txt": "not an image"])
    XCTAssertEqual(
      names(try Frames.list(folder: dir)),
      ["frame1.png", "frame2.png", "frame3.jpg", "frame10.png", "frame11", "frame20.png"])
    XCTAssertEqual(
      names(try Frames.list(folder: dir, every: 2)), ["frame1.png", "frame3.jpg", "frame11"])
    XCTAssertEqual(
      names(try Frames.list(folder: dir, every: 2, max: 2)), ["frame1.png", "frame3.jpg"])
    XCTAssertEqual(names(try Frames.list(folder: dir, max: 1)), ["frame1.png"])
    // Every listed frame decodes.
    for path in try Frames.list(folder: dir) {
      XCTAssertEqual(try ImageDecoder.decode(path: path).width, 19)
    }
  }

  func testFolderErrors() throws {
    func message(_ body: () throws -> Any) -> String? {
      do {
        _ = try body()
        return nil
      } catch {
        return "\(error)"
      }
    }
    let empty = try folderOfFrames([], extra: ["a.txt": "x", "b.md": "y"])
    XCTAssertEqual(
      message { try Frames.list(folder: empty) },
      "\(empty): no images in this folder (PNG, JPEG or binary PPM/PGM, recognised by their first bytes; "
        + "2 other entries skipped)")
    XCTAssertEqual(
      message { try Frames.list(folder: "/no/such/frames") }, "/no/such/frames: no such folder")
    let file = imageFixture("rgb_61x45.png")
    XCTAssertEqual(message { try Frames.list(folder: file) }, "\(file): not a folder")
    XCTAssertEqual(
      message { try Frames.list(folder: empty, every: 0) },
      "\(empty): every= must be at least 1, got 0")
    XCTAssertEqual(
      message { try Frames.list(folder: empty, max: 0) }, "\(empty): max= must be at least 1, got 0"
    )
  }

  func testVideoWithoutFFmpegSaysHowToGetIt() throws {
    let dir = try makeTemporaryFolder(self)
    let video = (dir as NSString).appendingPathComponent("clip.mp4")
    try Data([0, 0, 0, 24]).write(to: URL(fileURLWithPath: video))
    XCTAssertThrowsError(
      try Frames.extract(video: video, fps: 2, searchPath: dir + ":/nonexistent")
    ) {
      XCTAssertEqual(
        "\($0)",
        "\(video): ffmpeg is not installed (apt-get install ffmpeg) — or pass a folder of frames")
    }
    XCTAssertThrowsError(try Frames.extract(video: dir + "/missing.mp4", fps: 2, searchPath: dir)) {
      XCTAssertEqual("\($0)", "\(dir)/missing.mp4: no such file")
    }
    XCTAssertThrowsError(try Frames.extract(video: video, fps: 0, searchPath: dir)) {
      XCTAssertEqual("\($0)", "\(video): fps= must be a positive number, got 0.0")
    }
  }

  /// The subprocess plumbing, with a stand-in `ffmpeg` script: arguments, output pattern, frame
  /// order, every/max, clean-up of the temporary folder, and a failing run.
  func testVideoThroughAnFFmpegOnPath() throws {
    let bin = try makeTemporaryFolder(self)
    let log = (bin as NSString).appendingPathComponent("args.txt")
    let script = """
      #!/bin/sh
      printf '%s\\n' "$@" > '\(log)'
      for last in "$@"; do :; done
      case "$*" in *broken*) echo "clip.mp4: Invalid data found when processing input" >&2; exit 1;; esac
      for i in 1 2 3 4 5 6 7 8 9 10 11 12; do cp '\(imageFixture("gray_1bit_19x11.png"))' "$(printf "$last" $i)"; done
      """
    let ffmpeg = (bin as NSString).appendingPathComponent("ffmpeg")
    try Data(script.utf8).write(to: URL(fileURLWithPath: ffmpeg))
    chmod(ffmpeg, 0o755)
    XCTAssertEqual(Frames.findFFmpeg(searchPath: "/nonexistent:" + bin), ffmpeg)

    let video = (bin as NSString).appendingPathComponent("clip.mp4")
    try Data([0, 0, 0, 24]).write(to: URL(fileURLWithPath: video))
    var folder = ""
    do {
      let frames = try Frames.extract(video: video, fps: 2.5, every: 3, max: 3, searchPath: bin)
      folder = frames.folder
      XCTAssertEqual(
        names(frames.paths), ["frame000001.png", "frame000004.png", "frame000007.png"])
      let args = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(
        String.init)
      XCTAssertEqual(
        args,
        [
          "-hide_banner", "-loglevel", "error", "-nostdin", "-i", "file:" + video, "-vf", "fps=2.5",
          "-frames:v", "7",
          (frames.folder as NSString).appendingPathComponent("frame%06d.png"),
        ])
      XCTAssertTrue(FileManager.default.fileExists(atPath: folder))
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: folder), "temporary frames are removed")

    let broken = (bin as NSString).appendingPathComponent("broken.mp4")
    try Data([1]).write(to: URL(fileURLWithPath: broken))
    XCTAssertThrowsError(try Frames.extract(video: broken, fps: 1, searchPath: bin)) {
      XCTAssertEqual(
        "\($0)",
        "\(broken): ffmpeg failed (exit status 1): clip.mp4: Invalid data found when processing input"
      )
    }
  }
}

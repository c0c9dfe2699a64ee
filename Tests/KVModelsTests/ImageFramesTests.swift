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

  /// A folder's frames share one list of names: each path comes back exactly as given, each
  /// source decodes its own file, and paths from several folders are kept whole.
  func testFolderNamesKeepEveryPathAndDecodeEachFrame() throws {
    let dir = try folderOfFrames(["frame1.png", "frame2.png"])
    let rgb = try imageFixtureData("rgb_61x45.png")
    try rgb.write(to: URL(fileURLWithPath: dir + "/a-frame-whose-name-is-long.png"))
    let paths = try Frames.list(folder: dir)
    let list = try XCTUnwrap(FolderNames(paths))
    XCTAssertEqual(list.prefix, dir + "/")
    XCTAssertEqual(paths.indices.map(list.path), paths)
    let sources = try ImageSource.files(paths)
    XCTAssertEqual(sources.map(\.width), [61, 19, 19])
    XCTAssertEqual(try sources.map { try $0.load().height }, [45, 11, 11])
    XCTAssertEqual(FolderNames(["a.png", "b.png"])?.path(1), "b.png")
    XCTAssertEqual(FolderNames(["/a.png"])?.path(0), "/a.png")
    XCTAssertNil(FolderNames(["x/a.png", "y/a.png"]))
    XCTAssertNil(FolderNames([]))
    let mixed = try ImageSource.files([paths[0], dir + "/../" + (dir as NSString).lastPathComponent + "/frame1.png"])
    XCTAssertEqual(try mixed.map { try $0.load().width }, [61, 19])
    XCTAssertThrowsError(try ImageSource.files([dir + "/missing.png"]))
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
      try VideoPlan.probe(video, selection: VideoSelection(), searchPath: dir + ":/nonexistent")
    ) {
      XCTAssertEqual(
        "\($0)",
        "\(video): ffmpeg is not installed (apt-get install ffmpeg) — or pass a folder of frames")
    }
    XCTAssertThrowsError(
      try VideoPlan.probe(dir + "/missing.mp4", selection: VideoSelection(), searchPath: dir)
    ) {
      XCTAssertEqual("\($0)", "\(dir)/missing.mp4: no such file")
    }
    XCTAssertThrowsError(
      try VideoPlan.probe(video, selection: VideoSelection(fps: 0), searchPath: dir)
    ) {
      XCTAssertEqual("\($0)", "\(video): fps= must be a positive number, got 0.0")
    }
  }

  func testClockTimes() {
    XCTAssertEqual(Frames.parseClock("90"), 90)
    XCTAssertEqual(Frames.parseClock("12.5"), 12.5)
    XCTAssertEqual(Frames.parseClock("1:30"), 90)
    XCTAssertEqual(Frames.parseClock("1:02:03.5"), 3723.5)
    for bad in ["", "1:", ":30", "1:60", "-3", "1e3", "nan", "1:2:3:4", "1.5:00"] {
      XCTAssertNil(Frames.parseClock(bad), bad)
    }
    XCTAssertEqual(Frames.clock(75.9), "01:15")
    XCTAssertEqual(Frames.clock(3725), "1:02:05")
  }
}

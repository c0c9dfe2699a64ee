import Foundation
@testable import KVModels
import XCTest

@testable import KVRepl

/// The hostile-input table's video rows: files made by the installed ffmpeg (the rows skip
/// without it; scripts/setup.sh installs it), then cut, retagged or written by hand.
extension HostileInputTests {
  static func ffmpeg(_ args: [String]) throws {
    guard let ffmpeg = Frames.findFFmpeg() else { throw TableError.message("no ffmpeg") }
    let run = try Subprocess.capture(
      ffmpeg, ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"] + args, name: "ffmpeg")
    guard run.status == 0 else {
      throw TableError.message("ffmpeg \(args): \(run.errorLines.joined(separator: " "))")
    }
  }

  /// A 3-frame 64×48 FFV1 clip of ffmpeg's test pattern at 1 fps.
  static func clip(_ path: String) throws {
    try ffmpeg([
      "-f", "lavfi", "-i", "testsrc=size=64x48:rate=1", "-frames:v", "3", "-c:v", "ffv1", path,
    ])
  }

  static func videoCases(into c: inout [Int: Case]) {
    let idefics = "load \(vlm)/idefics3/model"
    c[81] = Case(before: [idefics], needsFFmpeg: true) { folder in
      try clip(folder + "/whole.mkv")
      let bytes = try Data(contentsOf: URL(fileURLWithPath: folder + "/whole.mkv"))
      try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: folder + "/cut.mkv"))
    }
    c[82] = Case(before: [idefics], needsFFmpeg: true) { try write("hello\n", $0 + "/hello.mp4") }
    c[83] = Case(before: [idefics], needsFFmpeg: true) {
      try ffmpeg(["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "flac", $0 + "/tone.mka"])
    }
    c[84] = Case(before: [idefics], needsFFmpeg: true) { folder in
      try ffmpeg([
        "-f", "lavfi", "-i", "testsrc=size=64x48:rate=1", "-frames:v", "2", "-c:v", "libx264",
        folder + "/h264.mp4",
      ])
      var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: folder + "/h264.mp4")))
      // Every "avc1" (the file type's brand list has one too, before the sample description).
      let tag = Array("avc1".utf8)
      for at in (0...(b.count - 4)) where Array(b[at..<at + 4]) == tag {
        b.replaceSubrange(at..<at + 4, with: Array("zzz1".utf8))
      }
      try write(b, folder + "/unknown.mp4")
    }
    c[85] = Case(before: [idefics], needsFFmpeg: true) {
      try write("YUV4MPEG2 W20000 H10000 F1:1 Ip A1:1 C420jpeg\nFRAME\nabc", $0 + "/big.y4m")
    }
    c[86] = Case(before: [idefics], needsFFmpeg: true) {
      try write("YUV4MPEG2 W64 H48 F1:1 Ip A1:1 C420jpeg\n", $0 + "/empty.y4m")
    }
    c[87] = Case(before: [idefics], needsFFmpeg: true) { try clip($0 + "/clip.mkv") }
  }
}

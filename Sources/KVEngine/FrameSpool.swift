import Foundation
import KVModels

/// The frames of a clip generated in memory (`feed synthetic needle-video`), written once as PNG
/// files into a temporary folder and read back (losslessly) whenever the vision tower needs
/// them, as a folder of frames is: held in memory, every frame fed cost its pixels for the
/// session's life. The folder goes when the last segment holding these frames does.
final class FrameSpool: @unchecked Sendable {
  let folder: String
  /// The frames' file names in `folder` (stored inline, 16 bytes a frame).
  let names: FolderNames

  init(_ frames: [RGBImage]) throws {
    folder = (NSTemporaryDirectory() as NSString).appendingPathComponent(
      "kvlab-clip-\(UUID().uuidString)")
    do {
      try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
      throw EngineError.file(path: folder, message: "cannot create a folder for the clip's frames")
    }
    names = FolderNames(
      prefix: folder + "/", names: frames.indices.map { String(format: "frame%06d.png", $0) })
    for (i, frame) in frames.enumerated() {
      let path = names.path(i)
      do {
        try PNGEncoder.encode(frame).write(to: URL(fileURLWithPath: path))
      } catch {
        try? FileManager.default.removeItem(atPath: folder)
        throw EngineError.file(
          path: path, message: "cannot write the clip's frame: \(error.localizedDescription)")
      }
    }
  }

  deinit { try? FileManager.default.removeItem(atPath: folder) }

  /// Frame `i` as a source that keeps this spool (and its folder) alive: decoded for its size
  /// when laid out, again for its pixels.
  @Sendable func source(_ i: Int) throws -> ImageSource {
    let image = try ImageDecoder.decode(path: names.path(i))
    return ImageSource(width: image.width, height: image.height) { [self] in
      try ImageDecoder.decode(path: names.path(i))
    }
  }
}

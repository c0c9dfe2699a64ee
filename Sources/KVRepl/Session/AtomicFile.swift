import Foundation

/// Writes a whole file so that readers see the old contents or the new, never a part: the
/// bytes go to a temporary file in the same folder, are flushed to disk, and the temporary is
/// renamed over the target (rename(2) is atomic within a file system). An interrupted or failed
/// write leaves the target as it was and removes the temporary.
enum AtomicFile {
  static func write(_ data: Data, to path: String, command: String, displayPath: String) throws {
    let folder = (path as NSString).deletingLastPathComponent
    var isDirectory: ObjCBool = false
    let dir = folder.isEmpty ? "." : folder
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory),
      isDirectory.boolValue
    else {
      throw ReplError(command, "\(displayPath): no such folder '\(dir)'")
    }
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory),
      isDirectory.boolValue
    {
      throw ReplError(command, "\(displayPath): is a folder")
    }
    let name = (path as NSString).lastPathComponent
    let temp = (dir as NSString).appendingPathComponent(".\(name).\(getpid()).tmp")
    let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ReplError(command, "\(displayPath): \(Format.systemError(errno))") }
    var failure: Int32 = 0
    data.withUnsafeBytes { raw in
      var offset = 0
      while offset < raw.count {
        let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
        if n < 0 {
          if errno == EINTR { continue }
          failure = errno
          return
        }
        offset += n
      }
    }
    if failure == 0, fsync(fd) != 0 { failure = errno }
    close(fd)
    if failure == 0, rename(temp, path) != 0 { failure = errno }
    if failure != 0 {
      unlink(temp)
      throw ReplError(command, "\(displayPath): \(Format.systemError(failure)) (left unchanged)")
    }
  }
}

import Foundation

/// Replaces a file's contents so that a reader (or a crash) sees either the old file or the
/// new one, never a half-written one: the bytes go to a temporary file in the same folder,
/// which is fsync'ed and then renamed over the original (rename(2) is atomic within a file
/// system). The new file keeps the original's permission bits. On any failure the temporary
/// file is removed and the original is left as it was.
public enum AtomicFile {
  /// Writes `bytes` to `path`. Errors are `ReplError(command, "DISPLAY: what went wrong")`
  /// (`cannot write it: file too large` past the file size limit, `no space left on device`).
  /// A symbolic link stays a link: the file it points to is replaced. `sync: false` skips the
  /// fsyncs (many files written in a row, none of which alone marks the work complete): a crash
  /// may then lose the new contents, but a failed write still leaves no partial file.
  public static func replace(
    _ path: String, with bytes: [UInt8], command: String, displayPath: String, sync: Bool = true
  ) throws {
    func failure(_ what: String, _ code: Int32) -> ReplError {
      ReplError(command, "\(displayPath): cannot \(what): \(Format.systemError(code))")
    }
    let path = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    let folder = (path as NSString).deletingLastPathComponent
    let name = (path as NSString).lastPathComponent
    var template = Array(
      ((folder.isEmpty ? "." : folder) + "/." + name + ".kvlab-XXXXXX").utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    guard fd >= 0 else { throw failure("write a temporary file next to it", errno) }
    let temporary = String(
      decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var renamed = false
    defer {
      if !renamed { unlink(temporary) }
    }
    do {
      defer { close(fd) }
      var st = stat()
      if stat(path, &st) == 0 { fchmod(fd, st.st_mode & 0o7777) } else { fchmod(fd, 0o644) }
      var offset = 0
      while offset < bytes.count {
        let n = bytes.withUnsafeBytes { buf in
          Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset)
        }
        if n < 0 {
          if errno == EINTR { continue }
          throw failure("write it", errno)
        }
        offset += n
      }
      guard !sync || fsync(fd) == 0 else { throw failure("write it (fsync)", errno) }
    }
    guard rename(temporary, path) == 0 else { throw failure("replace it", errno) }
    renamed = true
    guard sync else { return }
    // The rename itself is made durable by syncing the folder; a failure here loses nothing.
    let dfd = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 {
      fsync(dfd)
      close(dfd)
    }
  }
}

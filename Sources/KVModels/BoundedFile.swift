import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Reading a whole small file (a JSON config, a tokenizer, an image) with its limits checked
/// first: a regular file (a FIFO named config.json would block the read forever; a device
/// never ends), and no larger than `limit` bytes (a sparse 1 TB file would be allocated whole).
public enum BoundedFile {
  /// Why the file was not read: one line, without the path (callers add it).
  public struct Failure: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
  }

  /// Why `path` cannot be reached, for a path `FileManager.fileExists` says is not there:
  /// `notThere` ("no such file") when nothing is at it, or what `stat` says otherwise — a
  /// symbolic link loop, a link to nothing, a folder that may not be entered.
  public static func missing(_ path: String, notThere: String) -> String {
    var st = stat()
    if stat(path, &st) == 0 { return notThere }  // appeared since
    let err = errno
    var lst = stat()
    switch err {
    case ELOOP:
      return "symbolic link loop (too many levels of symbolic links)"
    case ENOENT where lstat(path, &lst) == 0 && (lst.st_mode & S_IFMT) == S_IFLNK:
      return "symbolic link to nothing (its target does not exist)"
    case EACCES: return "permission denied (a folder on the way may not be entered)"
    case ENAMETOOLONG: return "name too long"
    case ENOTDIR: return "\(notThere) (a part of the path is not a folder)"
    default: return notThere
    }
  }

  /// JSON files (config.json, tokenizer.json, preprocessor_config.json): the largest published
  /// tokenizer.json files are ~30 MB.
  public static let jsonLimit = 512 << 20

  /// The file's bytes (opened by `openRegularFile`). `kind` names what the file should be in the errors ("an image": "is a
  /// folder, not an image file", "… the limit of N for an image").
  public static func contents(_ path: String, limit: Int, kind: String? = nil) throws -> [UInt8] {
    func fail(_ m: String) -> Failure { Failure(message: m) }
    let (fd, size) = try openRegularFile(
      path, folderMessage: "is a folder, not \(kind.map { "\($0) file" } ?? "a file")")
    defer { close(fd) }
    guard size <= limit else {
      throw fail(
        "file is \(size) bytes, more than the limit of \(limit) for \(kind ?? "this kind of file")")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
      let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
      if n < 0 {
        if errno == EINTR { continue }
        throw fail("cannot read: \(String(cString: strerror(errno)))")
      }
      if n == 0 { break }  // shrank while reading
      done += n
    }
    if done < size { bytes.removeLast(size - done) }
    return bytes
  }

  /// Maps the whole regular file at `path` read-only (opened by `openRegularFile`, the
  /// descriptor closed again); the caller `munmap`s `(base, size)`. A file shorter than
  /// `minimumSize` fails with `tooShort(size)` before anything is mapped.
  public static func mapRegularFile(
    _ path: String, minimumSize: Int, tooShort: (Int) -> String
  ) throws -> (base: UnsafeRawPointer, size: Int) {
    let (fd, size) = try openRegularFile(path)
    defer { close(fd) }
    guard size >= minimumSize else { throw Failure(message: tooShort(size)) }
    guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
      throw Failure(message: "cannot map: \(String(cString: strerror(errno)))")
    }
    return (UnsafeRawPointer(map), size)
  }

  /// Opens `path` for reading and returns the descriptor (the caller closes it) and the file's
  /// size, or fails unless it is a regular file: `open` is non-blocking so that a FIFO cannot
  /// stall it before `fstat` says what it is. A folder fails with `folderMessage`.
  public static func openRegularFile(_ path: String, folderMessage: String = "not a regular file")
    throws -> (fd: CInt, size: Int)
  {
    func fail(_ m: String) -> Failure { Failure(message: m) }
    let fd = open(path, O_RDONLY | O_NONBLOCK)
    guard fd >= 0 else { throw fail("cannot open: \(String(cString: strerror(errno)))") }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      let message = "cannot stat: \(String(cString: strerror(errno)))"
      close(fd)
      throw fail(message)
    }
    switch st.st_mode & S_IFMT {
    case S_IFREG: return (fd, Int(st.st_size))
    case S_IFDIR:
      close(fd)
      throw fail(folderMessage)
    default:
      close(fd)
      throw fail("not a regular file")
    }
  }
}

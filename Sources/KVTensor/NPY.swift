import Foundation

/// NumPy .npy (format 1.0) for little-endian float32 C-order arrays, so results can be compared
/// with other frameworks. Written in row chunks so large logit tables never sit in memory whole.
///
/// The rows go to a temporary file next to `path`, renamed over it by `close()` once every value
/// is in: a failed write (a full disk, the file size limit: EFBIG), an error or a cancellation
/// in between leave no half-written array under `path` (and a file already there as it was).
/// A writer dropped without `close()` removes its temporary file.
public final class NPYWriter {
  public let path: String
  public let shape: [Int]
  private var fd: Int32
  private let temporary: String
  private var written = 0

  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  public init(path: String, shape: [Int]) throws {
    self.path = path
    self.shape = shape
    let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    let folder = (target as NSString).deletingLastPathComponent
    let name = (target as NSString).lastPathComponent
    var template = Array(
      ((folder.isEmpty ? "." : folder) + "/." + name + ".kvlab-XXXXXX").utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    guard fd >= 0 else {
      throw Failure(description: "\(path): cannot create file: \(Self.reason(errno))")
    }
    self.fd = fd
    temporary = String(
      decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    fchmod(fd, 0o644)
    let bytes = NPY.header(descr: "<f4", shape: shape)
    try bytes.withUnsafeBytes { try writeAll($0) }
  }

  deinit { abandon() }

  public func append(_ values: UnsafeBufferPointer<Float>) throws {
    // Float32 is little-endian on every platform kvlab runs on (x86_64, arm64).
    try writeAll(UnsafeRawBufferPointer(values))
    written += values.count
  }

  /// Checks that the shape is complete and puts the file in place.
  public func close() throws {
    guard fd >= 0 else { throw Failure(description: "\(path): already closed") }
    let expected = shape.reduce(1, *)
    guard written == expected else {
      abandon()
      throw Failure(description: "\(path): wrote \(written) values, shape needs \(expected)")
    }
    let failed = posixClose(fd) != 0 ? errno : 0
    fd = -1
    guard failed == 0 else {
      unlink(temporary)
      throw Failure(description: "\(path): \(Self.reason(failed))")
    }
    guard rename(temporary, URL(fileURLWithPath: path).resolvingSymlinksInPath().path) == 0 else {
      let e = errno
      unlink(temporary)
      throw Failure(description: "\(path): cannot replace it: \(Self.reason(e))")
    }
  }

  /// Stops writing and removes the temporary file: nothing is left of this array.
  public func abandon() {
    guard fd >= 0 else { return }
    _ = posixClose(fd)
    fd = -1
    unlink(temporary)
  }

  private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
    guard fd >= 0 else { throw Failure(description: "\(path): already closed") }
    var offset = 0
    while offset < bytes.count {
      let n = posixWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
      if n < 0 {
        let e = errno
        if e == EINTR { continue }
        abandon()
        throw Failure(description: "\(path): \(Self.reason(e))")
      }
      offset += n
    }
  }

  /// strerror's text, lower-cased at the start: `file too large`, `no space left on device`.
  static func reason(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
  }
}

// File-scope wrappers: inside the writer, `write` and `close` would name its own methods.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
private func posixClose(_ fd: Int32) -> Int32 { close(fd) }

/// Reads a float32 .npy written by NumPy or NPYWriter (for tests and comparisons).
public enum NPYReader {
  public static func read(_ path: String) throws -> (shape: [Int], values: [Float]) {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    func fail(_ why: String) -> NPYWriter.Failure { NPYWriter.Failure(description: "\(path): \(why)") }
    guard data.count >= 10, data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
      throw fail("not a .npy file")
    }
    let major = data[6]
    let headerLen: Int
    let start: Int
    if major == 1 {
      headerLen = Int(data[8]) | Int(data[9]) << 8
      start = 10
    } else {
      guard data.count >= 12 else { throw fail("truncated header") }
      headerLen = Int(data[8]) | Int(data[9]) << 8 | Int(data[10]) << 16 | Int(data[11]) << 24
      start = 12
    }
    guard data.count >= start + headerLen,
      let header = String(data: data[start..<(start + headerLen)], encoding: .ascii)
    else { throw fail("truncated header") }
    guard header.contains("'<f4'") else { throw fail("only little-endian float32 is supported") }
    guard header.contains("'fortran_order': False") else { throw fail("Fortran order not supported") }
    guard let open = header.firstIndex(of: "("), let close = header.firstIndex(of: ")") else {
      throw fail("no shape in header")
    }
    let shape = header[header.index(after: open)..<close].split(separator: ",")
      .compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    let count = shape.reduce(1, *)
    let body = data.dropFirst(start + headerLen)
    guard body.count == count * 4 else { throw fail("expected \(count) floats, found \(body.count / 4)") }
    let values = body.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
    return (shape, values)
  }
}

import Foundation

/// NumPy .npy (format 1.0) for little-endian float32 C-order arrays, so results can be compared
/// with other frameworks. Written in row chunks so large logit tables never sit in memory whole.
public struct NPYWriter {
  public let path: String
  public let shape: [Int]
  private let handle: FileHandle
  private var written = 0

  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  public init(path: String, shape: [Int]) throws {
    self.path = path
    self.shape = shape
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
      throw Failure(description: "\(path): cannot create file")
    }
    guard let h = FileHandle(forWritingAtPath: path) else {
      throw Failure(description: "\(path): cannot open for writing")
    }
    handle = h
    let dims = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(dims), }"
    // magic(6) + version(2) + header length(2) + header, padded with spaces to 64 bytes, ending in \n
    let unpadded = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
    let n = UInt16(header.utf8.count)
    bytes += [UInt8(n & 0xff), UInt8(n >> 8)]
    bytes += Array(header.utf8)
    try handle.write(contentsOf: Data(bytes))
  }

  public mutating func append(_ values: UnsafeBufferPointer<Float>) throws {
    // Float32 is little-endian on every platform kvlab runs on (x86_64, arm64).
    try handle.write(contentsOf: Data(buffer: values))
    written += values.count
  }

  public func close() throws {
    let expected = shape.reduce(1, *)
    try handle.close()
    guard written == expected else {
      throw Failure(description: "\(path): wrote \(written) values, shape needs \(expected)")
    }
  }
}

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

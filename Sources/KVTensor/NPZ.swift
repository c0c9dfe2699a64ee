import Foundation

/// NumPy arrays as bytes: .npy (format 1.0, little-endian, C order) and .npz, a zip archive of
/// .npy files (stored, not deflated: `numpy.load` reads either, and stored needs no zlib).
public enum NPY {
  /// The header of an array of `descr` (`<f4`, `<i8`) and `shape`: magic, version 1.0, the
  /// header's length and its dict, padded with spaces so the data starts on a 64-byte boundary.
  public static func header(descr: String, shape: [Int]) -> [UInt8] {
    let dims =
      shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
    let unpadded = 10 + dict.utf8.count + 1
    dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
    let n = UInt16(dict.utf8.count)
    return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xff), UInt8(n >> 8)] + Array(dict.utf8)
  }

  /// A float32 array's .npy file.
  public static func float32(_ values: [Float], shape: [Int]) -> [UInt8] {
    precondition(values.count == shape.reduce(1, *), "values do not fill the shape")
    var out = header(descr: "<f4", shape: shape)
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
    return out
  }

  /// An int64 array's .npy file.
  public static func int64(_ values: [Int], shape: [Int]) -> [UInt8] {
    precondition(values.count == shape.reduce(1, *), "values do not fill the shape")
    var out = header(descr: "<i8", shape: shape)
    for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 } }
    return out
  }

  /// An .npz archive of named arrays (`name` without `.npy`), in the order given.
  public static func npz(_ arrays: [(name: String, npy: [UInt8])]) throws -> [UInt8] {
    try StoredZip.archive(arrays.map { ($0.name + ".npy", $0.npy) })
  }
}

/// A zip archive whose entries are stored uncompressed (method 0), with CRC-32s and a central
/// directory, without zip64: at most 65,535 entries and 4 GiB in all.
public enum StoredZip {
  public struct TooLarge: Error, CustomStringConvertible {
    public let description: String
  }

  public static func archive(_ files: [(name: String, bytes: [UInt8])]) throws -> [UInt8] {
    let total = files.reduce(0) { $0 + 76 + 2 * $1.name.utf8.count + $1.bytes.count } + 22
    guard files.count <= 0xFFFF, total <= Int(UInt32.max) else {
      throw TooLarge(description: "too large for a zip without zip64 (\(files.count) files, \(total) bytes)")
    }
    var out: [UInt8] = []
    var central: [UInt8] = []
    func u16(_ v: Int, _ into: inout [UInt8]) { into += [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
    func u32(_ v: UInt32, _ into: inout [UInt8]) {
      into += [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)]
    }
    // 1980-01-01 00:00, the earliest DOS date: a fixed time keeps the file deterministic.
    let dosTime = 0
    let dosDate = 1 << 5 | 1
    for (name, bytes) in files {
      let offset = UInt32(out.count)
      let crc = crc32(bytes)
      let nameBytes = Array(name.utf8)
      // The fields both headers share: version needed 2.0, flags, method, time, date, CRC, sizes,
      // name length, extra length.
      var common: [UInt8] = []
      u16(20, &common)
      u16(0, &common)
      u16(0, &common)
      u16(dosTime, &common)
      u16(dosDate, &common)
      u32(crc, &common)
      u32(UInt32(bytes.count), &common)
      u32(UInt32(bytes.count), &common)
      u16(nameBytes.count, &common)
      u16(0, &common)
      u32(0x0403_4b50, &out)
      out += common + nameBytes + bytes
      u32(0x0201_4b50, &central)
      u16(20, &central)  // made by: 2.0, MS-DOS attributes
      central += common
      u16(0, &central)  // comment length
      u16(0, &central)  // disk
      u16(0, &central)  // internal attributes
      u32(0, &central)  // external attributes
      u32(offset, &central)
      central += nameBytes
    }
    let centralOffset = UInt32(out.count)
    out += central
    u32(0x0605_4b50, &out)
    u16(0, &out)
    u16(0, &out)
    u16(files.count, &out)
    u16(files.count, &out)
    u32(UInt32(central.count), &out)
    u32(centralOffset, &out)
    u16(0, &out)
    return out
  }

  /// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zip and PNG use it.
  public static func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
      crc = table[Int((crc ^ UInt32(b)) & 0xff)] ^ (crc >> 8)
    }
    return crc ^ 0xFFFF_FFFF
  }

  private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
  }
}

// Parsing a mapped GGUF: header, metadata values and the tensor table, bounds-checked.
import Foundation

// GGUF (versions 2 and 3; little-endian), as ggml's gguf.cpp reads it:
//
//   magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//   metadata_kv_count × (string key, u32 value_type, value)
//   tensor_count × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
//
// where a string is a u64 byte length followed by that many UTF-8 bytes (no terminator) and an
// array value is u32 element_type, u64 count, then the elements.

/// A bounds-checked cursor over the mapped bytes. Every read first checks that the bytes exist,
/// every count is checked against the bytes left before anything is allocated for it, and every
/// multiplication of counts is overflow-checked.
struct GGUFReader {
  struct Failure: Error { var message: String }

  static let headerSize = 24  // magic, version, tensor_count, metadata_kv_count
  /// Smallest possible metadata entry: empty key (8) + value type (4) + 1-byte value.
  static let minMetadataEntry = 13
  /// Smallest possible tensor entry: empty name (8) + n_dims (4) + type (4) + offset (8).
  static let minTensorEntry = 24

  let base: UnsafeRawPointer
  let count: Int
  var pos = 0

  init(base: UnsafeRawPointer, count: Int) {
    self.base = base
    self.count = count
  }

  var remaining: Int { count - pos }

  struct Parsed {
    var version: UInt32 = 0
    var metadata: [String: GGUFValue] = [:]
    var metadataKeys: [String] = []
    var tensors: [String: GGUFTensorInfo] = [:]
    var tensorNames: [String] = []
    var alignment = 32
    var dataOffset = 0
  }

  // MARK: primitives

  private func need(_ n: Int, _ what: @autoclosure () -> String) throws {
    if n > remaining {
      throw Failure(
        message:
          "truncated: \(what()) needs \(n) bytes at offset \(pos), but the file ends at \(count)")
    }
  }

  private mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String)
    throws -> T
  {
    try need(MemoryLayout<T>.size, what())
    let v = T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
    pos += MemoryLayout<T>.size
    return v
  }

  /// A u64 count or size that must also fit in Int.
  private mutating func size(_ what: @autoclosure () -> String) throws -> Int {
    let v = try load(UInt64.self, what())
    guard let n = Int(exactly: v) else {
      throw Failure(message: "\(what()) is \(v), larger than any file")
    }
    return n
  }

  private mutating func string(_ what: @autoclosure () -> String) throws -> String {
    let start = pos
    let n = try size("\(what()) length")
    guard n <= remaining else {
      throw Failure(
        message: "\(what()) at offset \(start) claims \(n) bytes, past the end of the file "
          + "(\(remaining) bytes left)")
    }
    // Invalid UTF-8 is repaired (U+FFFD), never trusted.
    let s = String(decoding: UnsafeRawBufferPointer(start: base + pos, count: n), as: UTF8.self)
    pos += n
    return s
  }

  // MARK: file structure

  mutating func parseAll() throws -> Parsed {
    var out = Parsed()
    // Header. The file is at least headerSize long (checked before mapping).
    let magic = try load(UInt32.self, "magic")
    if magic != 0x4655_4747 {  // "GGUF" read as a little-endian u32
      let bytes = (0..<4).map { base.load(fromByteOffset: $0, as: UInt8.self) }
      let shown = String(
        bytes.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." })
      let hex = bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
      throw Failure(message: "not a GGUF file: magic is \"\(shown)\" (\(hex)), expected \"GGUF\"")
    }
    out.version = try load(UInt32.self, "version")
    guard out.version == 2 || out.version == 3 else {
      let hint =
        out.version.byteSwapped == 2 || out.version.byteSwapped == 3
        ? " (a big-endian file?)" : out.version == 1 ? " (GGUF v1 is obsolete)" : ""
      throw Failure(message: "unsupported GGUF version \(out.version)\(hint); supported: 2, 3")
    }
    let tensorCount = try load(UInt64.self, "tensor count")
    let metadataCount = try load(UInt64.self, "metadata count")
    // Each entry needs some minimum number of bytes, so counts the rest of the file cannot hold
    // are refused here, before any loop or allocation. (UInt64 division: no overflow.)
    let left = UInt64(remaining)
    if metadataCount > left / UInt64(GGUFReader.minMetadataEntry) {
      throw Failure(
        message: "metadata count \(metadataCount) is impossible in a \(count)-byte file "
          + "(each entry needs at least \(GGUFReader.minMetadataEntry) bytes)")
    }
    if tensorCount > left / UInt64(GGUFReader.minTensorEntry) {
      throw Failure(
        message: "tensor count \(tensorCount) is impossible in a \(count)-byte file "
          + "(each entry needs at least \(GGUFReader.minTensorEntry) bytes)")
    }

    // Metadata.
    out.metadataKeys.reserveCapacity(Int(metadataCount))
    for i in 0..<Int(metadataCount) {
      let key = try string("metadata key #\(i)")
      guard out.metadata[key] == nil else {
        throw Failure(message: "duplicate metadata key \(GGUFFile.quoted(key))")
      }
      do {
        let type = try load(UInt32.self, "value type")
        out.metadata[key] = try value(type: type, depth: 0)
      } catch var f as Failure {
        f.message = "metadata \(GGUFFile.quoted(key)): " + f.message
        throw f
      }
      out.metadataKeys.append(key)
    }

    if let a = out.metadata["general.alignment"] {
      guard let n = a.int, n > 0, n & (n - 1) == 0, n <= 1 << 30 else {
        throw Failure(
          message: "general.alignment must be a power of two integer, got \(a) (\(a.typeName))")
      }
      out.alignment = n
    }

    // Tensor table.
    var raw: [(name: String, dims: [Int], type: GGMLType, relOffset: Int)] = []
    raw.reserveCapacity(Int(tensorCount))
    var seen = Set<String>()
    for i in 0..<Int(tensorCount) {
      let name = try string("tensor name #\(i)")
      guard seen.insert(name).inserted else {
        throw Failure(message: "duplicate tensor name \(GGUFFile.quoted(name))")
      }
      do {
        raw.append(try tensorEntry(name: name))
      } catch var f as Failure {
        f.message = "tensor \(GGUFFile.quoted(name)): " + f.message
        throw f
      }
    }

    // Data section: after the table, padded to the alignment.
    let (padded, overflow) = pos.addingReportingOverflow(out.alignment - 1)
    guard !overflow else { throw Failure(message: "data offset overflows") }
    out.dataOffset = padded / out.alignment * out.alignment

    out.tensorNames.reserveCapacity(raw.count)
    for t in raw {
      let q = GGUFFile.quoted(t.name)
      guard t.relOffset % out.alignment == 0 else {
        throw Failure(
          message: "tensor \(q): data offset \(t.relOffset) is not a multiple of the alignment "
            + "\(out.alignment)")
      }
      let info = GGUFTensorInfo(
        name: t.name, dims: t.dims, type: t.type, offset: 0)  // for byteCount only
      let bytes = info.byteCount
      let (start, o1) = out.dataOffset.addingReportingOverflow(t.relOffset)
      let (end, o2) = start.addingReportingOverflow(bytes)
      guard !o1, !o2, end <= count else {
        let span = o1 || o2 ? "offset \(t.relOffset)" : "at bytes \(start)..<\(end)"
        throw Failure(
          message: "tensor \(q): data \(span) runs past the end of the file (\(count) bytes)")
      }
      out.tensors[t.name] = GGUFTensorInfo(name: t.name, dims: t.dims, type: t.type, offset: start)
      out.tensorNames.append(t.name)
    }
    // No two tensors may share bytes (llama.cpp refuses such a file as well): sorted by where
    // they start, each must begin at or after the end of the one before.
    let spans = out.tensorNames.compactMap { name -> (start: Int, end: Int, name: String)? in
      guard let t = out.tensors[name], t.byteCount > 0 else { return nil }
      return (t.offset, t.offset + t.byteCount, name)
    }.sorted { ($0.start, $0.end) < ($1.start, $1.end) }
    for (a, b) in zip(spans, spans.dropFirst()) where b.start < a.end {
      throw Failure(
        message: "tensors \(GGUFFile.quoted(a.name)) (bytes \(a.start)..<\(a.end)) and "
          + "\(GGUFFile.quoted(b.name)) (bytes \(b.start)..<\(b.end)) overlap")
    }
    return out
  }

  /// n_dims, ne[], type, offset of one tensor (the name is already read).
  private mutating func tensorEntry(name: String) throws -> (
    name: String, dims: [Int], type: GGMLType, relOffset: Int
  ) {
    let nDims = try load(UInt32.self, "dimension count")
    guard nDims <= GGUFFile.maxDims else {
      throw Failure(message: "\(nDims) dimensions (at most \(GGUFFile.maxDims))")
    }
    var dims: [Int] = []
    var elements = 1
    for d in 0..<Int(nDims) {
      let v = try load(UInt64.self, "dimension \(d)")
      guard v > 0, let n = Int(exactly: v) else {
        throw Failure(message: "dimension \(d) is \(v) (must be between 1 and \(Int64.max))")
      }
      let (product, overflow) = elements.multipliedReportingOverflow(by: n)
      guard !overflow else {
        throw Failure(message: "element count overflows (dims \(dims + [n]))")
      }
      elements = product
      dims.append(n)
    }
    let rawType = try load(UInt32.self, "type")
    guard let type = GGMLType(rawValue: rawType) else {
      throw Failure(message: "unknown ggml type \(rawType)")
    }
    let rowLength = dims.first ?? 1
    guard rowLength % type.blockSize == 0 else {
      throw Failure(
        message: "row length \(rowLength) is not a multiple of \(type.name)'s block size "
          + "\(type.blockSize)")
    }
    // byteCount = blocks × bytesPerBlock must fit in Int too.
    guard !(elements / type.blockSize).multipliedReportingOverflow(by: type.bytesPerBlock).overflow
    else {
      throw Failure(message: "byte size overflows (dims \(dims), type \(type.name))")
    }
    let offset = try size("data offset")
    return (name, dims, type, offset)
  }

  // MARK: metadata values

  private static func minimumSize(ofType type: UInt32) -> Int? {
    switch type {
    case 0, 1, 7: return 1  // uint8, int8, bool
    case 2, 3: return 2  // uint16, int16
    case 4, 5, 6: return 4  // uint32, int32, float32
    case 10, 11, 12: return 8  // uint64, int64, float64
    case 8: return 8  // string: its length
    case 9: return 12  // array: element type + count
    default: return nil
    }
  }

  private mutating func value(type: UInt32, depth: Int) throws -> GGUFValue {
    switch type {
    case 0: return .uint8(try load(UInt8.self, "uint8 value"))
    case 1: return .int8(try load(Int8.self, "int8 value"))
    case 2: return .uint16(try load(UInt16.self, "uint16 value"))
    case 3: return .int16(try load(Int16.self, "int16 value"))
    case 4: return .uint32(try load(UInt32.self, "uint32 value"))
    case 5: return .int32(try load(Int32.self, "int32 value"))
    case 6: return .float32(Float(bitPattern: try load(UInt32.self, "float32 value")))
    case 7: return .bool(try load(UInt8.self, "bool value") != 0)
    case 8: return .string(try string("string"))
    case 9: return try array(depth: depth + 1)
    case 10: return .uint64(try load(UInt64.self, "uint64 value"))
    case 11: return .int64(try load(Int64.self, "int64 value"))
    case 12: return .float64(Double(bitPattern: try load(UInt64.self, "float64 value")))
    default: throw Failure(message: "unknown value type \(type)")
    }
  }

  private mutating func array(depth: Int) throws -> GGUFValue {
    guard depth <= GGUFFile.maxArrayDepth else {
      throw Failure(message: "arrays nested deeper than \(GGUFFile.maxArrayDepth) levels")
    }
    let elementType = try load(UInt32.self, "array element type")
    guard let minSize = GGUFReader.minimumSize(ofType: elementType) else {
      throw Failure(message: "unknown array element type \(elementType)")
    }
    let start = pos
    let n = try size("array length")
    let (bytes, overflow) = n.multipliedReportingOverflow(by: minSize)
    guard !overflow, bytes <= remaining else {
      throw Failure(
        message: "array of \(n) elements at offset \(start) runs past the end of the file "
          + "(\(remaining) bytes left)")
    }
    var values: [GGUFValue] = []
    values.reserveCapacity(n)
    for i in 0..<n {
      do {
        values.append(try value(type: elementType, depth: depth))
      } catch var f as Failure where depth == 1 {
        // Name the element at the outermost level only, so nested failures read "[3]: …".
        f.message = "element \(i): " + f.message
        throw f
      }
    }
    return .array(values)
  }
}

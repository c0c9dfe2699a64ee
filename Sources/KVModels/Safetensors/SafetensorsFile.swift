import Foundation
import KVTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// safetensors (https://github.com/huggingface/safetensors), little-endian:
//
//   u64 N | N bytes of JSON header (UTF-8, may be padded with spaces) | data section
//
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" map of strings to strings. The
// reference implementation requires the tensors to tile the data section exactly: sorted by
// offset, each begins where the previous one ends and the last ends at the end of the file.

/// Why a safetensors file (or a Hugging Face model folder) could not be read. `description` is
/// one line: "<path>: <message>".
public struct SafetensorsError: Error, CustomStringConvertible, Sendable, Equatable {
  public let path: String
  public let message: String

  public init(path: String, message: String) {
    self.path = path
    self.message = message
  }

  public var description: String { "\(path): \(message)" }
}

/// The element types of the safetensors format (those of the reference implementation with a
/// whole number of bytes per element).
public enum SafetensorsDType: String, Sendable, CaseIterable {
  case BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
    C64

  public var byteSize: Int {
    switch self {
    case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0: return 1
    case .I16, .U16, .F16, .BF16: return 2
    case .I32, .U32, .F32: return 4
    case .F64, .I64, .U64, .C64: return 8
    }
  }

  /// The types kvlab converts to Float32.
  public static let convertible: [SafetensorsDType] = [.F32, .F16, .BF16]
}

public struct SafetensorsTensorInfo: Sendable, Equatable {
  public let name: String
  public let dtype: SafetensorsDType
  public let shape: [Int]
  /// Byte range within the data section.
  public let dataOffsets: Range<Int>

  public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped read-only. Opening validates the whole header (length,
/// JSON, dtypes, shapes against byte spans, offsets tiling the data section) so that afterwards
/// no read can leave the mapping; tensor data is only touched when converted.
public final class SafetensorsFile: @unchecked Sendable {
  public let path: String
  /// Every tensor, in the order of the header.
  public let tensorInfos: [SafetensorsTensorInfo]
  /// Where each tensor is in `tensorInfos`.
  private let index: [String: Int]
  /// `tensorInfos` indices in the order of the data.
  private let dataOrder: [Int32]
  /// Tensor names in the order of their data.
  public var tensorNames: [String] { dataOrder.map { tensorInfos[Int($0)].name } }
  /// The `__metadata__` map (empty when absent).
  public let metadata: [String: String]
  /// Absolute offset of the data section (8 + header length).
  public let dataOffset: Int
  public let fileSize: Int

  // Immutable after init, hence @unchecked Sendable.
  private let base: UnsafeRawPointer?
  private let mappedLength: Int

  /// The reference implementation's limit on the header length.
  public static let maxHeaderLength = 100_000_000

  public init(path: String) throws {
    self.path = path
    func fail(_ message: String) -> SafetensorsError {
      SafetensorsError(path: path, message: message)
    }

    let base: UnsafeRawPointer
    let size: Int
    do {
      (base, size) = try BoundedFile.mapRegularFile(path, minimumSize: 8) {
        "file too short to be safetensors: \($0) bytes (the header length alone is 8)"
      }
    } catch let failure as BoundedFile.Failure {
      throw fail(failure.message)
    }
    do {
      let parsed = try Self.parseHeader(UnsafeRawBufferPointer(start: base, count: size))
      self.tensorInfos = parsed.infos
      self.index = parsed.index
      self.dataOrder = parsed.order
      self.metadata = parsed.metadata
      self.dataOffset = parsed.dataOffset
    } catch let message as HeaderFailure {
      munmap(UnsafeMutableRawPointer(mutating: base), size)
      throw fail(message.text)
    }
    self.base = base
    self.mappedLength = size
    self.fileSize = size
  }

  deinit {
    if let base { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }
  }

  public func hasTensor(_ name: String) -> Bool { index[name] != nil }

  /// The tensor's description, or an error naming the file and the tensor.
  public func tensor(_ name: String) throws -> SafetensorsTensorInfo {
    guard let info = index[name].map({ tensorInfos[$0] }) else {
      throw SafetensorsError(path: path, message: "no tensor named \(GGUFFile.quoted(name))")
    }
    return info
  }

  /// The tensor's raw bytes (valid while this file is alive).
  public func bytes(_ name: String) throws -> UnsafeRawBufferPointer {
    let info = try tensor(name)
    return UnsafeRawBufferPointer(
      start: base! + dataOffset + info.dataOffsets.lowerBound, count: info.dataOffsets.count)
  }

  /// Converts the tensor (F32, F16 or BF16) to Float32 into `dst`, which holds `count` floats.
  public func convert(_ name: String, into dst: UnsafeMutablePointer<Float>, count: Int) throws {
    let info = try convertibleTensor(name)
    guard count == info.elementCount else {
      throw SafetensorsError(
        path: path,
        message:
          "tensor \(GGUFFile.quoted(name)) has \(info.elementCount) elements, the destination \(count)"
      )
    }
    let src = try bytes(name)
    guard let from = src.baseAddress, count > 0 else { return }
    switch info.dtype {
    case .F32:  // unaligned in general: the header length need not be a multiple of 4
      UnsafeMutableRawPointer(dst).copyMemory(from: from, byteCount: 4 * count)
    case .F16:
      WeightFormat.f16.dequantize(from, elements: count, into: dst)
    case .BF16:
      WeightFormat.bf16.dequantize(from, elements: count, into: dst)
    default:
      preconditionFailure("checked by convertibleTensor")
    }
    releasePages(from, count: src.count)
  }

  /// Hands the mapping's whole pages within `count` bytes at `start` back to the kernel: a
  /// tensor converted to float32 is read from its copy, and its file pages would otherwise stay
  /// resident beside it (a float32 folder's load peaked at twice its weights). A later read
  /// faults them in again from the file, unchanged.
  private func releasePages(_ start: UnsafeRawPointer, count: Int) {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let first = (Int(bitPattern: start) + page - 1) / page * page
    let end = (Int(bitPattern: start) + count) / page * page
    guard page > 0, end > first, let p = UnsafeMutableRawPointer(bitPattern: first) else { return }
    madvise(p, end - first, MADV_DONTNEED)
  }

  /// The tensor as Float32 values.
  public func floats(_ name: String) throws -> [Float] {
    let info = try convertibleTensor(name)
    var out = [Float](repeating: 0, count: info.elementCount)
    try out.withUnsafeMutableBufferPointer {
      try convert(name, into: $0.baseAddress!, count: $0.count)
    }
    return out
  }

  /// The tensor as a new metered FloatBuffer.
  public func loaded(_ name: String, category: MemoryCategory, meter: MemoryMeter?) throws
    -> FloatBuffer
  {
    let info = try convertibleTensor(name)  // fail before allocating
    let buffer = FloatBuffer(
      uninitializedCount: info.elementCount, category: category, meter: meter)
    try convert(name, into: buffer.pointer, count: buffer.count)
    return buffer
  }

  /// The first tensor (in the order of the data) holding an F32, F16 or BF16 value that is not
  /// finite, with the element where; nil when every one is finite. Reads those tensors' bytes
  /// once (the scan GGUF weights get at load).
  public func firstNonFinite() -> (tensor: String, index: Int)? {
    for i in dataOrder {
      let info = tensorInfos[Int(i)]
      let storage: NonFinite.Storage
      switch info.dtype {
      case .F32: storage = .f32
      case .F16: storage = .f16
      case .BF16: storage = .bf16
      default: continue
      }
      guard let base, info.elementCount > 0 else { continue }
      let p = base + dataOffset + info.dataOffsets.lowerBound
      if let bad = NonFinite.firstIndex(in: p, count: info.elementCount, storage: storage) {
        return (info.name, bad)
      }
    }
    return nil
  }

  private func convertibleTensor(_ name: String) throws -> SafetensorsTensorInfo {
    let info = try tensor(name)
    guard SafetensorsDType.convertible.contains(info.dtype) else {
      throw SafetensorsError(
        path: path,
        message:
          "tensor \(GGUFFile.quoted(name)) is \(info.dtype.rawValue); kvlab converts F32, F16 and BF16 to float32"
      )
    }
    return info
  }

  // MARK: - header

  private struct HeaderFailure: Error { let text: String }

  private struct Parsed {
    /// In the order of the header (a name given twice: its last entry, in the first's place).
    var infos: [SafetensorsTensorInfo] = []
    var index: [String: Int] = [:]
    /// Indices into `infos` in the order of the data.
    var order: [Int32] = []
    var metadata: [String: String] = [:]
    var dataOffset = 0
  }

  private static func parseHeader(_ file: UnsafeRawBufferPointer) throws -> Parsed {
    func fail(_ m: String) -> HeaderFailure { HeaderFailure(text: m) }
    let n = UInt64(littleEndian: file.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
    guard n <= UInt64(maxHeaderLength) else {
      throw fail("header length \(n) is absurd (the format's limit is \(maxHeaderLength) bytes)")
    }
    let headerLength = Int(n)
    guard headerLength <= file.count - 8 else {
      throw fail(
        "header length \(headerLength) runs past the end of the file (\(file.count) bytes)")
    }
    let header = UnsafeRawBufferPointer(rebasing: file[8..<(8 + headerLength)])
    guard header.first == UInt8(ascii: "{") else {
      throw fail("header does not start with '{' (not a safetensors file?)")
    }
    var out = Parsed()
    out.dataOffset = 8 + headerLength
    let dataLength = file.count - out.dataOffset
    // One entry at a time, each read field by field: a header of a million entries never
    // exists as one tree, and costs one hash of its name.
    var reader = JSONReader(header)
    var infos: [SafetensorsTensorInfo] = []
    // No entry is shorter than 50 bytes (`"":{"dtype":"F32","shape":[],"data_offsets":[0,0]},`):
    // room for as many as the header could hold, so the list never grows by copying.
    infos.reserveCapacity(headerLength / 50 + 1)
    do {
      try reader.forEachMember { name, r in
        if name == "__metadata__" {
          out.metadata = try Self.metadata(try r.value())
        } else {
          infos.append(try Self.tensorInfo(name, &r, dataLength: dataLength))
        }
      }
      try reader.end()
    } catch let e as JSONParseError {
      throw fail("header is \(e.fileMessage)")
    }
    // A name given twice keeps its last entry (as a JSON object read by Python or serde_json).
    var index = [String: Int](minimumCapacity: infos.count)
    var replaced = false
    for k in infos.indices {
      if let j = index.updateValue(k, forKey: infos[k].name) {
        infos[j] = infos[k]
        index[infos[k].name] = j
        replaced = true
      }
    }
    if replaced {
      var kept: [SafetensorsTensorInfo] = []
      for (k, info) in infos.enumerated() where index[info.name] == k { kept.append(info) }
      infos = kept
      index = [:]
      for (k, info) in infos.enumerated() { index[info.name] = k }
    }
    // Sorted by offset (then by place in the header, for zero-size tensors at the same place),
    // the tensors must tile the data section: no overlap, no gap, nothing after the last one.
    var order = (0..<Int32(infos.count)).map { $0 }
    order.sort {
      let a = infos[Int($0)].dataOffsets
      let b = infos[Int($1)].dataOffsets
      return (a.lowerBound, a.upperBound, $0) < (b.lowerBound, b.upperBound, $1)
    }
    var covered = 0
    var previous: SafetensorsTensorInfo? = nil
    for k in order {
      let info = infos[Int(k)]
      let r = info.dataOffsets
      if r.lowerBound < covered, let p = previous {
        throw fail(
          "tensors \(GGUFFile.quoted(p.name)) (bytes \(p.dataOffsets.lowerBound)..<\(p.dataOffsets.upperBound)) "
            + "and \(GGUFFile.quoted(info.name)) (bytes \(r.lowerBound)..<\(r.upperBound)) overlap")
      }
      if r.lowerBound > covered {
        throw fail(
          "bytes \(covered)..<\(r.lowerBound) of the data section belong to no tensor "
            + "(the format allows no gaps)")
      }
      covered = r.upperBound
      previous = info
    }
    if covered != dataLength {
      throw fail(
        "the data section has \(dataLength - covered) bytes after the last tensor "
          + "(\(dataLength) bytes, tensors end at \(covered))")
    }
    out.infos = infos
    out.index = index
    out.order = order
    return out
  }

  private static func metadata(_ entry: JSONValue) throws -> [String: String] {
    guard let map = entry.object else {
      throw HeaderFailure(text: "__metadata__ must be an object of strings")
    }
    var out: [String: String] = [:]
    for (k, v) in map {
      guard let s = v.string else {
        throw HeaderFailure(
          text: "__metadata__ \(GGUFFile.quoted(k)) must be a string, got \(v.brief)")
      }
      out[k] = s
    }
    return out
  }

  /// One tensor's entry of the header, read from `r` (at the entry's value) and checked
  /// against the data section.
  private static func tensorInfo(_ name: String, _ r: inout JSONReader, dataLength: Int) throws
    -> SafetensorsTensorInfo
  {
    func fail(_ m: String) -> HeaderFailure { HeaderFailure(text: m) }
    var q: String { GGUFFile.quoted(name) }
    guard r.atObject() else {
      _ = try r.value()
      throw fail("tensor \(q): entry is not an object")
    }
    var dtypeField: JSONValue? = nil
    var shapeField: JSONValue? = nil
    var offsetsField: JSONValue? = nil
    var shapeInts: [Int]? = nil
    var offsetInts: [Int]? = nil
    try r.forEachMember { key, r in
      switch key {
      case "dtype": dtypeField = try r.value()
      case "shape":
        shapeInts = r.integers()
        shapeField = shapeInts == nil ? try r.value() : nil
      case "data_offsets":
        offsetInts = r.integers()
        offsetsField = offsetInts == nil ? try r.value() : nil
      default: _ = try r.value()
      }
    }
    // Plain lists of integers (every real header) need no tree.

    guard let dtypeValue = dtypeField else { throw fail("tensor \(q): no \"dtype\"") }
    guard let dtypeName = dtypeValue.string else {
      throw fail("tensor \(q): \"dtype\" must be a string, got \(dtypeValue.brief)")
    }
    guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
      throw fail("tensor \(q): unknown dtype \(GGUFFile.quoted(dtypeName))")
    }
    let shape: [Int]
    if let v = shapeInts, v.allSatisfy({ $0 >= 0 }) {
      shape = v
    } else {
      guard let shapeValue = shapeField ?? shapeInts.map({ .array($0.map { .int(Int64($0)) }) })
      else { throw fail("tensor \(q): no \"shape\"") }
      guard let dims = shapeValue.array,
        dims.allSatisfy({ ($0.int ?? -1) >= 0 && $0.bool == nil })
      else {
        throw fail(
          "tensor \(q): \"shape\" must be a list of non-negative integers, got \(shapeValue.brief)")
      }
      shape = dims.map { $0.int! }
    }
    let begin: Int
    let end: Int
    if let v = offsetInts, v.count == 2, v[0] >= 0, v[1] >= 0 {
      (begin, end) = (v[0], v[1])
    } else {
      guard let offsetsValue = offsetsField ?? offsetInts.map({ .array($0.map { .int(Int64($0)) }) })
      else { throw fail("tensor \(q): no \"data_offsets\"") }
      guard let offsets = offsetsValue.array, offsets.count == 2, let b = offsets[0].int,
        let e = offsets[1].int, b >= 0, e >= 0
      else {
        throw fail(
          "tensor \(q): \"data_offsets\" must be two non-negative integers, got \(offsetsValue.brief)"
        )
      }
      (begin, end) = (b, e)
    }
    guard begin <= end else {
      throw fail("tensor \(q): data_offsets [\(begin), \(end)] end before they begin")
    }
    var bytes = dtype.byteSize
    for d in shape {
      let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
      guard !overflow else { throw fail("tensor \(q): shape \(shape) is too large") }
      bytes = p
    }
    guard bytes == end - begin else {
      throw fail(
        "tensor \(q): shape \(shape) of \(dtype.rawValue) needs \(bytes) bytes, but data_offsets "
          + "[\(begin), \(end)] span \(end - begin)")
    }
    guard end <= dataLength else {
      throw fail(
        "tensor \(q): data_offsets [\(begin), \(end)] run past the end of the data section "
          + "(\(dataLength) bytes)")
    }
    return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
  }
}

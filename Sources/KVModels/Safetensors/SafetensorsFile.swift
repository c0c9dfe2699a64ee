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
  public let tensors: [String: SafetensorsTensorInfo]
  /// Tensor names in the order of their data.
  public let tensorNames: [String]
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
      self.tensors = parsed.tensors
      self.tensorNames = parsed.names
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

  /// The tensor's description, or an error naming the file and the tensor.
  public func tensor(_ name: String) throws -> SafetensorsTensorInfo {
    guard let info = tensors[name] else {
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
    var tensors: [String: SafetensorsTensorInfo] = [:]
    var names: [String] = []
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
    let value: JSONValue
    do {
      value = try JSONValue.parse(Data(header))
    } catch {
      throw fail("header is not valid JSON")
    }
    guard let object = value.object else { throw fail("header is not a JSON object") }

    var out = Parsed()
    out.dataOffset = 8 + headerLength
    let dataLength = file.count - out.dataOffset
    var infos: [SafetensorsTensorInfo] = []
    for (name, entry) in object {
      let q = GGUFFile.quoted(name)
      if name == "__metadata__" {
        guard let map = entry.object else {
          throw fail("__metadata__ must be an object of strings")
        }
        for (k, v) in map {
          guard let s = v.string else {
            throw fail("__metadata__ \(GGUFFile.quoted(k)) must be a string, got \(v.brief)")
          }
          out.metadata[k] = s
        }
        continue
      }
      guard let fields = entry.object else { throw fail("tensor \(q): entry is not an object") }
      guard let dtypeValue = fields["dtype"] else { throw fail("tensor \(q): no \"dtype\"") }
      guard let dtypeName = dtypeValue.string else {
        throw fail("tensor \(q): \"dtype\" must be a string, got \(dtypeValue.brief)")
      }
      guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
        throw fail("tensor \(q): unknown dtype \(GGUFFile.quoted(dtypeName))")
      }
      guard let shapeValue = fields["shape"] else { throw fail("tensor \(q): no \"shape\"") }
      guard let dims = shapeValue.array, dims.allSatisfy({ ($0.int ?? -1) >= 0 && $0.bool == nil })
      else {
        throw fail(
          "tensor \(q): \"shape\" must be a list of non-negative integers, got \(shapeValue.brief)")
      }
      let shape = dims.map { $0.int! }
      guard let offsetsValue = fields["data_offsets"] else {
        throw fail("tensor \(q): no \"data_offsets\"")
      }
      guard let offsets = offsetsValue.array, offsets.count == 2, let begin = offsets[0].int,
        let end = offsets[1].int, begin >= 0, end >= 0
      else {
        throw fail(
          "tensor \(q): \"data_offsets\" must be two non-negative integers, got \(offsetsValue.brief)"
        )
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
      infos.append(
        SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end))
    }
    // Sorted by offset (then name, for zero-size tensors at the same place), the tensors must
    // tile the data section: no overlap, no gap, nothing after the last one.
    infos.sort {
      ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound, $0.name) < (
        $1.dataOffsets.lowerBound, $1.dataOffsets.upperBound, $1.name
      )
    }
    var covered = 0
    var previous: SafetensorsTensorInfo? = nil
    for info in infos {
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
    for info in infos { out.tensors[info.name] = info }
    out.names = infos.map(\.name)
    return out
  }
}

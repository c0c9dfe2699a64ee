import Foundation
import KVTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Why a GGUF file could not be read. `description` is one line: "<path>: <message>".
public struct GGUFError: Error, CustomStringConvertible, Sendable {
  public let path: String
  public let message: String

  public init(path: String, message: String) {
    self.path = path
    self.message = message
  }

  public var description: String { "\(path): \(message)" }
}

/// Where one tensor lives in the file and what it holds.
public struct GGUFTensorInfo: Sendable, Equatable {
  public let name: String
  /// ggml order: ne0 (the fastest-varying, the row length) first. A [rows, cols] row-major
  /// matrix is stored as dims [cols, rows].
  public let dims: [Int]
  public let type: GGMLType
  /// Absolute offset of the first byte of the tensor's data in the file.
  public let offset: Int

  // Products were checked for overflow when the file was opened, so plain arithmetic is safe.
  public var elementCount: Int { dims.reduce(1, *) }
  public var byteCount: Int { elementCount / type.blockSize * type.bytesPerBlock }
  /// ne0: elements per row.
  public var rowLength: Int { dims.first ?? 1 }
  /// Product of the other dims.
  public var rowCount: Int { elementCount / rowLength }
}

/// A GGUF file, memory-mapped read-only. Opening validates the whole header, every metadata
/// entry and the tensor table against the file's length, so that afterwards no read can go past
/// the mapping; tensor data itself is only touched when dequantized.
public final class GGUFFile: @unchecked Sendable {
  public let path: String
  public let version: UInt32
  public let metadata: [String: GGUFValue]
  /// Metadata keys in file order.
  public let metadataKeys: [String]
  public let tensors: [String: GGUFTensorInfo]
  /// Tensor names in file order.
  public let tensorNames: [String]
  /// The data section's alignment (`general.alignment`, default 32).
  public let alignment: Int
  /// Absolute offset of the tensor data section.
  public let dataOffset: Int
  /// The file's length in bytes (all of it is mapped).
  public let fileSize: Int

  // Immutable after init, hence @unchecked Sendable.
  private let base: UnsafeRawPointer
  private let mappedLength: Int

  /// Arrays of arrays nest at most this deep (ggml itself allows none); deeper is refused
  /// before recursion could exhaust the stack.
  public static let maxArrayDepth = 8
  /// ggml's GGML_MAX_DIMS.
  public static let maxDims = 4

  public init(path: String) throws {
    self.path = path
    func fail(_ message: String) -> GGUFError { GGUFError(path: path, message: message) }

    let base: UnsafeRawPointer
    let size: Int
    do {
      (base, size) = try BoundedFile.mapRegularFile(path, minimumSize: GGUFReader.headerSize) {
        "file too short to be GGUF: \($0) bytes, the header alone is \(GGUFReader.headerSize)"
      }
    } catch let failure as BoundedFile.Failure {
      throw fail(failure.message)
    }

    do {
      var reader = GGUFReader(base: base, count: size)
      let parsed = try reader.parseAll()
      self.version = parsed.version
      self.metadata = parsed.metadata
      self.metadataKeys = parsed.metadataKeys
      self.tensors = parsed.tensors
      self.tensorNames = parsed.tensorNames
      self.alignment = parsed.alignment
      self.dataOffset = parsed.dataOffset
    } catch let failure as GGUFReader.Failure {
      munmap(UnsafeMutableRawPointer(mutating: base), size)
      throw fail(failure.message)
    }
    self.base = base
    self.mappedLength = size
    self.fileSize = size
  }

  deinit {
    munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
  }

  /// The tensor's description, or an error naming the file and the tensor.
  public func tensor(_ name: String) throws -> GGUFTensorInfo {
    guard let info = tensors[name] else {
      throw GGUFError(path: path, message: "no tensor named \(GGUFFile.quoted(name))")
    }
    return info
  }

  /// Dequantizes the whole tensor into `dst`, which must hold at least `elementCount` floats
  /// (only that many are written). Large tensors use all cores.
  public func dequantize(_ name: String, into dst: UnsafeMutablePointer<Float>, count: Int) throws {
    let info = try dequantizableTensor(name)
    guard count >= info.elementCount else {
      throw GGUFError(
        path: path,
        message: "tensor \(GGUFFile.quoted(name)): destination holds \(count) floats "
          + "but the tensor has \(info.elementCount) elements")
    }
    GGMLQuant.dequantizeParallel(
      info.type, from: base + info.offset, to: dst,
      blockCount: info.elementCount / info.type.blockSize)
  }

  /// Dequantizes rows `rows` (of `rowLength` elements each) into `dst`, e.g. to look up a few
  /// embedding rows without expanding the whole table.
  public func dequantizeRows(
    _ name: String, rows: Range<Int>, into dst: UnsafeMutablePointer<Float>, count: Int
  ) throws {
    let info = try dequantizableTensor(name)
    let q = GGUFFile.quoted(name)
    guard rows.lowerBound >= 0, rows.upperBound <= info.rowCount else {
      throw GGUFError(
        path: path,
        message:
          "tensor \(q): rows \(rows.lowerBound)..<\(rows.upperBound) out of 0..<\(info.rowCount)")
    }
    let needed = rows.count * info.rowLength  // ≤ elementCount, cannot overflow
    guard count >= needed else {
      throw GGUFError(
        path: path,
        message:
          "tensor \(q): destination holds \(count) floats but \(rows.count) rows need \(needed)")
    }
    let blocksPerRow = info.rowLength / info.type.blockSize
    GGMLQuant.dequantizeParallel(
      info.type,
      from: base + info.offset + rows.lowerBound * blocksPerRow * info.type.bytesPerBlock,
      to: dst, blockCount: rows.count * blocksPerRow)
  }

  /// The tensor's bytes in the mapping, valid while this file lives (a weight that reads them
  /// in place keeps the file as an owner).
  public func tensorData(_ name: String) throws -> UnsafeRawPointer {
    base + (try dequantizableTensor(name)).offset
  }

  /// The whole tensor as a new metered FloatBuffer.
  public func dequantized(_ name: String, category: MemoryCategory, meter: MemoryMeter?) throws
    -> FloatBuffer
  {
    let info = try dequantizableTensor(name)  // fail before allocating
    let buffer = FloatBuffer(count: info.elementCount, category: category, meter: meter)
    try dequantize(name, into: buffer.pointer, count: buffer.count)
    return buffer
  }

  private func dequantizableTensor(_ name: String) throws -> GGUFTensorInfo {
    let info = try tensor(name)
    guard info.type.isDequantizable else {
      throw GGUFError(
        path: path,
        message: "tensor \(GGUFFile.quoted(name)): ggml type \(info.type.name) "
          + "(\(info.type.rawValue)) cannot be dequantized (supported: "
          + GGMLType.dequantizable.map(\.name).joined(separator: ", ") + ")")
    }
    return info
  }

  /// `s` in single quotes for a one-line message: control characters escaped, long text cut.
  static func quoted(_ s: String, limit: Int = 80) -> String {
    var out = ""
    var n = 0
    for scalar in s.unicodeScalars {
      if n == limit {
        out += "…"
        break
      }
      n += 1
      switch scalar {
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "'": out += "\\'"
      case "\\": out += "\\\\"
      default:
        if scalar.value < 0x20 || scalar.value == 0x7F {
          out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return "'\(out)'"
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A contiguous, 64-byte aligned Float32 allocation that the memory meter knows about.
/// Reference type on purpose: weights and caches are shared, never copied by accident.
public final class FloatBuffer: @unchecked Sendable {
  public let pointer: UnsafeMutablePointer<Float>
  public let count: Int
  public let category: MemoryCategory
  private let meter: MemoryMeter?
  /// Whether the storage is an anonymous mapping of its own (unmapped in deinit).
  private let mapped: Bool

  /// Zero-filled weight buffers at least this big are mapped straight from the kernel, whose
  /// pages are zero already: no fill pass over the 540 MB of SmolLM2's weights at load. Only
  /// weights, which the loader writes in full at once, so resident memory is the same as with a
  /// fill; KV and activation buffers keep their pages resident from allocation on, as before.
  static let mapThreshold = 1 << 20

  /// Zero-filled storage for `count` floats, charged to `category` on `meter`.
  public init(count: Int, category: MemoryCategory, meter: MemoryMeter?) {
    precondition(count >= 0, "negative FloatBuffer size")
    let bytes = max(count, 1) * MemoryLayout<Float>.stride
    if category == .weights, bytes >= Self.mapThreshold, let raw = Self.mapZeroed(bytes) {
      pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
      mapped = true
    } else {
      let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
      pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
      pointer.initialize(repeating: 0, count: max(count, 1))
      mapped = false
    }
    self.count = count
    self.category = category
    self.meter = meter
    meter?.allocated(byteCount, as: category)
  }

  /// Storage for `count` floats whose contents are undefined until written: for buffers the
  /// caller fills completely before reading (matmul outputs with beta = 0, scratch), where a
  /// zero fill would be a wasted pass over memory. Comes from the heap, so buffers allocated
  /// every forward are reused without page faults.
  public init(uninitializedCount count: Int, category: MemoryCategory, meter: MemoryMeter?) {
    precondition(count >= 0, "negative FloatBuffer size")
    let raw = UnsafeMutableRawPointer.allocate(
      byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
    pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    mapped = false
    self.count = count
    self.category = category
    self.meter = meter
    meter?.allocated(byteCount, as: category)
  }

  private static func mapZeroed(_ bytes: Int) -> UnsafeMutableRawPointer? {
    let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
    return p
  }

  public convenience init(_ values: [Float], category: MemoryCategory, meter: MemoryMeter?) {
    self.init(uninitializedCount: values.count, category: category, meter: meter)
    values.withUnsafeBufferPointer { src in
      if let base = src.baseAddress { pointer.update(from: base, count: values.count) }
    }
  }

  public var byteCount: Int { count * MemoryLayout<Float>.stride }

  public var buffer: UnsafeMutableBufferPointer<Float> {
    UnsafeMutableBufferPointer(start: pointer, count: count)
  }

  public var array: [Float] { Array(buffer) }

  deinit {
    meter?.released(byteCount, as: category)
    if mapped {
      munmap(UnsafeMutableRawPointer(pointer), max(count, 1) * MemoryLayout<Float>.stride)
    } else {
      pointer.deallocate()
    }
  }
}

/// A row-major matrix view over a FloatBuffer: `rows × cols`, the last index fastest.
public struct Matrix: @unchecked Sendable {
  public let storage: FloatBuffer
  public let rows: Int
  public let cols: Int

  public init(rows: Int, cols: Int, category: MemoryCategory, meter: MemoryMeter?) {
    self.storage = FloatBuffer(count: rows * cols, category: category, meter: meter)
    self.rows = rows
    self.cols = cols
  }

  /// A matrix whose contents are undefined until written (see `FloatBuffer(uninitializedCount:)`).
  public init(uninitializedRows rows: Int, cols: Int, category: MemoryCategory, meter: MemoryMeter?) {
    self.storage = FloatBuffer(uninitializedCount: rows * cols, category: category, meter: meter)
    self.rows = rows
    self.cols = cols
  }

  public init(storage: FloatBuffer, rows: Int, cols: Int) {
    precondition(storage.count >= rows * cols, "Matrix larger than its storage")
    self.storage = storage
    self.rows = rows
    self.cols = cols
  }

  public var pointer: UnsafeMutablePointer<Float> { storage.pointer }
  public func row(_ r: Int) -> UnsafeMutablePointer<Float> { storage.pointer + r * cols }
}

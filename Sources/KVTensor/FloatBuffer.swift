/// A contiguous, 64-byte aligned Float32 allocation that the memory meter knows about.
/// Reference type on purpose: weights and caches are shared, never copied by accident.
public final class FloatBuffer: @unchecked Sendable {
  public let pointer: UnsafeMutablePointer<Float>
  public let count: Int
  public let category: MemoryCategory
  private let meter: MemoryMeter?

  /// Zero-filled storage for `count` floats, charged to `category` on `meter`.
  public init(count: Int, category: MemoryCategory, meter: MemoryMeter?) {
    precondition(count >= 0, "negative FloatBuffer size")
    let raw = UnsafeMutableRawPointer.allocate(
      byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
    pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    pointer.initialize(repeating: 0, count: max(count, 1))
    self.count = count
    self.category = category
    self.meter = meter
    meter?.allocated(byteCount, as: category)
  }

  public convenience init(_ values: [Float], category: MemoryCategory, meter: MemoryMeter?) {
    self.init(count: values.count, category: category, meter: meter)
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
    pointer.deallocate()
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

  public init(storage: FloatBuffer, rows: Int, cols: Int) {
    precondition(storage.count >= rows * cols, "Matrix larger than its storage")
    self.storage = storage
    self.rows = rows
    self.cols = cols
  }

  public var pointer: UnsafeMutablePointer<Float> { storage.pointer }
  public func row(_ r: Int) -> UnsafeMutablePointer<Float> { storage.pointer + r * cols }
}

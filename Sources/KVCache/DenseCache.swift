import KVModels
import KVTensor

/// The uncompressed cache: every token is kept. Storage per layer is `[kvHead][capacity][headDim]`
/// for keys and for values, so each head's keys are one contiguous matrix for the attention
/// matmuls. Nothing is allocated until the first block comes (then `initialCapacity` tokens, or
/// the block), so an empty cache holds no storage: replacing it (a budget set before anything
/// is fed) never holds two caches' storage at once. Capacity grows by 25% when full
/// (re-allocated and copied), which the meter sees as KV.
public final class DenseKVCache: KeyValueCache {
  public let layers: Int
  public let kvHeads: Int
  public let headDim: Int
  private let meter: MemoryMeter?
  private var keys: [FloatBuffer]
  private var values: [FloatBuffer]
  private var capacity: Int
  /// Rows per head the first block allocates at least.
  private let initialCapacity: Int
  /// Entries per layer (equal across layers once a block has gone through every layer).
  private var counts: [Int]
  /// Original position and origin of each cached entry (the same for every layer here).
  public private(set) var positions: [Int] = []
  public private(set) var origins: [TokenOrigin] = []

  public init(
    layers: Int, kvHeads: Int, headDim: Int, initialCapacity: Int = 256, meter: MemoryMeter?
  ) {
    self.layers = layers
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.meter = meter
    self.initialCapacity = max(1, initialCapacity)
    capacity = 0
    // No storage yet (empty buffers charge nothing): the first commit allocates it.
    keys = (0..<layers).map { _ in FloatBuffer(count: 0, category: .kv, meter: meter) }
    values = (0..<layers).map { _ in FloatBuffer(count: 0, category: .kv, meter: meter) }
    counts = Array(repeating: 0, count: layers)
  }

  public var count: Int { positions.count }
  public var capacityTokens: Int { capacity }
  public var bytesHeld: Int { 2 * layers * kvHeads * capacity * headDim * 4 }

  public func cached(layer: Int) -> CachedKV {
    CachedKV(
      keys: keys[layer].pointer, values: values[layer].pointer, count: counts[layer],
      headStride: capacity * headDim, rowStride: headDim)
  }

  public func commit(layer: Int, block: KVBlock) throws {
    let needed = counts[layer] + block.count
    if needed > capacity {
      grow(to: max(needed, capacity == 0 ? initialCapacity : capacity + capacity / 4))
    }
    let base = counts[layer]
    for g in 0..<kvHeads {
      let kDst = keys[layer].pointer + g * capacity * headDim + base * headDim
      let vDst = values[layer].pointer + g * capacity * headDim + base * headDim
      for i in 0..<block.count {
        (kDst + i * headDim).update(from: block.keys + i * block.ld + g * headDim, count: headDim)
        (vDst + i * headDim).update(from: block.values + i * block.ld + g * headDim, count: headDim)
      }
    }
    counts[layer] = needed
    if layer == layers - 1 {
      positions += block.positions
      origins += block.origins
    }
  }

  public func finishBlock() throws {}

  private func grow(to newCapacity: Int) {
    for layer in 0..<layers {
      if counts[layer] == 0 {
        // Nothing to copy: the old storage goes before the new is allocated.
        keys[layer] = FloatBuffer(count: 0, category: .kv, meter: meter)
        values[layer] = FloatBuffer(count: 0, category: .kv, meter: meter)
      }
      let used = counts[layer]
      let nk = FloatBuffer(count: kvHeads * newCapacity * headDim, category: .kv, meter: meter)
      let nv = FloatBuffer(count: kvHeads * newCapacity * headDim, category: .kv, meter: meter)
      for g in 0..<kvHeads {
        (nk.pointer + g * newCapacity * headDim).update(
          from: keys[layer].pointer + g * capacity * headDim, count: used * headDim)
        (nv.pointer + g * newCapacity * headDim).update(
          from: values[layer].pointer + g * capacity * headDim, count: used * headDim)
      }
      keys[layer] = nk
      values[layer] = nv
    }
    capacity = newCapacity
  }
}

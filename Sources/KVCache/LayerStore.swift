// BudgetedCache's storage: one layer's K/V rows and metadata, and its query window.
import KVModels
import KVTensor

/// One layer's storage: per KV head, `capacity` rows of keys and of values (`[head][row][dim]`,
/// so each head's keys are one contiguous matrix for the attention matmuls), and the metadata of
/// each held row. Every head holds the same number of rows, not necessarily the same positions.
final class LayerStore {
  var keys: FloatBuffer
  var values: FloatBuffer
  var meta: [[EntryMeta]]
  var count = 0
  /// Rows allocated per KV head (each layer has its own with a per-layer budget schedule).
  var capacity: Int

  init(kvHeads: Int, capacity: Int, headDim: Int, meter: MemoryMeter?) {
    self.capacity = capacity
    keys = FloatBuffer(count: kvHeads * capacity * headDim, category: .kv, meter: meter)
    values = FloatBuffer(count: kvHeads * capacity * headDim, category: .kv, meter: meter)
    meta = (0..<kvHeads).map { _ in
      var m: [EntryMeta] = []
      m.reserveCapacity(capacity)
      return m
    }
  }
}

/// The last `size` queries (all query heads) a layer has seen, oldest first: SnapKV's
/// observation window, carried across blocks so that a block shorter than the window (a
/// generated token) still has one.
final class QueryWindow {
  let size: Int
  let width: Int
  let rows: FloatBuffer
  var positions: [Int] = []

  init(size: Int, width: Int, meter: MemoryMeter?) {
    self.size = size
    self.width = width
    rows = FloatBuffer(count: max(1, size * width), category: .activations, meter: meter)
  }

  /// The block's last queries — or, when the block brings proxy queries, those (at negative
  /// positions: they are no entry of the cache, so the window protects nothing, and scoring
  /// lets them see every entry, as they come after the block).
  func append(_ block: KVBlock) {
    if let proxy = block.proxyQueries, block.proxyCount > 0 {
      append(
        proxy, ld: block.queryLD, count: block.proxyCount,
        positions: Self.proxyPositions(block.proxyCount))
    } else {
      append(block.queries, ld: block.queryLD, count: block.count, positions: block.positions)
    }
  }

  static func proxyPositions(_ n: Int) -> [Int] { Array(-n..<0) }

  private func append(_ queries: UnsafePointer<Float>, ld: Int, count: Int, positions new: [Int]) {
    let k = min(size, count)
    guard k > 0 else { return }
    let keep = min(positions.count, size - k)
    let drop = positions.count - keep
    if drop > 0, keep > 0 {
      (rows.pointer).update(from: rows.pointer + drop * width, count: keep * width)
    }
    positions.removeFirst(drop)
    for r in 0..<k {
      let src = count - k + r
      (rows.pointer + (keep + r) * width).update(from: queries + src * ld, count: width)
      positions.append(new[src])
    }
  }

  static func prospective(_ old: [Int], _ block: [Int], size: Int) -> [Int] {
    Array((old + block).suffix(size))
  }

  var queryRows: QueryRows {
    QueryRows(pointer: rows.pointer, ld: width, count: positions.count, positions: positions)
  }
}

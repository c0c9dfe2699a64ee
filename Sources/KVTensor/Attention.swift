import CKVKernels
import Foundation

/// One run of keys and values that queries attend to: for KV head g, row j of the keys is at
/// `keys + g·headStride + j·rowStride` (the same for values).
public struct KVSegment {
  public var keys: UnsafePointer<Float>
  public var values: UnsafePointer<Float>
  public var count: Int
  public var headStride: Int
  public var rowStride: Int
  /// Causal segments hold the queries' own block: query i sees key j only if j <= i.
  /// Non-causal segments (the cache) precede every query and are fully visible.
  public var causal: Bool

  public init(
    keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int, headStride: Int,
    rowStride: Int, causal: Bool
  ) {
    self.keys = keys
    self.values = values
    self.count = count
    self.headStride = headStride
    self.rowStride = rowStride
    self.causal = causal
  }
}

/// Grouped-query attention computed in tiles with an online softmax (the flash-attention
/// recurrence): scores exist only for one (query tile × key tile) at a time, never n × n.
/// The query heads of one KV group are stacked into one tile so each matmul is large enough
/// for BLAS to be efficient.
///
/// Work items are (KV group × query tile) pairs, run on `threads` threads with one scratch area
/// each and OpenBLAS single-threaded inside. Each item's arithmetic is fixed by the item alone,
/// so the output is bitwise the same whatever the thread count (1 included) or the order items
/// run in.
///
/// A few queries (decode) take another route: sgemm would pack K and V for a product of one
/// row, so kvlab's own kernel (`kvk_attend`) scores, softmaxes and sums the values in one pass,
/// and the keys are cut into runs of `decodeKeyRun` so that threads share one KV group's work.
/// Each run's softmax state is merged with the others' in run order: bitwise the same for any
/// thread count here too.
public struct TiledAttention {
  public let heads: Int
  public let kvHeads: Int
  public let headDim: Int
  public let queryTile: Int
  public let keyTile: Int

  public init(heads: Int, kvHeads: Int, headDim: Int, queryTile: Int = 64, keyTile: Int = 512) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of KV heads")
    self.heads = heads
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.queryTile = queryTile
    self.keyTile = keyTile
  }

  /// The tiles' two products (q·Kᵀ and p·V) in bfloat16 (`kvk_bf16_gemm`: inputs rounded to
  /// bfloat16, sums in float32), as prefill's weight products run under the bf16 kernel; set
  /// only where the CPU has AVX512-BF16. The decode route is unaffected.
  public var bfloat16Products = false

  /// Scratch floats one thread needs.
  public var scratchCount: Int {
    let g = heads / kvHeads
    let rows = g * queryTile
    let floats = rows * headDim * 2 + rows * keyTile + rows * 2
    guard bfloat16Products else { return floats }
    return floats + (bfloat16Counts(rows: rows).reduce(0, +) + 1) / 2
  }

  /// The bfloat16 products' packed operands, in 16-bit elements: the query rows, a key tile,
  /// a tile's probabilities, and its values transposed.
  private func bfloat16Counts(rows: Int) -> [Int] {
    [
      kvk_bf16_activation_count(rows, headDim), kvk_bf16_packed_count(keyTile, headDim),
      kvk_bf16_activation_count(rows, keyTile), kvk_bf16_packed_count(headDim, keyTile),
    ]
  }

  /// Scratch floats a call with `threads` threads needs (charged to the meter by the caller's
  /// allocation).
  public func scratchCount(threads: Int) -> Int { scratchCount * max(1, threads) }

  /// Below this many scores (query rows × heads × keys) a call runs on one thread: splitting
  /// costs more than it saves.
  public var parallelThreshold = 1 << 15

  /// Calls with at most this many queries take the decode route (`kvk_attend`).
  public var decodeQueries = 4
  /// Keys per work item on the decode route.
  public var decodeKeyRun = 256
  /// Below this many scores the decode route runs on one thread (it splits at a lower count
  /// than the tiles, having no packing to repeat per item).
  public var decodeParallelThreshold = 1 << 11

  /// out[i, h·d ..< (h+1)·d] = softmax(q_i,h · Kᵀ · scale) · V over every segment.
  /// `q` is `n × ldq` (head h at column h·headDim); `out` is `n × ldo`. `scratch` holds
  /// `scratchCount(threads:)` floats. `path` is the decode route's instruction set.
  public func run(
    q: UnsafePointer<Float>, ldq: Int, n: Int, segments: [KVSegment], scale: Float,
    out: UnsafeMutablePointer<Float>, ldo: Int, scratch: UnsafeMutablePointer<Float>,
    threads: Int = 1, path: KernelPath = .current
  ) {
    if n <= decodeQueries {
      return runDecode(
        q: q, ldq: ldq, n: n, segments: segments, scale: scale, out: out, ldo: ldo,
        threads: threads, path: path)
    }
    let tiles = (n + queryTile - 1) / queryTile
    let keys = segments.reduce(0) { $0 + $1.count }
    let workers = n * keys * heads >= parallelThreshold ? max(1, threads) : 1
    // Item (tile, g), latest tiles first: causal cost grows with the tile's index.
    let items = tiles * kvHeads
    let work = { (item: Int, worker: Int) in
      let tile = tiles - 1 - item / kvHeads
      runItem(
        g: item % kvHeads, i0: tile * queryTile, n: n, q: q, ldq: ldq, segments: segments,
        scale: scale, out: out, ldo: ldo, scratch: scratch + worker * scratchCount)
    }
    // BLAS single-threaded even on one worker: OpenBLAS's threaded sgemm splits the work by
    // its thread count and rounds differently, and this way the output is the same for any
    // `threads`.
    Parallel.withSingleThreadedBLAS {
      Parallel.forEach(items, threads: workers, work)
    }
  }

  /// One KV group × one query tile.
  private func runItem(
    g: Int, i0: Int, n: Int, q: UnsafePointer<Float>, ldq: Int, segments: [KVSegment],
    scale: Float, out: UnsafeMutablePointer<Float>, ldo: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    let group = heads / kvHeads
    let d = headDim
    let maxRows = group * queryTile
    let qTile = scratch
    let acc = qTile + maxRows * d
    let scores = acc + maxRows * d
    let rowMax = scores + maxRows * keyTile
    let rowSum = rowMax + maxRows

    let tq = min(queryTile, n - i0)
    let rows = group * tq
    // Stack the group's query heads: row (h·tq + i) holds query i0+i of head g·group+h.
    for h in 0..<group {
      for i in 0..<tq {
        let src = q + (i0 + i) * ldq + (g * group + h) * d
        (qTile + (h * tq + i) * d).update(from: src, count: d)
      }
    }
    // bfloat16: the scale goes into q before rounding (kvk_bf16_gemm has no alpha), and q is
    // packed once for every key tile.
    var bf16: (q: UnsafeMutablePointer<UInt16>, k: UnsafeMutablePointer<UInt16>,
      p: UnsafeMutablePointer<UInt16>, v: UnsafeMutablePointer<UInt16>)?
    if bfloat16Products {
      let counts = bfloat16Counts(rows: maxRows)
      let q = UnsafeMutableRawPointer(rowSum + maxRows).assumingMemoryBound(to: UInt16.self)
      let k = q + counts[0]
      let p = k + counts[1]
      bf16 = (q, k, p, p + counts[2])
      for x in 0..<(rows * d) { qTile[x] *= scale }
      kvk_bf16_pack_activations(qTile, rows, d, d, q)
    }
    rowMax.update(repeating: -.infinity, count: rows)
    rowSum.update(repeating: 0, count: rows)

    // The first key tile writes acc (beta 0); later ones add to it.
    var accumulated = false
    for segment in segments {
      let kBase = segment.keys + g * segment.headStride
      let vBase = segment.values + g * segment.headStride
      // Causal segment: queries i0..<i0+tq see keys 0...i0+tq-1 at most.
      let visible = segment.causal ? min(segment.count, i0 + tq) : segment.count
      var j0 = 0
      while j0 < visible {
        let tk = min(keyTile, visible - j0)
        if let bf16 {
          kvk_bf16_pack_strided(kBase + j0 * segment.rowStride, tk, d, segment.rowStride, 1, bf16.k)
          kvk_bf16_gemm(bf16.q, rows, d, bf16.k, tk, 0, (tk + 31) / 32, 0, scores, tk)
        } else {
          BLAS.sgemm(
            transB: true, m: rows, n: tk, k: d, alpha: scale, a: qTile, lda: d,
            b: kBase + j0 * segment.rowStride, ldb: segment.rowStride, c: scores, ldc: tk)
        }
        let needsMask = segment.causal && j0 + tk - 1 > i0
        for r in 0..<rows {
          let s = scores + r * tk
          // Keys j0 + j with j ≥ seen are in the query's future (causal) and get weight 0.
          var seen = tk
          if needsMask { seen = min(tk, max(0, i0 + r % tq - j0 + 1)) }
          if seen < tk { (s + seen).update(repeating: 0, count: tk - seen) }
          if seen == 0 { continue }
          let m = Swift.max(rowMax[r], SoftmaxRow.max(s, count: seen))
          let sum = SoftmaxRow.expShiftSum(s, count: seen, shift: m)
          if accumulated && rowMax[r] != -.infinity && rowMax[r] != m {
            // Rescale what was accumulated under the old maximum.
            let correction = FastMath.exp(rowMax[r] - m)
            rowSum[r] *= correction
            let a = acc + r * d
            for x in 0..<d { a[x] *= correction }
          }
          rowSum[r] += sum
          rowMax[r] = m
        }
        if let bf16 {
          kvk_bf16_pack_activations(scores, rows, tk, tk, bf16.p)
          kvk_bf16_pack_strided(vBase + j0 * segment.rowStride, d, tk, 1, segment.rowStride, bf16.v)
          kvk_bf16_gemm(bf16.p, rows, tk, bf16.v, d, 0, (d + 31) / 32, accumulated ? 1 : 0, acc, d)
        } else {
          BLAS.sgemm(
            m: rows, n: d, k: tk, a: scores, lda: tk, b: vBase + j0 * segment.rowStride,
            ldb: segment.rowStride, beta: accumulated ? 1 : 0, c: acc, ldc: d)
        }
        accumulated = true
        j0 += tk
      }
    }
    if !accumulated { acc.update(repeating: 0, count: rows * d) }
    for h in 0..<group {
      for i in 0..<tq {
        let r = h * tq + i
        let inv = rowSum[r] > 0 ? 1 / rowSum[r] : 0
        let dst = out + (i0 + i) * ldo + (g * group + h) * d
        let a = acc + r * d
        for x in 0..<d { dst[x] = a[x] * inv }
      }
    }
  }

  /// The decode route: items are (KV group × run of keys); each keeps its own softmax state
  /// (maximum, sum, unnormalised output per row), merged afterwards in run order. The states
  /// and the stacked queries are a few KiB per layer (a run's scores stay in 64 keys per row).
  private func runDecode(
    q: UnsafePointer<Float>, ldq: Int, n: Int, segments: [KVSegment], scale: Float,
    out: UnsafeMutablePointer<Float>, ldo: Int, threads: Int, path: KernelPath
  ) {
    let group = heads / kvHeads
    let d = headDim
    let rows = group * n  // row h·n + i: query i of the group's head h, as in the tiles
    // Runs of keys, segment by segment: a causal segment's keys j < n at most (query i sees
    // j <= i).
    var runs: [(segment: Int, start: Int, count: Int)] = []
    for (index, segment) in segments.enumerated() {
      let visible = segment.causal ? min(segment.count, n) : segment.count
      var start = 0
      while start < visible {
        let count = min(decodeKeyRun, visible - start)
        runs.append((index, start, count))
        start += count
      }
    }
    let keys = runs.reduce(0) { $0 + $1.count }
    let items = kvHeads * runs.count
    let workers = n * keys * heads >= decodeParallelThreshold ? max(1, threads) : 1
    let stateFloats = rows * (d + 2)
    let scoreFloats = 64 * rows
    let floats = kvHeads * rows * d + items * stateFloats + workers * scoreFloats
    withUnsafeTemporaryAllocation(of: Float.self, capacity: floats) { buffer in
      let stacked = buffer.baseAddress!
      let states = stacked + kvHeads * rows * d
      let scores = states + items * stateFloats
      for g in 0..<kvHeads {
        for h in 0..<group {
          for i in 0..<n {
            (stacked + (g * rows + h * n + i) * d).update(
              from: q + i * ldq + (g * group + h) * d, count: d)
          }
        }
      }
      withUnsafeTemporaryAllocation(of: Int.self, capacity: items * rows) { visibleBuffer in
        let visibleRows = visibleBuffer.baseAddress!
        Parallel.forEach(items, threads: workers) { item, worker in
          let g = item % kvHeads
          let run = runs[item / kvHeads]
          let segment = segments[run.segment]
          let state = states + item * stateFloats
          let m = state
          let l = m + rows
          let acc = l + rows
          m.update(repeating: -.infinity, count: rows)
          l.update(repeating: 0, count: rows)
          acc.update(repeating: 0, count: rows * d)
          var visible: UnsafeMutablePointer<Int>?
          if segment.causal {
            let v = visibleRows + item * rows
            for r in 0..<rows { v[r] = max(0, r % n + 1 - run.start) }
            visible = v
          }
          let offset = g * segment.headStride + run.start * segment.rowStride
          kvk_attend(
            path.isa, stacked + g * rows * d, rows, d, segment.keys + offset,
            segment.values + offset, run.count, segment.rowStride, scale,
            visible.map { UnsafePointer($0) }, m, l, acc,
            scores + worker * scoreFloats)
        }
      }
      // Merge each row's runs: M = max m_c, L = Σ l_c·e^(m_c − M), out = Σ acc_c·e^(m_c − M) / L.
      for g in 0..<kvHeads {
        for r in 0..<rows {
          var best = -Float.infinity
          for c in 0..<runs.count { best = Swift.max(best, states[(c * kvHeads + g) * stateFloats + r]) }
          let dst = out + (r % n) * ldo + (g * group + r / n) * d
          dst.update(repeating: 0, count: d)
          var sum: Float = 0
          for c in 0..<runs.count {
            let state = states + (c * kvHeads + g) * stateFloats
            let m = state[r]
            if m == -.infinity { continue }
            let w = FastMath.exp(m - best)
            sum += state[rows + r] * w
            let acc = state + 2 * rows + r * d
            for x in 0..<d { dst[x] += acc[x] * w }
          }
          let inv = sum > 0 ? 1 / sum : 0
          for x in 0..<d { dst[x] *= inv }
        }
      }
    }
  }
}

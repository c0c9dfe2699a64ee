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
public struct TiledAttention {
  public let heads: Int
  public let kvHeads: Int
  public let headDim: Int
  public let queryTile: Int
  public let keyTile: Int

  public init(heads: Int, kvHeads: Int, headDim: Int, queryTile: Int = 128, keyTile: Int = 256) {
    precondition(heads % kvHeads == 0, "query heads must be a multiple of KV heads")
    self.heads = heads
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.queryTile = queryTile
    self.keyTile = keyTile
  }

  /// Scratch floats one call needs (charged to the meter by the caller's allocation).
  public var scratchCount: Int {
    let g = heads / kvHeads
    let rows = g * queryTile
    return rows * headDim * 2 + rows * keyTile + rows * 3
  }

  /// out[i, h·d ..< (h+1)·d] = softmax(q_i,h · Kᵀ · scale) · V over every segment.
  /// `q` is `n × ldq` (head h at column h·headDim); `out` is `n × ldo`.
  public func run(
    q: UnsafePointer<Float>, ldq: Int, n: Int, segments: [KVSegment], scale: Float,
    out: UnsafeMutablePointer<Float>, ldo: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    let group = heads / kvHeads
    let d = headDim
    let maxRows = group * queryTile
    let qTile = scratch
    let acc = qTile + maxRows * d
    let scores = acc + maxRows * d
    let rowMax = scores + maxRows * keyTile
    let rowSum = rowMax + maxRows
    let rowCorrection = rowSum + maxRows

    for g in 0..<kvHeads {
      var i0 = 0
      while i0 < n {
        let tq = min(queryTile, n - i0)
        let rows = group * tq
        // Stack the group's query heads: row (h·tq + i) holds query i0+i of head g·group+h.
        for h in 0..<group {
          for i in 0..<tq {
            let src = q + (i0 + i) * ldq + (g * group + h) * d
            (qTile + (h * tq + i) * d).update(from: src, count: d)
          }
        }
        acc.update(repeating: 0, count: rows * d)
        rowMax.update(repeating: -.infinity, count: rows)
        rowSum.update(repeating: 0, count: rows)

        for segment in segments {
          let kBase = segment.keys + g * segment.headStride
          let vBase = segment.values + g * segment.headStride
          // Causal segment: queries i0..<i0+tq see keys 0...i0+tq-1 at most.
          let visible = segment.causal ? min(segment.count, i0 + tq) : segment.count
          var j0 = 0
          while j0 < visible {
            let tk = min(keyTile, visible - j0)
            BLAS.sgemm(
              transB: true, m: rows, n: tk, k: d, alpha: scale, a: qTile, lda: d,
              b: kBase + j0 * segment.rowStride, ldb: segment.rowStride, c: scores, ldc: tk)
            let needsMask = segment.causal && j0 + tk - 1 > i0
            for r in 0..<rows {
              let s = scores + r * tk
              if needsMask {
                let i = i0 + r % tq
                // keys j0+j with j0+j > i are in the query's future
                let firstHidden = max(0, i - j0 + 1)
                if firstHidden < tk {
                  (s + firstHidden).update(repeating: -.infinity, count: tk - firstHidden)
                }
              }
              var m = rowMax[r]
              for j in 0..<tk { m = max(m, s[j]) }
              // A row whose keys are all masked keeps m = -inf: contribute nothing.
              if m == -.infinity {
                rowCorrection[r] = 1
                s.update(repeating: 0, count: tk)
                continue
              }
              let correction = Foundation.exp(rowMax[r] - m)
              var sum: Float = 0
              for j in 0..<tk {
                let e = Foundation.exp(s[j] - m)
                s[j] = e
                sum += e
              }
              rowSum[r] = rowSum[r] * correction + sum
              rowMax[r] = m
              rowCorrection[r] = correction
            }
            for r in 0..<rows where rowCorrection[r] != 1 {
              let a = acc + r * d
              let c = rowCorrection[r]
              for x in 0..<d { a[x] *= c }
            }
            BLAS.sgemm(
              m: rows, n: d, k: tk, a: scores, lda: tk, b: vBase + j0 * segment.rowStride,
              ldb: segment.rowStride, beta: 1, c: acc, ldc: d)
            j0 += tk
          }
        }
        for h in 0..<group {
          for i in 0..<tq {
            let r = h * tq + i
            let inv = rowSum[r] > 0 ? 1 / rowSum[r] : 0
            let dst = out + (i0 + i) * ldo + (g * group + h) * d
            let a = acc + r * d
            for x in 0..<d { dst[x] = a[x] * inv }
          }
        }
        i0 += tq
      }
    }
  }
}

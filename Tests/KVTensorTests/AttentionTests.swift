import Foundation
import XCTest

@testable import KVTensor
import CKVKernels

final class AttentionTests: XCTestCase {
  /// A cached segment (`cached` entries, stored `[kvHead][capacity][d]` like DenseKVCache) and
  /// a causal block of `n` queries whose K/V sit in fused qkv rows.
  struct Case {
    var heads: Int
    var kvHeads: Int
    var d: Int
    var cached: Int
    var n: Int
    var queryTile: Int
    var keyTile: Int
  }

  struct Inputs {
    var qkv: [Float]  // n × (heads + 2·kvHeads)·d
    var cacheK: [Float]  // kvHeads × capacity × d
    var cacheV: [Float]
    var capacity: Int
  }

  func inputs(_ c: Case) -> Inputs {
    let ld = (c.heads + 2 * c.kvHeads) * c.d
    let capacity = c.cached + 3
    return Inputs(
      qkv: randomFloats(c.n * ld, seed: 11).map { $0 * 2 },
      cacheK: randomFloats(c.kvHeads * capacity * c.d, seed: 12).map { $0 * 2 },
      cacheV: randomFloats(c.kvHeads * capacity * c.d, seed: 13), capacity: capacity)
  }

  /// softmax(q·Kᵀ/√d)·V in Double, one query and head at a time.
  func reference(_ c: Case, _ x: Inputs) -> [Double] {
    let ld = (c.heads + 2 * c.kvHeads) * c.d
    let group = c.heads / c.kvHeads
    let scale = 1 / Double(c.d).squareRoot()
    var out = [Double](repeating: 0, count: c.n * c.heads * c.d)
    for i in 0..<c.n {
      for h in 0..<c.heads {
        let g = h / group
        let q = (0..<c.d).map { Double(x.qkv[i * ld + h * c.d + $0]) }
        var keys: [[Double]] = []
        var values: [[Double]] = []
        for j in 0..<c.cached {
          let base = g * x.capacity * c.d + j * c.d
          keys.append((0..<c.d).map { Double(x.cacheK[base + $0]) })
          values.append((0..<c.d).map { Double(x.cacheV[base + $0]) })
        }
        for j in 0...i {
          keys.append((0..<c.d).map { Double(x.qkv[j * ld + (c.heads + g) * c.d + $0]) })
          values.append(
            (0..<c.d).map { Double(x.qkv[j * ld + (c.heads + c.kvHeads + g) * c.d + $0]) })
        }
        let scores = keys.map { k in zip(q, k).reduce(0) { $0 + $1.0 * $1.1 } * scale }
        let m = scores.max()!
        let e = scores.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        for (w, v) in zip(e, values) {
          for t in 0..<c.d { out[(i * c.heads + h) * c.d + t] += w / s * v[t] }
        }
      }
    }
    return out
  }

  func run(
    _ c: Case, _ x: Inputs, threads: Int, path: KernelPath = .current, decodeKeyRun: Int = 256,
    bfloat16: Bool = false
  ) -> [Float] {
    var attention = TiledAttention(
      heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, queryTile: c.queryTile, keyTile: c.keyTile)
    attention.parallelThreshold = 0  // thread even the small cases
    attention.decodeParallelThreshold = 0
    attention.decodeKeyRun = decodeKeyRun
    attention.bfloat16Products = bfloat16
    let ld = (c.heads + 2 * c.kvHeads) * c.d
    var out = [Float](repeating: .nan, count: c.n * c.heads * c.d)
    var scratch = [Float](repeating: .nan, count: attention.scratchCount(threads: threads))
    x.qkv.withUnsafeBufferPointer { qkv in
      x.cacheK.withUnsafeBufferPointer { ck in
        x.cacheV.withUnsafeBufferPointer { cv in
          let q = qkv.baseAddress!
          var segments: [KVSegment] = []
          if c.cached > 0 {
            segments.append(
              KVSegment(
                keys: ck.baseAddress!, values: cv.baseAddress!, count: c.cached,
                headStride: x.capacity * c.d, rowStride: c.d, causal: false))
          }
          segments.append(
            KVSegment(
              keys: q + c.heads * c.d, values: q + (c.heads + c.kvHeads) * c.d, count: c.n,
              headStride: c.d, rowStride: ld, causal: true))
          attention.run(
            q: q, ldq: ld, n: c.n, segments: segments, scale: 1 / Float(c.d).squareRoot(),
            out: &out, ldo: c.heads * c.d, scratch: &scratch, threads: threads, path: path)
        }
      }
    }
    return out
  }

  /// The decode route (`kvk_attend`, at most `decodeQueries` queries) on every instruction set
  /// this CPU runs: head sizes that take the AVX-512 (64), AVX2 (8, 24) and portable (12)
  /// kernels, runs of keys that split the cache unevenly, 1 to 4 queries (the causal block
  /// masks all but the first's row), against Double; bitwise the same on 1, 2 and 3 threads.
  func testDecodeRouteOnEveryPathAgainstDouble() {
    let paths = [KernelPath.portable, .avx2, .avx512].filter(\.isSupported)
    XCTAssertTrue(paths.contains(.portable))
    for (heads, kvHeads, d) in [(9, 3, 64), (4, 2, 8), (6, 3, 24), (4, 1, 12)] {
      for n in 1...4 {
        for (cached, keyRun) in [(0, 256), (130, 256), (601, 256), (70, 7)] {
          let c = Case(
            heads: heads, kvHeads: kvHeads, d: d, cached: cached, n: n, queryTile: 64,
            keyTile: 256)
          let x = inputs(c)
          let ref = reference(c, x)
          for path in paths {
            let one = run(c, x, threads: 1, path: path, decodeKeyRun: keyRun)
            var worst: Double = 0
            for (a, b) in zip(one, ref) { worst = max(worst, abs(Double(a) - b)) }
            XCTAssertLessThan(worst, 2e-5, "\(c) run \(keyRun) on \(path)")
            for threads in [2, 3] {
              let t = run(c, x, threads: threads, path: path, decodeKeyRun: keyRun)
              XCTAssertTrue(t == one, "\(threads) threads differ: \(c) run \(keyRun) on \(path)")
            }
          }
        }
      }
    }
  }

  func check(_ c: Case, file: StaticString = #filePath, line: UInt = #line) {
    let x = inputs(c)
    let ref = reference(c, x)
    let one = run(c, x, threads: 1)
    var worst: Double = 0
    for (a, b) in zip(one, ref) { worst = max(worst, abs(Double(a) - b)) }
    XCTAssertLessThan(worst, 2e-5, "\(c)", file: file, line: line)
    // Threaded runs give the serial result bit for bit.
    for threads in [2, 3] {
      let t = run(c, x, threads: threads)
      XCTAssertTrue(t == one, "threads \(threads) differ: \(c)", file: file, line: line)
    }
  }

  func testCausalBlockDefaultTilesGQA() {
    check(Case(heads: 9, kvHeads: 3, d: 64, cached: 0, n: 150, queryTile: 64, keyTile: 256))
  }

  func testCachedSegmentPlusCausalBlock() {
    check(Case(heads: 9, kvHeads: 3, d: 64, cached: 70, n: 45, queryTile: 64, keyTile: 256))
  }

  func testTileEdgesSmallTiles() {
    // Key tiles smaller than query tiles: some rows see none of a key tile (fully masked).
    check(Case(heads: 6, kvHeads: 2, d: 16, cached: 37, n: 29, queryTile: 8, keyTile: 3))
    // Odd sizes everywhere: partial query and key tiles in both segments.
    check(Case(heads: 4, kvHeads: 1, d: 12, cached: 11, n: 23, queryTile: 5, keyTile: 7))
  }

  func testMultiHeadAttentionAndSingleQuery() {
    check(Case(heads: 4, kvHeads: 4, d: 8, cached: 0, n: 17, queryTile: 4, keyTile: 16))
    // Decode: one query after a cache.
    check(Case(heads: 9, kvHeads: 3, d: 64, cached: 130, n: 1, queryTile: 64, keyTile: 256))
  }

  /// The vision towers' case: n rows of fused qkv attending to one another (one non-causal
  /// segment), with query and key tiles larger than the group (one key tile: the softmax in one
  /// pass) and smaller (odd tiles), against Double; the same bits on 1, 2 and 3 threads.
  func testBidirectionalGroupInOneKeyTileAndInOddTiles() {
    let heads = 3
    let d = 16
    let n = 37
    let ld = 3 * heads * d
    let qkv = randomFloats(n * ld, seed: 21).map { $0 * 2 }
    let scale = 1 / Double(d).squareRoot()
    var reference = [Double](repeating: 0, count: n * heads * d)
    for i in 0..<n {
      for h in 0..<heads {
        let scores = (0..<n).map { j in
          (0..<d).reduce(0.0) { $0 + Double(qkv[i * ld + h * d + $1]) * Double(qkv[j * ld + (heads + h) * d + $1]) }
            * scale
        }
        let m = scores.max()!
        let e = scores.map { Foundation.exp($0 - m) }
        let sum = e.reduce(0, +)
        for j in 0..<n {
          for t in 0..<d { reference[(i * heads + h) * d + t] += e[j] / sum * Double(qkv[j * ld + (2 * heads + h) * d + t]) }
        }
      }
    }
    for (queryTile, keyTile) in [(256, 1024), (16, 40), (5, 7)] {
      var attention = TiledAttention(
        heads: heads, kvHeads: heads, headDim: d, queryTile: queryTile, keyTile: keyTile)
      attention.parallelThreshold = 0
      func run(threads: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: n * heads * d)
        var scratch = [Float](repeating: .nan, count: attention.scratchCount(threads: threads))
        qkv.withUnsafeBufferPointer { p in
          let q = p.baseAddress!
          attention.run(
            q: q, ldq: ld, n: n,
            segments: [
              KVSegment(
                keys: q + heads * d, values: q + 2 * heads * d, count: n, headStride: d,
                rowStride: ld, causal: false)
            ], scale: Float(scale), out: &out, ldo: heads * d, scratch: &scratch, threads: threads)
        }
        return out
      }
      let one = run(threads: 1)
      var worst: Double = 0
      for (a, b) in zip(one, reference) { worst = max(worst, abs(Double(a) - b)) }
      XCTAssertLessThan(worst, 2e-5, "tiles \(queryTile)x\(keyTile)")
      for threads in [2, 3] {
        XCTAssertTrue(run(threads: threads) == one, "tiles \(queryTile)x\(keyTile), \(threads) threads")
      }
    }
  }

  func testLargeScoresStayFinite() {
    // Scores of ±100s: the online softmax must rescale without overflow.
    var c = Case(heads: 2, kvHeads: 1, d: 8, cached: 20, n: 30, queryTile: 8, keyTile: 8)
    var x = inputs(c)
    x.qkv = x.qkv.map { $0 * 40 }
    x.cacheK = x.cacheK.map { $0 * 40 }
    let ref = reference(c, x)
    let out = run(c, x, threads: 2)
    var worst: Double = 0
    for (a, b) in zip(out, ref) { worst = max(worst, abs(Double(a) - b)) }
    XCTAssertLessThan(worst, 1e-4)
    c.n = 1
    _ = c
  }

  /// `kvk_bf16_pack_strided` lays out K (rows contiguous) and Vᵀ (columns contiguous) exactly
  /// as `kvk_bf16_pack_weights` lays out the same matrix copied into contiguous rows: panels
  /// cut short, odd k, rows not a multiple of 16, and a stride that is neither.
  func testStridedBFloat16PackingMatchesContiguous() throws {
    guard PrefillKernel.bf16.isSupported else { throw XCTSkip("this CPU has no avx512_bf16") }
    for (n, k) in [(64, 64), (37, 33), (16, 1024), (5, 7), (70, 96)] {
      let ld = max(n, k) + 5
      let source = randomFloats(max(n, k) * ld, seed: UInt64(n * 31 + k))
      // W[r][c] read three ways: contiguous copy, rows at stride ld, columns at stride ld.
      let byRows = (0..<n).flatMap { r in (0..<k).map { source[r * ld + $0] } }
      let byColumns = (0..<n).flatMap { r in (0..<k).map { source[$0 * ld + r] } }
      for (contiguous, rowStride, colStride, label) in [
        (byRows, ld, 1, "rows"), (byColumns, 1, ld, "columns"),
      ] {
        var expected = [UInt16](repeating: 1, count: kvk_bf16_packed_count(n, k))
        var packed = [UInt16](repeating: 2, count: kvk_bf16_packed_count(n, k))
        var row = [Float](repeating: 0, count: k)
        contiguous.withUnsafeBytes { w in
          kvk_bf16_pack_weights(KVK_F32, w.baseAddress!, n, k, &expected, &row)
        }
        source.withUnsafeBufferPointer { src in
          kvk_bf16_pack_strided(src.baseAddress!, n, k, rowStride, colStride, &packed)
        }
        XCTAssertEqual(packed, expected, "\(n)x\(k) by \(label)")
      }
    }
  }

  /// The tiles' products in bfloat16 (`bfloat16Products`, a 16-bit vision tower under the bf16
  /// kernel): within bfloat16's rounding of a Double reference, for causal and cached segments
  /// and odd tiles, and bitwise the same on 1, 2 and 3 threads.
  func testBFloat16ProductsAgainstDouble() throws {
    guard PrefillKernel.bf16.isSupported else { throw XCTSkip("this CPU has no avx512_bf16") }
    for c in [
      Case(heads: 12, kvHeads: 12, d: 64, cached: 0, n: 300, queryTile: 256, keyTile: 1024),
      Case(heads: 9, kvHeads: 3, d: 64, cached: 70, n: 45, queryTile: 16, keyTile: 40),
      Case(heads: 4, kvHeads: 1, d: 12, cached: 11, n: 23, queryTile: 5, keyTile: 7),
    ] {
      let x = inputs(c)
      let ref = reference(c, x)
      let one = run(c, x, threads: 1, bfloat16: true)
      var worst: Double = 0
      var largest: Double = 0
      for (a, b) in zip(one, ref) {
        worst = max(worst, abs(Double(a) - b))
        largest = max(largest, abs(b))
      }
      // Inputs rounded to 8 significant bits: a few 2⁻⁸ of the largest value at most.
      XCTAssertLessThan(worst, 4.0 / 256 * largest, "\(c)")
      XCTAssertGreaterThan(worst, 0, "\(c): no rounding at all means the bf16 path did not run")
      for threads in [2, 3] {
        XCTAssertTrue(
          run(c, x, threads: threads, bfloat16: true) == one, "\(threads) threads differ: \(c)")
      }
    }
  }
}

import CKVKernels

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The precisions a weight stays in once loaded (ggml's block layouts for the quantized ones).
public enum WeightFormat: Int, CaseIterable, Sendable {
  case f32 = 0, f16, bf16, q8_0, q4_0, q4_1, q4_K, q6_K

  var kernelFormat: kvk_format { kvk_format(rawValue: UInt32(rawValue)) }
  public var blockElements: Int { Int(kvk_block_elements(kernelFormat)) }
  public var blockBytes: Int { Int(kvk_block_bytes(kernelFormat)) }
  /// Bytes of one row of `cols` elements (`cols` a multiple of `blockElements`).
  public func rowBytes(cols: Int) -> Int { cols / blockElements * blockBytes }
  /// ggml's spelling: F32, Q4_1, …
  public var name: String { String(describing: self).uppercased() }

  /// `elements` values (a multiple of `blockElements`) of this format at `src` into `dst`:
  /// the portable kernels, ggml's reference values bit for bit (NaN payloads included).
  public func dequantize(_ src: UnsafeRawPointer, elements: Int, into dst: UnsafeMutablePointer<Float>) {
    kvk_dequantize_rows(KVK_SCALAR, kernelFormat, src, 1, elements, dst, elements)
  }

  /// IEEE binary16 → binary32, exact for every input (a NaN keeps its payload in place).
  public static func halfToFloat(_ h: UInt16) -> Float { kvk_half_to_float(h) }
}

/// Bytes on the heap that a weight owns (a copy it had to make), charged to the meter.
public final class WeightBytes: @unchecked Sendable {
  public let pointer: UnsafeMutableRawPointer
  public let count: Int
  private let meter: MemoryMeter?

  public init(count: Int, meter: MemoryMeter?) {
    pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
    self.count = count
    self.meter = meter
    meter?.allocated(count, as: .weights)
  }

  deinit {
    pointer.deallocate()
    meter?.released(count, as: .weights)
  }
}

/// A weight matrix W (`rows × cols`, row-major, out = x·Wᵀ) at the precision it is stored in:
/// float32 (a `Matrix`), or a stack of parts each in a `WeightFormat`, read where they lie (a
/// mapped file, or heap bytes the loader had to rearrange). Fused projections (Q|K|V, gate|up)
/// are one matrix whose parts may differ in format.
///
/// One row of x (decode) runs the fused matrix-vector kernels on the stored bytes. Several rows
/// (prefill) dequantize a tile of W into a scratch of float32 and hand it to sgemm: the scratch
/// holds at most `tileFloats`, whatever the matrix.
public final class WeightMatrix: @unchecked Sendable {
  public struct Part: @unchecked Sendable {
    public let format: WeightFormat
    public let bytes: UnsafeRawPointer
    public let rows: Int
    public init(format: WeightFormat, bytes: UnsafeRawPointer, rows: Int) {
      self.format = format
      self.bytes = bytes
      self.rows = rows
    }
  }

  public let rows: Int
  public let cols: Int
  /// The float32 storage of a dense matrix (the reference path), else nil.
  public let dense: Matrix?
  public let parts: [Part]
  /// Bytes read from a file mapping, and bytes on the heap.
  public let mappedBytes: Int
  public let heapBytes: Int
  /// Keep the storage alive (a mapped file, heap copies); the meter is charged by their owner
  /// for heap bytes and here for mapped ones.
  private let owners: [AnyObject]
  private let meter: MemoryMeter?

  /// A float32 matrix.
  public init(_ matrix: Matrix) {
    rows = matrix.rows
    cols = matrix.cols
    dense = matrix
    parts = []
    mappedBytes = 0
    heapBytes = matrix.rows * matrix.cols * MemoryLayout<Float>.stride
    owners = []
    meter = nil
  }

  /// Parts stacked row-wise; `mapped` says which of them lie in a file mapping (charged to
  /// `meter` as `.mapped` while this matrix lives). `owners` keep every part's bytes alive.
  public init(cols: Int, parts: [Part], mapped: [Bool], owners: [AnyObject], meter: MemoryMeter?) {
    precondition(parts.count == mapped.count && !parts.isEmpty)
    precondition(parts.allSatisfy { cols % $0.format.blockElements == 0 })
    self.cols = cols
    self.parts = parts
    rows = parts.reduce(0) { $0 + $1.rows }
    dense = nil
    var mappedBytes = 0
    var heapBytes = 0
    for (p, m) in zip(parts, mapped) {
      let n = p.rows * p.format.rowBytes(cols: cols)
      if m { mappedBytes += n } else { heapBytes += n }
    }
    self.mappedBytes = mappedBytes
    self.heapBytes = heapBytes
    self.owners = owners
    self.meter = meter
    meter?.allocated(mappedBytes, as: .mapped)
  }

  deinit {
    meter?.released(mappedBytes, as: .mapped)
  }

  /// The formats of the parts ("Q4_1", "F32", "Q4_1+Q8_0").
  public var formatName: String {
    guard dense == nil else { return "F32" }
    var names: [String] = []
    for p in parts where !names.contains(p.format.name) { names.append(p.format.name) }
    return names.joined(separator: "+")
  }

  /// Floats of scratch that `apply` with several rows can use for this matrix at the current
  /// thread count and prefill kernel. The integer kernel dequantizes nothing: one slice of
  /// repacked rows per thread. Otherwise room for one whole piece (see `apply`) per thread, so
  /// that each thread dequantizes its own, and at least `maxTileFloats` (the bfloat16 kernel's
  /// panels), never more than the matrix's pieces.
  public var tileFloats: Int {
    guard dense == nil else { return 0 }
    if PrefillKernel.current == .int8 && takesInt8 {
      return max(1, BLAS.threads) * Self.int8SliceFloats(cols: cols)
    }
    let pieceRows = Self.pieceRows(cols: cols, scratch: Self.pieceFloats)
    let pieces = (rows + pieceRows - 1) / pieceRows
    let room = max(Self.maxTileFloats, max(1, BLAS.threads) * pieceRows * cols)
    return min(pieces * pieceRows * cols, room)
  }

  /// The scratch of products of `rows` rows of x by any of `matrices` on the current prefill
  /// kernel (charged to `category`): nil when every matrix is float32 or the products are
  /// matrix-vector.
  public static func tiles(
    for matrices: [WeightMatrix], rows: Int, category: MemoryCategory, meter: MemoryMeter?
  ) -> FloatBuffer? {
    let floats = matrices.map(\.tileFloats).max() ?? 0
    guard rows > matvecRows, floats > 0 else { return nil }
    return FloatBuffer(uninitializedCount: floats, category: category, meter: meter)
  }

  /// The scratch the bfloat16 kernel packs into (2 MiB: a quarter of SmolLM2's gate|up, whose
  /// product is no slower in four tiles than in one); the sgemm path takes one piece a thread.
  public static let maxTileFloats = 1 << 19

  /// Row `r` of W as float32 into `dst` (`cols` floats): an embedding lookup.
  public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
    if let dense {
      dst.update(from: dense.row(r), count: cols)
      return
    }
    var first = 0
    for p in parts {
      if r < first + p.rows {
        kvk_dequantize_rows(
          KernelPath.current.isa, p.format.kernelFormat,
          p.bytes + (r - first) * p.format.rowBytes(cols: cols), 1, cols, dst, cols)
        return
      }
      first += p.rows
    }
    preconditionFailure("row \(r) out of 0..<\(rows)")
  }

  /// Rows `range` of W as float32 into `dst` (row stride `ld`), on `threads` threads.
  public func dequantizeRows(
    _ range: Range<Int>, into dst: UnsafeMutablePointer<Float>, ld: Int, threads: Int = BLAS.threads
  ) {
    if let dense {
      for r in range { (dst + (r - range.lowerBound) * ld).update(from: dense.row(r), count: cols) }
      return
    }
    let isa = KernelPath.current.isa
    var first = 0
    for p in parts {
      let lo = max(range.lowerBound, first)
      let hi = min(range.upperBound, first + p.rows)
      if lo < hi {
        let rowBytes = p.format.rowBytes(cols: cols)
        let base = p.bytes + (lo - first) * rowBytes
        let out = dst + (lo - range.lowerBound) * ld
        let cols = self.cols
        Parallel.rows(hi - lo, grain: 16, threads: threads) { chunk in
          kvk_dequantize_rows(
            isa, p.format.kernelFormat, base + chunk.lowerBound * rowBytes, chunk.count, cols,
            out + chunk.lowerBound * ld, ld)
        }
      }
      first += p.rows
    }
  }

  /// out = x·Wᵀ + beta·out for `m` rows of x (leading dimension `ldx`) into `m` rows of out
  /// (leading dimension `ldo`). `scratch` (at least `tileFloats`, needed only when m > 2)
  /// receives dequantized tiles of W.
  public func apply(
    _ x: UnsafePointer<Float>, rows m: Int, ldx: Int, beta: Float = 0,
    out: UnsafeMutablePointer<Float>, ldo: Int, scratch: FloatBuffer?
  ) {
    if let dense {
      Linear.apply(
        x, rows: m, ldx: ldx, weight: dense.pointer, outFeatures: rows, inFeatures: cols,
        beta: beta, out: out, ldo: ldo)
      return
    }
    if m <= Self.matvecRows || scratch == nil {
      for i in 0..<m { matvec(x + i * ldx, beta: beta, out: out + i * ldo) }
      return
    }
    let scratch = scratch!
    switch PrefillKernel.current {
    case .bf16 where takesBFloat16:
      applyBF16(x, rows: m, ldx: ldx, beta: beta, out: out, ldo: ldo, scratch: scratch)
      return
    case .int8 where takesInt8:
      applyInt8(x, rows: m, ldx: ldx, beta: beta, out: out, ldo: ldo, scratch: scratch)
      return
    default: break
    }
    // W in pieces of a fixed number of rows (whatever the thread count, so the sums are too):
    // the thread that takes a piece dequantizes it into its own part of the scratch and
    // multiplies by it at once, BLAS single-threaded. The rows are multiplied while they are
    // still in that core's cache, and no OpenBLAS thread shares a core with a pool helper
    // spinning between regions.
    let pieceRows = Self.pieceRows(cols: cols, scratch: scratch.count)
    let pieces = (rows + pieceRows - 1) / pieceRows
    let workers = max(1, min(BLAS.threads, scratch.count / (pieceRows * cols)))
    let rows = self.rows
    Parallel.withSingleThreadedBLAS {
      Parallel.forEach(pieces, threads: workers) { piece, worker in
        let first = piece * pieceRows
        let n = min(pieceRows, rows - first)
        let tile = scratch.pointer + worker * pieceRows * cols
        dequantizeRows(first..<(first + n), into: tile, ld: cols, threads: 1)
        BLAS.sgemm(
          transB: true, m: m, n: n, k: cols, a: x, lda: ldx, b: tile, ldb: cols, beta: beta,
          c: out + first, ldc: ldo)
      }
    }
  }

  /// Whether prefill products by W take the bfloat16 kernel when it is selected: only when no
  /// part is float32 (stored at full precision: kept so, as a dense matrix is).
  public var takesBFloat16: Bool {
    dense == nil && !parts.contains { $0.format == .f32 }
  }

  /// Whether prefill products by W take the integer kernel when it is selected: every part
  /// Q8_0, Q4_0 or Q4_1 (the formats whose blocks are integers times one scale, and an offset).
  public var takesInt8: Bool {
    dense == nil && parts.allSatisfy { [.q8_0, .q4_0, .q4_1].contains($0.format) }
  }

  /// Rows of W one prefill piece holds: up to `pieceFloats` of dequantized weights (a multiple
  /// of 16 rows when more than 16 fit), and never more than `scratch` floats.
  static func pieceRows(cols: Int, scratch: Int) -> Int {
    let fit = max(1, min(pieceFloats, scratch) / cols)
    return fit > 16 ? fit / 16 * 16 : fit
  }

  /// A piece's dequantized rows: 768 KiB, most of a Zen 4 core's L2 (1 MiB), so that the rows
  /// are still there when sgemm packs them (chosen by that reasoning; other sizes not timed).
  static let pieceFloats = 3 << 16

  /// The bfloat16 product: x rounded once, W packed tile by tile (whole panels of 32 rows of
  /// one part) into `scratch`, panels split across threads.
  private func applyBF16(
    _ x: UnsafePointer<Float>, rows m: Int, ldx: Int, beta: Float,
    out: UnsafeMutablePointer<Float>, ldo: Int, scratch: FloatBuffer
  ) {
    let cols = self.cols
    let panel = 32
    let activations = UnsafeMutablePointer<UInt16>.allocate(
      capacity: kvk_bf16_activation_count(m, cols))
    defer { activations.deallocate() }
    Parallel.rows(m, grain: 16) { chunk in
      kvk_bf16_pack_activations(
        x + chunk.lowerBound * ldx, chunk.count, cols, ldx,
        activations + chunk.lowerBound * ((cols + 1) / 2 * 2))
    }
    let packed = UnsafeMutableRawPointer(scratch.pointer).assumingMemoryBound(to: UInt16.self)
    let panelCount16 = kvk_bf16_packed_count(panel, cols)
    let tileRows = max(panel, (2 * scratch.count / panelCount16) * panel)
    var first = 0
    for p in parts {
      let rowBytes = p.format.rowBytes(cols: cols)
      let format = p.format.kernelFormat
      var done = 0
      while done < p.rows {
        let n = min(tileRows, p.rows - done)
        let panels = (n + panel - 1) / panel
        let base = p.bytes + done * rowBytes
        Parallel.rows(panels, grain: 1) { chunk in
          let r0 = chunk.lowerBound * panel
          let r1 = min(n, chunk.upperBound * panel)
          withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { row in
            kvk_bf16_pack_weights(
              format, base + r0 * rowBytes, r1 - r0, cols, packed + chunk.lowerBound * panelCount16,
              row.baseAddress!)
          }
        }
        let c = out + first + done
        Parallel.rows(panels, grain: 1) { chunk in
          kvk_bf16_gemm(
            activations, m, cols, packed, n, chunk.lowerBound, chunk.count, beta, c, ldo)
        }
        done += n
      }
      first += p.rows
    }
  }

  /// The integer product: x quantized once into int8 blocks (charged to the meter while the
  /// product runs), each part's rows split across threads in contiguous runs; each thread
  /// repacks its rows 16 at a time into its own slice of `scratch` and multiplies them by
  /// every row of x. Outputs do not depend on the split.
  private func applyInt8(
    _ x: UnsafePointer<Float>, rows m: Int, ldx: Int, beta: Float,
    out: UnsafeMutablePointer<Float>, ldo: Int, scratch: FloatBuffer
  ) {
    let cols = self.cols
    let isa = KernelPath.current.int8ProductISA
    let activations = FloatBuffer(
      uninitializedCount: (kvk_int8_activation_bytes(m, cols) + 3) / 4, category: .activations,
      meter: meter)
    kvk_int8_quantize_activations(isa, x, m, cols, ldx, activations.pointer)
    let slice = Self.int8SliceFloats(cols: cols)
    // A scratch smaller than one slice (a caller's own, not `tiles`') gets one of its own.
    let scratch =
      scratch.count >= slice
      ? scratch : FloatBuffer(uninitializedCount: slice, category: .activations, meter: meter)
    let threads = max(1, min(BLAS.threads, scratch.count / slice))
    var first = 0
    for p in parts {
      let base = p.bytes
      let format = p.format.kernelFormat
      let n = p.rows
      // Runs of whole 32-row panels (the VNNI kernel's), one a thread.
      let panels = (n + 31) / 32
      let workers = min(threads, panels)
      Parallel.forEach(workers, threads: workers) { run, _ in
        let r0 = min(n, panels * run / workers * 32)
        let r1 = min(n, panels * (run + 1) / workers * 32)
        guard r0 < r1 else { return }
        kvk_gemm_int8(
          isa, format, base, n, cols, r0, r1 - r0, activations.pointer, m, beta, out + first,
          ldo, scratch.pointer + run * slice)
      }
      first += n
    }
  }

  /// Floats of scratch one thread of the integer kernel repacks rows into (64-byte multiples).
  static func int8SliceFloats(cols: Int) -> Int { (kvk_gemm_int8_scratch(cols) + 63) / 64 * 16 }

  /// Up to this many rows of x go through the matrix-vector kernels one by one.
  public static let matvecRows = 2

  /// The same with x and out as whole matrices.
  public func apply(_ x: Matrix, beta: Float = 0, into out: Matrix, scratch: FloatBuffer?) {
    precondition(x.cols == cols && out.cols == rows && out.rows >= x.rows)
    apply(
      x.pointer, rows: x.rows, ldx: x.cols, beta: beta, out: out.pointer, ldo: out.cols,
      scratch: scratch)
  }

  /// The same with a scratch of its own for this one product, charged to `category` while
  /// it runs (a projector's, outside any loop).
  public func apply(
    _ x: Matrix, beta: Float = 0, into out: Matrix, category: MemoryCategory, meter: MemoryMeter?
  ) {
    apply(
      x, beta: beta, into: out,
      scratch: Self.tiles(for: [self], rows: x.rows, category: category, meter: meter))
  }

  /// y = W·x + beta·y for one vector, the rows of all parts split across the BLAS thread count
  /// in one parallel region (each row's dot by one thread, so the result does not depend on the
  /// split). On an integer kernel path each thread quantizes x itself (the same values whatever
  /// the split).
  private func matvec(_ x: UnsafePointer<Float>, beta: Float, out: UnsafeMutablePointer<Float>) {
    let path = KernelPath.current
    let isa = path.isa
    let kernel = path.quantizesActivations ? kvk_matvec_int8 : kvk_matvec
    let cols = self.cols
    let parts = self.parts
    let scratchCount = parts.map { kvk_matvec_scratch($0.format.kernelFormat, cols) }.max() ?? 0
    Parallel.rows(rows, grain: 64) { chunk in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: scratchCount) { scratch in
        var first = 0
        for p in parts {
          let lo = max(chunk.lowerBound, first)
          let hi = min(chunk.upperBound, first + p.rows)
          if lo < hi {
            kernel(
              isa, p.format.kernelFormat, p.bytes + (lo - first) * p.format.rowBytes(cols: cols),
              hi - lo, cols, x, beta, out + lo, scratch.baseAddress!)
          }
          first += p.rows
        }
      }
    }
  }
}

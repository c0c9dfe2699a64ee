import Foundation
import XCTest

@testable import KVTensor

/// `WeightMatrix` on every kernel path this CPU runs: the matrix-vector kernels (decode) and
/// the dequantized tiles fed to sgemm (prefill) against a double-precision product, on random
/// weights of every format and odd shapes; results independent of the thread count.
final class WeightMatrixTests: XCTestCase {
  /// Random bytes of `rows` rows in `format`, with finite scales (the f16 fields of each block
  /// set to small random halves) so every element is a real number.
  static func randomWeights(_ format: WeightFormat, rows: Int, cols: Int, seed: UInt64) -> WeightBytes {
    let bytes = WeightBytes(count: rows * format.rowBytes(cols: cols), meter: nil)
    var s = seed &* 0x9E37_79B9_7F4A_7C15 &+ 7
    func next() -> UInt64 {
      s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return s >> 16
    }
    func half(_ v: Float) -> UInt16 { Float16(v).bitPattern }
    let p = bytes.pointer
    for i in 0..<bytes.count { p.storeBytes(of: UInt8(truncatingIfNeeded: next()), toByteOffset: i, as: UInt8.self) }
    func small() -> Float { Float(Int(next() % 2001) - 1000) / 40_000 }
    let blocks = rows * cols / format.blockElements
    for b in 0..<blocks {
      let block = p + b * format.blockBytes
      switch format {
      case .f32: block.storeBytes(of: small() * 20, as: Float.self)
      case .f16: block.storeBytes(of: half(small() * 20), as: UInt16.self)
      case .bf16: block.storeBytes(of: UInt16((small() * 20).bitPattern >> 16), as: UInt16.self)
      case .q8_0, .q4_0: block.storeBytes(of: half(small()), as: UInt16.self)
      case .q4_1, .q4_K:
        block.storeBytes(of: half(small()), as: UInt16.self)
        block.storeBytes(of: half(small()), toByteOffset: 2, as: UInt16.self)
      case .q6_K: block.storeBytes(of: half(small() / 8), toByteOffset: 208, as: UInt16.self)
      }
    }
    return bytes
  }

  private func withPath<R>(_ path: KernelPath, _ body: () throws -> R) throws -> R {
    let saved = KernelPath.current
    try KernelPath.select(path)
    defer { try? KernelPath.select(saved) }
    return try body()
  }

  /// A matrix stacked from one part per format in `formats` (`rows` rows each).
  private func matrix(_ formats: [WeightFormat], rows: Int, cols: Int, seed: UInt64)
    -> (WeightMatrix, [Float])
  {
    let owned = formats.enumerated().map {
      Self.randomWeights($0.element, rows: rows, cols: cols, seed: seed + UInt64($0.offset))
    }
    let w = WeightMatrix(
      cols: cols,
      parts: zip(formats, owned).map { .init(format: $0, bytes: $1.pointer, rows: rows) },
      mapped: formats.map { _ in false }, owners: owned, meter: nil)
    // The reference values: the portable path's dequantization (checked against ggml's Python
    // reference bit for bit in WeightKernelTests).
    var values = [Float](repeating: 0, count: w.rows * cols)
    try! withPath(.portable) { w.dequantizeRows(0..<w.rows, into: &values, ld: cols) }
    return (w, values)
  }

  /// `relative`: the bound on |out − exact| as a share of Σ|w·x| (float32 sums: 1e-5; bfloat16
  /// products: each factor rounded to 8 significant bits, 2·2⁻⁸ per product, plus the sums).
  private func check(
    _ w: WeightMatrix, _ values: [Float], m: Int, scratchFloats: Int, beta: Float, label: String,
    relative: Double = 1e-5
  ) {
    let cols = w.cols
    let x = randomFloats(m * cols, seed: 99)
    let start = randomFloats(m * w.rows, seed: 5)
    var out = start
    let scratch = FloatBuffer(count: scratchFloats, category: .activations, meter: nil)
    w.apply(x, rows: m, ldx: cols, beta: beta, out: &out, ldo: w.rows, scratch: scratch)
    for i in 0..<m {
      for r in 0..<w.rows {
        var exact = Double(beta) * Double(start[i * w.rows + r])
        var magnitude = 0.0
        for c in 0..<cols {
          let p = Double(values[r * cols + c]) * Double(x[i * cols + c])
          exact += p
          magnitude += abs(p)
        }
        let got = Double(out[i * w.rows + r])
        // The integer paths' matrix-vector products see x quantized: on top of float rounding,
        // at most the activation quantization error (see `Self.int8Bound`).
        var bound = relative * max(magnitude, 1)
        if quantizesX(w, m: m) {
          let b = Self.int8Bound(
            w, row: r, values: values[(r * cols)..<((r + 1) * cols)], x: x[(i * cols)..<((i + 1) * cols)])
          bound = b.quantization + relative * max(b.terms, 1)
        }
        if abs(got - exact) > bound {
          XCTFail("\(label) m=\(m) row \(i) col \(r): \(got) vs \(exact)")
          return
        }
      }
    }
  }

  /// Whether `apply` with `m` rows of x quantizes x on W: the integer matrix-vector kernels,
  /// or the integer prefill kernel.
  private func quantizesX(_ w: WeightMatrix, m: Int) -> Bool {
    if m <= WeightMatrix.matvecRows {
      return KernelPath.current.quantizesActivations
        && w.parts.contains { [.q8_0, .q4_0, .q4_1].contains($0.format) }
    }
    return PrefillKernel.current == .int8 && w.takesInt8
  }

  /// Bounds for the integer path's dot of row `r` (its dequantized `values`) with x, whose
  /// blocks of 32 go as x̃ = dx·xq with dx = max|x|/127 and |x - x̃| ≤ dx/2 per element:
  /// - `quantization`: |Σ w·x̃ - Σ w·x| ≤ Σ_blocks dx/2 · Σ|w| (the integer sums are exact, so
  ///   Σ w·x̃ is what the kernels compute but for float rounding);
  /// - `terms`: Σ_blocks Σ (|w| + 2|m|)·(|x| + dx/2) ≥ Σ of the magnitudes of the float terms
  ///   each path rounds and adds (d·q·x̃ and Q4_1's m·x̃ separately, |d·q| ≤ |w| + |m|), which
  ///   scales their rounding errors.
  static func int8Bound(
    _ w: WeightMatrix, row r: Int, values: ArraySlice<Float>, x: ArraySlice<Float>
  ) -> (quantization: Double, terms: Double) {
    var first = 0
    var part = w.parts[0]
    for p in w.parts {
      part = p
      if r < first + p.rows { break }
      first += p.rows
    }
    let v = Array(values), x = Array(x)
    guard [.q8_0, .q4_0, .q4_1].contains(part.format) else {
      let t = zip(v, x).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
      return (0, t)
    }
    let row = part.bytes + (r - first) * part.format.rowBytes(cols: w.cols)
    var quantization = 0.0, terms = 0.0
    for b in 0..<(w.cols / 32) {
      let dx = Double(x[(32 * b)..<(32 * b + 32)].map { abs($0) }.max()!) / 127
      let m = part.format == .q4_1
        ? abs(Double(Float(Float16(bitPattern: row.load(fromByteOffset: b * 20 + 2, as: UInt16.self)))))
        : 0
      for j in (32 * b)..<(32 * b + 32) {
        quantization += dx / 2 * abs(Double(v[j]))
        terms += (abs(Double(v[j])) + 2 * m) * (abs(Double(x[j])) + dx / 2)
      }
    }
    return (quantization, terms)
  }

  /// The integer kernels of every path this CPU runs against the portable integer reference:
  /// the same int32 sums of the same quantized x, so they differ only by the rounding of the
  /// float scaling and accumulation, (2·blocks + 24)·2⁻²⁴ of the terms' magnitude for each
  /// (a sum of n terms errs by at most (n-1)·u·Σ|t|; the SIMD paths add 8 lanes per block
  /// pair per row and reduce 16 lanes). One quantized x value off by one would differ by
  /// |w|·dx, far more. Odd block counts (the vector kernels' half pair), and Q8_0 rows of
  /// -128 against x quantized to ±127 (VPMADDUBSW's largest pair sums).
  func testIntegerKernelsOnEveryPathAgreeWithThePortableReference() throws {
    let paths = KernelPath.allCases.filter { $0.quantizesActivations && $0.isSupported }
    XCTAssertTrue(paths.contains(.portableInt8))
    for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
      for cols in [32, 64, 96, 544, 576, 1536] {
        for rows in [1, 3, 5, 67] {
          let (w, unmodified) = matrix([format], rows: rows, cols: cols, seed: UInt64(rows * cols + 1))
          if format == .q8_0 {
            // Row 0 all -128; x below has blocks whose largest element is positive.
            for b in 0..<(cols / 32) {
              for j in 0..<32 {
                UnsafeMutableRawPointer(mutating: w.parts[0].bytes).storeBytes(
                  of: Int8(-128), toByteOffset: b * 34 + 2 + j, as: Int8.self)
              }
            }
          }
          var values = unmodified
          try withPath(.portable) { w.dequantizeRows(0..<w.rows, into: &values, ld: cols) }
          var x = randomFloats(cols, seed: UInt64(cols))
          for b in stride(from: 0, to: cols, by: 64) { for j in b..<min(b + 32, cols) { x[j] = 0.75 } }
          if cols >= 96 { for j in 32..<64 { x[j] = 0 } }  // a block of zeros: dx = 0
          let start = randomFloats(rows, seed: 3)
          func run(_ path: KernelPath, beta: Float) throws -> [Float] {
            try withPath(path) {
              var out = start
              w.apply(x, rows: 1, ldx: cols, beta: beta, out: &out, ldo: rows, scratch: nil)
              return out
            }
          }
          for beta: Float in [0, 1] {
            let reference = try run(.portableInt8, beta: beta)
            for path in paths where path != .portableInt8 {
              let got = try run(path, beta: beta)
              for r in 0..<rows {
                let b = Self.int8Bound(
                  w, row: r, values: values[(r * cols)..<((r + 1) * cols)], x: x[...])
                let blocks = Double(cols / 32)
                let gamma: Double = 2 * (2 * blocks + 24) * 0x1p-24
                let bound: Double = gamma * b.terms + Double(beta) * 0x1p-23 * Double(abs(start[r]))
                let diff: Double = abs(Double(got[r]) - Double(reference[r]))
                XCTAssertLessThanOrEqual(
                  diff, bound,
                  "\(path) \(format.name) \(rows)x\(cols) beta \(beta) row \(r)")
              }
            }
          }
        }
      }
    }
  }

  func testEveryFormatAndPathAgainstDoublePrecision() throws {
    let shapes: [WeightFormat: [Int]] = [
      // f16/bf16 rows of a multiple of 8 go four rows at a time on AVX2 (24, 200: an 8-wide tail)
      .f32: [1, 7, 33, 100], .f16: [1, 17, 33, 64, 100, 200], .bf16: [3, 16, 24, 47],
      .q8_0: [32, 96, 544], .q4_0: [32, 160], .q4_1: [32, 96, 576], .q4_K: [256, 512],
      .q6_K: [256, 768],
    ]
    for path in KernelPath.allCases where path.isSupported {
      try withPath(path) {
        for (format, widths) in shapes {
          for cols in widths {
            for rows in [1, 3, 5, 67] {
              let (w, values) = matrix([format], rows: rows, cols: cols, seed: UInt64(rows * cols))
              for m in [1, 2, 5] {
                for beta: Float in [0, 1] {
                  check(
                    w, values, m: m, scratchFloats: max(cols, 2 * cols), beta: beta,
                    label: "\(path) \(format.name) \(rows)x\(cols)")
                }
              }
            }
          }
        }
      }
    }
  }

  /// Block scales across the whole f16 range (subnormals, the largest finite, both signs), which
  /// the vector paths read through a table of every f16's float, against double precision.
  func testBlockScalesAcrossTheHalfRange() throws {
    let scales: [UInt16] = [
      0x0001, 0x03FF, 0x0400, 0x1C00, 0x3C00, 0x7BFF, 0x8001, 0x83FF, 0xBC00, 0xFBFF, 0x2E66, 0xA3D7,
    ]
    for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
      let (w, _) = matrix([format], rows: 13, cols: 96, seed: 21)
      let p = UnsafeMutableRawPointer(mutating: w.parts[0].bytes)  // the test's own bytes
      for b in 0..<(13 * 96 / 32) {
        p.storeBytes(of: scales[b % scales.count], toByteOffset: b * format.blockBytes, as: UInt16.self)
        if format == .q4_1 {
          p.storeBytes(of: scales[(b + 5) % scales.count], toByteOffset: b * 20 + 2, as: UInt16.self)
        }
      }
      var values = [Float](repeating: 0, count: w.rows * 96)
      try withPath(.portable) { w.dequantizeRows(0..<w.rows, into: &values, ld: 96) }
      for path in KernelPath.allCases where path.isSupported {
        try withPath(path) {
          check(w, values, m: 3, scratchFloats: 2 * 96, beta: 0, label: "\(path) \(format.name) scales")
          check(w, values, m: 1, scratchFloats: 0, beta: 1, label: "\(path) \(format.name) scales")
        }
      }
    }
  }

  func testStackedPartsOfDifferentFormatsAndSmallTiles() throws {
    for path in KernelPath.allCases where path.isSupported {
      try withPath(path) {
        let (w, values) = matrix([.q4_1, .q8_0, .f16, .q4_0], rows: 9, cols: 64, seed: 3)
        XCTAssertEqual(w.rows, 36)
        XCTAssertEqual(w.formatName, "Q4_1+Q8_0+F16+Q4_0")
        // Tiles of 1, 5 and all rows: tile edges inside and across parts.
        for tile in [1, 5, 36] {
          check(w, values, m: 4, scratchFloats: tile * 64, beta: 1, label: "\(path) tile \(tile)")
        }
        check(w, values, m: 1, scratchFloats: 0, beta: 0, label: "\(path) matvec")
        // Pieces of 80 rows of 2304 across parts, three at once on two threads.
        let (wide, wideValues) = matrix([.q4_1, .q8_0], rows: 150, cols: 2304, seed: 13)
        withBLASThreads(2) {
          check(
            wide, wideValues, m: 5, scratchFloats: 3 * 80 * 2304, beta: 1,
            label: "\(path) pieces of 80 rows, 2 threads")
        }
      }
    }
  }

  func testBFloat16PrefillKernelAgainstDoublePrecision() throws {
    guard PrefillKernel.bf16.isSupported else {
      XCTAssertThrowsError(try PrefillKernel.select(.bf16))
      throw XCTSkip("this CPU has no avx512_bf16")
    }
    defer { try? PrefillKernel.select(.sgemm) }
    try PrefillKernel.select(.bf16)
    let bound = 2.0 / 256 + 1e-5
    // Panels cut short (n not a multiple of 32), odd k, row counts around the 8-row block,
    // tiles of one panel and of several, parts of different formats, beta 0 and 1.
    for (formats, rows, cols) in [
      ([WeightFormat.q4_1], 67, 96), ([.q8_0, .q4_0], 40, 64), ([.f16], 5, 33), ([.f16, .bf16], 33, 17),
      ([.q4_K], 32, 256), ([.q6_K, .q4_1], 19, 256), ([.q4_1], 40, 800), ([.bf16], 9, 385),
    ] {
      let (w, values) = matrix(formats, rows: rows, cols: cols, seed: UInt64(rows + cols))
      XCTAssertTrue(w.takesBFloat16, w.formatName)
      for m in [3, 8, 9, 21] {
        for scratch in [32 * ((cols + 1) / 2), w.rows * cols + 64 * cols] {
          check(
            w, values, m: m, scratchFloats: scratch, beta: Float(m % 2),
            label: "bf16 \(w.formatName) \(w.rows)x\(cols) scratch \(scratch)", relative: bound)
        }
      }
      // The same products on 1 and 2 threads, bit for bit.
      let x = randomFloats(9 * cols, seed: 8)
      func run(_ threads: Int) -> [UInt32] {
        withBLASThreads(threads) {
          var out = [Float](repeating: 0, count: 9 * w.rows)
          let scratch = FloatBuffer(count: 32 * ((cols + 1) / 2), category: .activations, meter: nil)
          w.apply(x, rows: 9, ldx: cols, out: &out, ldo: w.rows, scratch: scratch)
          return out.map(\.bitPattern)
        }
      }
      XCTAssertEqual(run(1), run(2), "bf16 \(w.formatName): threads")
    }
  }

  func testResultsDoNotDependOnTheThreadCount() throws {
    for path in KernelPath.allCases where path.isSupported {
      try withPath(path) {
        let (w, _) = matrix([.q4_1, .q8_0, .q4_0, .f16], rows: 301, cols: 576, seed: 11)
        let x = randomFloats(3 * 576, seed: 4)
        func run(_ m: Int, threads: Int) -> [UInt32] {
          withBLASThreads(threads) {
            var out = [Float](repeating: 0, count: m * w.rows)
            let scratch = FloatBuffer(count: w.tileFloats, category: .activations, meter: nil)
            w.apply(x, rows: m, ldx: 576, out: &out, ldo: w.rows, scratch: scratch)
            return out.map(\.bitPattern)
          }
        }
        for m in [1, 3] {
          XCTAssertEqual(run(m, threads: 1), run(m, threads: 2), "\(path) m=\(m)")
          XCTAssertEqual(run(m, threads: 2), run(m, threads: 2), "\(path) m=\(m) repeated")
        }
        // Rows of 2304: pieces of 80 rows (the last one 61), room for three in the scratch,
        // threads taking them in any order: the same bits on 1, 2 and 3 threads.
        let (wide, _) = matrix([.q4_1, .q8_0], rows: 301, cols: 2304, seed: 12)
        XCTAssertEqual(WeightMatrix.pieceRows(cols: 2304, scratch: 3 * 80 * 2304), 80)
        let x7 = randomFloats(7 * 2304, seed: 6)
        func pieces(threads: Int) -> [UInt32] {
          withBLASThreads(threads) {
            var out = [Float](repeating: 0, count: 7 * wide.rows)
            let scratch = FloatBuffer(count: 3 * 80 * 2304, category: .activations, meter: nil)
            wide.apply(x7, rows: 7, ldx: 2304, out: &out, ldo: wide.rows, scratch: scratch)
            return out.map(\.bitPattern)
          }
        }
        XCTAssertEqual(pieces(threads: 1), pieces(threads: 2), "\(path) pieces, 2 threads")
        XCTAssertEqual(pieces(threads: 1), pieces(threads: 3), "\(path) pieces, 3 threads")
      }
    }
  }

  /// The integer prefill kernel on every path this CPU runs, against double precision within
  /// the activation quantization's bound: parts of each integer format, row counts that cut the
  /// 16- and 32-row panels short, row counts of x around the register tiles, beta 0 and 1. Its
  /// outputs are the same bits on 1, 2 and 3 threads, and on the AVX2 and AVX-512 paths (the
  /// latter VPDPBUSD where the CPU has AVX512_VNNI); matrices with another format keep sgemm.
  func testInt8PrefillKernelAgainstDoublePrecision() throws {
    defer { try? PrefillKernel.select(.sgemm) }
    try PrefillKernel.select(.int8)
    let shapes: [([WeightFormat], Int, Int)] = [
      ([.q4_1], 67, 96), ([.q8_0, .q4_0], 40, 64), ([.q4_1, .q8_0], 19, 800), ([.q4_0], 33, 32),
    ]
    var byPath: [KernelPath: [[UInt32]]] = [:]
    for path in KernelPath.allCases where path.isSupported {
      try withPath(path) {
        for (formats, rows, cols) in shapes {
          let (w, values) = matrix(formats, rows: rows, cols: cols, seed: UInt64(rows * cols))
          XCTAssertTrue(w.takesInt8, w.formatName)
          for m in [3, 4, 7, 21] {
            check(
              w, values, m: m, scratchFloats: w.tileFloats, beta: Float(m % 2),
              label: "int8 \(path) \(w.formatName) \(w.rows)x\(cols)")
          }
          let x = randomFloats(9 * cols, seed: 8)
          func run(_ threads: Int) -> [UInt32] {
            withBLASThreads(threads) {
              var out = [Float](repeating: 0, count: 9 * w.rows)
              let scratch = FloatBuffer(
                count: max(w.tileFloats, WeightMatrix.maxTileFloats), category: .activations,
                meter: nil)
              w.apply(x, rows: 9, ldx: cols, out: &out, ldo: w.rows, scratch: scratch)
              return out.map(\.bitPattern)
            }
          }
          let one = run(1)
          XCTAssertEqual(one, run(2), "int8 \(path) \(w.formatName): 2 threads")
          XCTAssertEqual(one, run(3), "int8 \(path) \(w.formatName): 3 threads")
          byPath[path, default: []].append(one)
        }
      }
    }
    if let avx2 = byPath[.avx2], let avx512 = byPath[.avx512] {
      XCTAssertEqual(avx2, avx512, "the AVX-512 path (VNNI where the CPU has it) is AVX2's bits")
    }
    // Other formats, alone or beside an integer one, keep sgemm bit for bit.
    let cols = 256
    let x = randomFloats(9 * cols, seed: 6)
    func run(_ w: WeightMatrix, _ kernel: PrefillKernel) throws -> [UInt32] {
      try PrefillKernel.select(kernel)
      var out = [Float](repeating: 0, count: 9 * w.rows)
      let scratch = FloatBuffer(count: w.tileFloats, category: .activations, meter: nil)
      w.apply(x, rows: 9, ldx: cols, out: &out, ldo: w.rows, scratch: scratch)
      return out.map(\.bitPattern)
    }
    for formats in [[WeightFormat.q4_K], [.q6_K, .q4_1], [.f16], [.q4_1, .f32]] {
      let (w, _) = matrix(formats, rows: 24, cols: cols, seed: 3)
      XCTAssertFalse(w.takesInt8, w.formatName)
      XCTAssertEqual(try run(w, .sgemm), try run(w, .int8), "\(w.formatName) keeps sgemm")
    }
    let (q, _) = matrix([.q4_1], rows: 24, cols: cols, seed: 4)
    XCTAssertNotEqual(try run(q, .sgemm), try run(q, .int8), "Q4_1 takes the integer kernel")
  }

  /// Float32 weights (a dense matrix, F32 parts alone or beside others) keep the sgemm product
  /// bit for bit when bf16 is selected; a Q4_1 matrix does not (so the comparison can fail).
  func testFloat32WeightsNeverTakeTheBFloat16Kernel() throws {
    guard PrefillKernel.bf16.isSupported else { throw XCTSkip("this CPU has no avx512_bf16") }
    defer { try? PrefillKernel.select(.sgemm) }
    let cols = 96
    let dense = Matrix(rows: 40, cols: cols, category: .weights, meter: nil)
    let denseValues = randomFloats(40 * cols, seed: 3)
    dense.pointer.update(from: denseValues, count: denseValues.count)
    let cases: [(WeightMatrix, Bool)] = [
      (WeightMatrix(dense), false),
      (matrix([.f32], rows: 40, cols: cols, seed: 1).0, false),
      (matrix([.q4_1, .f32], rows: 20, cols: cols, seed: 2).0, false),
      (matrix([.q4_1], rows: 40, cols: cols, seed: 4).0, true),
      (matrix([.f16, .bf16], rows: 20, cols: cols, seed: 5).0, true),
    ]
    let x = randomFloats(9 * cols, seed: 6)
    for (w, takes) in cases {
      XCTAssertEqual(w.takesBFloat16, takes, w.formatName)
      func run(_ kernel: PrefillKernel) throws -> [UInt32] {
        try PrefillKernel.select(kernel)
        var out = [Float](repeating: 0, count: 9 * w.rows)
        let scratch = FloatBuffer(
          count: max(w.tileFloats, WeightMatrix.maxTileFloats), category: .activations, meter: nil)
        w.apply(x, rows: 9, ldx: cols, out: &out, ldo: w.rows, scratch: scratch)
        return out.map(\.bitPattern)
      }
      if takes {
        XCTAssertNotEqual(try run(.sgemm), try run(.bf16), "\(w.formatName) takes bf16")
      } else {
        XCTAssertEqual(try run(.sgemm), try run(.bf16), "\(w.formatName) keeps sgemm")
      }
    }
  }

  /// `auto` as a function of the CPU's features, and how a choice resolves (named, auto, auto
  /// under a recording's scope).
  func testPrefillKernelChoice() throws {
    let zen4 = ["avx2", "avx512", "avx512_vnni", "avx512_bf16"]
    XCTAssertEqual(PrefillKernel.automatic(features: zen4), .bf16)
    XCTAssertEqual(PrefillKernel.automatic(features: zen4 + ["amx"]), .bf16)
    XCTAssertEqual(PrefillKernel.automatic(features: ["avx2", "avx512", "avx512_vnni"]), .int8)
    XCTAssertEqual(PrefillKernel.automatic(features: ["avx2"]), .int8)
    XCTAssertEqual(PrefillKernel.automatic(features: []), .sgemm)
    XCTAssertTrue(PrefillKernel.int8.isSupported, "the portable integer kernel runs anywhere")
    XCTAssertEqual(
      PrefillKernel.automatic, PrefillKernel.automatic(features: KernelPath.cpuFeatures))

    XCTAssertEqual(try PrefillKernel.parse("auto"), .auto)
    XCTAssertEqual(try PrefillKernel.parse("sgemm"), .named(.sgemm))
    XCTAssertEqual(try PrefillKernel.parse("bf16"), .named(.bf16))
    XCTAssertEqual(try PrefillKernel.parse("int8"), .named(.int8))
    XCTAssertThrowsError(try PrefillKernel.parse("int4")) {
      XCTAssertEqual("\($0)", "unknown prefill kernel 'int4' (auto, sgemm, bf16, int8)")
    }
    if !PrefillKernel.bf16.isSupported {
      XCTAssertThrowsError(try PrefillKernel.select(.bf16)) {
        XCTAssertEqual(
          "\($0)", "prefill kernel 'bf16' needs avx512_bf16, which this CPU does not have")
      }
    }

    defer { try? PrefillKernel.select(.sgemm) }
    try PrefillKernel.select(.auto)
    XCTAssertEqual(PrefillKernel.choice, .auto)
    XCTAssertEqual(PrefillKernel.current, PrefillKernel.automatic)
    XCTAssertFalse(PrefillKernel.isPinnedToReference)
    PrefillKernel.withReferenceUnlessNamed {
      XCTAssertEqual(PrefillKernel.current, .sgemm)
      XCTAssertTrue(PrefillKernel.isPinnedToReference)
      PrefillKernel.withReferenceUnlessNamed { XCTAssertEqual(PrefillKernel.current, .sgemm) }
      XCTAssertEqual(PrefillKernel.current, .sgemm, "an inner scope's end keeps the outer one")
    }
    XCTAssertEqual(PrefillKernel.current, PrefillKernel.automatic)
    // A named kernel holds inside the scope too.
    let named = PrefillKernel.automatic
    try PrefillKernel.select(named)
    PrefillKernel.withReferenceUnlessNamed {
      XCTAssertEqual(PrefillKernel.current, named)
      XCTAssertFalse(PrefillKernel.isPinnedToReference)
    }
  }

  func testDenseMatrixKeepsTheFloat32Path() {
    let m = Matrix(rows: 3, cols: 4, category: .weights, meter: nil)
    for i in 0..<12 { m.pointer[i] = Float(i) }
    let w = WeightMatrix(m)
    XCTAssertEqual(w.formatName, "F32")
    XCTAssertEqual(w.tileFloats, 0)
    var out = [Float](repeating: 0, count: 3)
    w.apply([1, 1, 1, 1], rows: 1, ldx: 4, out: &out, ldo: 3, scratch: nil)
    XCTAssertEqual(out, [6, 22, 38])
  }

  func testKernelPathSelection() throws {
    XCTAssertTrue(KernelPath.portable.isSupported)
    XCTAssertEqual(try KernelPath.parse("auto"), KernelPath.best)
    XCTAssertThrowsError(try KernelPath.parse("sse9")) {
      XCTAssertEqual("\($0)", "unknown kernel path 'sse9' (auto, portable, avx2, avx512, portable-int8, avx2-int8, avx512vnni)")
    }
    for path in KernelPath.allCases where !path.isSupported {
      XCTAssertThrowsError(try KernelPath.select(path)) {
        XCTAssertTrue("\($0)".contains("which this CPU does not have"), "\($0)")
      }
    }
    // A forced OpenBLAS kernel the CPU cannot run is refused before it could raise SIGILL.
    XCTAssertThrowsError(try BLASCore.checkForced("SkylakeX", cpuinfo: "flags\t: sse3 avx avx2 fma")) {
      XCTAssertEqual(
        "\($0)", "OpenBLAS kernel SkylakeX needs avx512f, avx512bw, avx512vl, which this CPU does not have")
    }
    XCTAssertNoThrow(try BLASCore.checkForced("Haswell", cpuinfo: "flags\t: sse3 avx avx2 fma"))
    XCTAssertThrowsError(try BLASCore.checkForced("Skylake", cpuinfo: "flags\t: avx2"))
    // The widest path includes the narrower ones.
    if KernelPath.avx512.isSupported { XCTAssertTrue(KernelPath.avx2.isSupported) }
    if KernelPath.avx512vnni.isSupported { XCTAssertTrue(KernelPath.avx512.isSupported) }
    XCTAssertEqual(try KernelPath.parse("avx2-int8"), .avx2Int8)
    XCTAssertEqual(KernelPath.allCases.filter(\.quantizesActivations), [.portableInt8, .avx2Int8, .avx512vnni])
  }
}

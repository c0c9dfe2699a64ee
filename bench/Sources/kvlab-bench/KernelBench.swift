// `kvlab-bench --kernels`: micro-benchmarks of the decoder's BLAS shapes, to choose how the
// forward threads its matmuls. Each variant runs interleaved with the others, best of N.
import Foundation
import KVTensor

enum KernelBench {
  static func time(_ body: () -> Void) -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
  }

  /// CPU time of the process so far (all threads).
  static func processCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
  }

  static func buffer(_ n: Int, seed: UInt64) -> FloatBuffer {
    let b = FloatBuffer(uninitializedCount: n, category: .activations, meter: nil)
    var s = seed
    for i in 0..<n {
      s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      b.pointer[i] = Float(Int64(bitPattern: s >> 11) % 2001 - 1000) / 1000
    }
    return b
  }

  /// C = A·Wᵀ with W's rows split across `threads` Dispatch threads, BLAS single-threaded.
  static func splitGemm(
    a: UnsafePointer<Float>, w: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, threads: Int
  ) {
    Parallel.withSingleThreadedBLAS {
      Parallel.rows(n / 16, threads: threads) { range in
        let lo = range.lowerBound * 16
        let hi = range.upperBound == n / 16 ? n : range.upperBound * 16
        BLAS.sgemm(
          transB: true, m: m, n: hi - lo, k: k, a: a, lda: k, b: w + lo * k, ldb: k, c: c + lo,
          ldc: n)
      }
    }
  }

  /// Causal self-attention of n tokens (SmolLM2 shapes: 9 heads, 3 KV heads, d = 64) with
  /// several tile sizes, one thread and `threads` threads.
  static func attention(n: Int, threads: Int, repeats: Int) {
    let heads = 9
    let kvHeads = 3
    let d = 64
    let ld = (heads + 2 * kvHeads) * d
    let qkv = buffer(n * ld, seed: 5)
    let out = FloatBuffer(count: n * heads * d, category: .activations, meter: nil)
    // exact causal work: QKᵀ and PV, 2 flops per multiply-add
    let gflop = 4 * Double(heads * d) * Double(n * (n + 1) / 2) / 1e9
    for (qt, kt) in [(32, 256), (64, 256), (128, 256), (64, 128), (64, 512), (96, 256)] {
      let attention = TiledAttention(heads: heads, kvHeads: kvHeads, headDim: d, queryTile: qt, keyTile: kt)
      let scratch = FloatBuffer(count: attention.scratchCount(threads: threads), category: .activations, meter: nil)
      let segment = KVSegment(
        keys: qkv.pointer + heads * d, values: qkv.pointer + (heads + kvHeads) * d, count: n,
        headStride: d, rowStride: ld, causal: true)
      var best = [Double.infinity, .infinity]
      for _ in 0..<repeats {
        for (i, t) in [1, threads].enumerated() {
          best[i] = min(best[i], time {
            attention.run(q: qkv.pointer, ldq: ld, n: n, segments: [segment], scale: 0.125,
                          out: out.pointer, ldo: heads * d, scratch: scratch.pointer, threads: t)
          })
        }
      }
      emit(["kind": "kernel", "shape": "attention n=\(n) tiles \(qt)x\(kt)",
            "ms_1_thread": best[0] * 1e3, "ms_threads": best[1] * 1e3,
            "gflops_1_thread": gflop / best[0], "gflops_threads": gflop / best[1]])
    }
  }

  /// Many small independent sgemms (attention-tile sized) on 1 and `threads` threads.
  static func concurrentSmallGemm(threads: Int, repeats: Int) {
    let m = 192, n = 256, k = 64
    let calls = 64
    let a = buffer(m * k, seed: 1)
    let b = buffer(n * k, seed: 2)
    let c = FloatBuffer(count: calls * m * n, category: .activations, meter: nil)
    var best = [Double.infinity, .infinity, .infinity]
    for _ in 0..<repeats {
      for (i, t) in [1, threads].enumerated() {
        best[i] = min(best[i], time {
          Parallel.withSingleThreadedBLAS {
            Parallel.forEach(calls, threads: t) { j, _ in
              BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: k,
                         c: c.pointer + j * m * n, ldc: n)
            }
          }
        })
      }
      best[2] = min(best[2], time {
        Parallel.forEach(calls, threads: threads) { j, _ in
          var x: Float = 0
          for q in 0..<200_000 { x += Float(q) * 1e-9 }
          c.pointer[j] = x
        }
      })
    }
    let gflop = 2 * Double(m * n * k * calls) / 1e9
    emit(["kind": "kernel", "shape": "64 sgemm 192x256x64", "gflops_1_thread": gflop / best[0],
          "gflops_threads": gflop / best[1], "pure_loop_ms_threads": best[2] * 1e3])
  }

  static func run(threads: Int, repeats: Int) {
    concurrentSmallGemm(threads: threads, repeats: repeats)
    attention(n: 512, threads: threads, repeats: repeats)
    attention(n: 1024, threads: threads, repeats: repeats)
    let shapes: [(String, Int, Int, Int)] = [
      ("qkv", 512, 960, 576), ("gate|up", 512, 3072, 576), ("down", 512, 576, 1536),
      ("o", 512, 576, 576),
    ]
    for (name, m, n, k) in shapes {
      let a = buffer(m * k, seed: 1)
      let w = buffer(n * k, seed: 2)
      let c1 = FloatBuffer(count: m * n, category: .activations, meter: nil)
      let c2 = FloatBuffer(count: m * n, category: .activations, meter: nil)
      var best = [Double.infinity, .infinity, .infinity]
      for _ in 0..<repeats {
        best[0] = min(best[0], time {
          BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: w.pointer, ldb: k,
                     c: c1.pointer, ldc: n)
        })
        best[1] = min(best[1], time {
          splitGemm(a: a.pointer, w: w.pointer, c: c2.pointer, m: m, n: n, k: k, threads: threads)
        })
        best[2] = min(best[2], time {
          Parallel.withSingleThreadedBLAS {
            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: w.pointer, ldb: k,
                       c: c1.pointer, ldc: n)
          }
        })
      }
      let same = memcmp(c1.pointer, c2.pointer, m * n * 4) == 0
      let gflop = 2 * Double(m * n * k) / 1e9
      emit(["kind": "kernel", "shape": name, "m": m, "n": n, "k": k,
            "openblas_threaded_gflops": gflop / best[0], "split_gflops": gflop / best[1],
            "single_thread_gflops": gflop / best[2], "split_equals_serial": same])
    }
    // Decode shapes: one row.
    for (name, n, k) in [("gate|up m=1", 3072, 576), ("logits m=1", 49152, 576)] {
      let a = buffer(k, seed: 3)
      let w = buffer(n * k, seed: 4)
      let c = FloatBuffer(count: n, category: .activations, meter: nil)
      var best = [Double.infinity, .infinity]
      for _ in 0..<repeats {
        best[0] = min(best[0], time {
          BLAS.sgemm(transB: true, m: 1, n: n, k: k, a: a.pointer, lda: k, b: w.pointer, ldb: k,
                     c: c.pointer, ldc: n)
        })
        best[1] = min(best[1], time {
          Linear.apply(a.pointer, rows: 1, ldx: k, weight: w.pointer, outFeatures: n, inFeatures: k,
                       out: c.pointer, ldo: n)
        })
      }
      let bytes = Double(n * k * 4)
      emit(["kind": "kernel", "shape": name, "sgemm_ms": best[0] * 1e3, "sgemv_ms": best[1] * 1e3,
            "sgemv_weight_gb_per_s": bytes / best[1] / 1e9])
    }
    weightProducts(threads: threads, repeats: repeats)
  }

  /// The products the decoder runs on Q4_1 weights (SmolLM2's shapes): prefill blocks of 512
  /// rows through each prefill kernel (dequantized tiles + sgemm, and bfloat16), and one row
  /// through the matrix-vector kernels of each path; GFLOP/s (2·m·n·k per product) and, for
  /// one row, the weight bytes read per second. The best prefill figure is the ceiling the
  /// prefill's share is measured against.
  static func weightProducts(threads: Int, repeats: Int) {
    for (name, n, k) in [("gate|up", 3072, 576), ("down", 576, 1536), ("qkv", 960, 576)] {
      let f = WeightFormat.q4_1
      let bytes = WeightBytes(count: n * f.rowBytes(cols: k), meter: nil)
      for i in 0..<bytes.count {
        // nibbles from a pattern, scales 0.01 and mins -0.05 as f16
        bytes.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 37 &+ 11), toByteOffset: i, as: UInt8.self)
      }
      for b in 0..<(n * k / 32) {
        bytes.pointer.storeBytes(of: Float16(0.01).bitPattern, toByteOffset: b * 20, as: UInt16.self)
        bytes.pointer.storeBytes(of: Float16(-0.05).bitPattern, toByteOffset: b * 20 + 2, as: UInt16.self)
      }
      let w = WeightMatrix(
        cols: k, parts: [.init(format: f, bytes: bytes.pointer, rows: n)], mapped: [false],
        owners: [bytes], meter: nil)
      let m = 512
      let x = buffer(m * k, seed: 7)
      let out = FloatBuffer(count: m * n, category: .activations, meter: nil)
      let gflop = 2 * Double(m * n * k) / 1e9
      let savedPrefill = PrefillKernel.choice
      for kernel in PrefillKernel.allCases where kernel.isSupported {
        try? PrefillKernel.select(kernel)
        // The scratch a forward gives this kernel.
        let tiles = FloatBuffer(count: w.tileFloats, category: .activations, meter: nil)
        var best = Double.infinity
        for _ in 0..<repeats {
          best = min(best, time {
            w.apply(x.pointer, rows: m, ldx: k, out: out.pointer, ldo: n, scratch: tiles)
          })
        }
        emit(["kind": "kernel", "shape": "Q4_1 \(name) m=\(m)", "prefill_kernel": kernel.rawValue,
              "ms": best * 1e3, "gflops": gflop / best, "threads": threads])
      }
      try? PrefillKernel.select(savedPrefill)
      let saved = KernelPath.current
      for path in KernelPath.allCases where path.isSupported {
        try? KernelPath.select(path)
        var best = Double.infinity
        for _ in 0..<(repeats * 20) {
          best = min(best, time {
            w.apply(x.pointer, rows: 1, ldx: k, out: out.pointer, ldo: n, scratch: nil)
          })
        }
        emit(["kind": "kernel", "shape": "Q4_1 \(name) m=1", "kernel_path": path.rawValue,
              "us": best * 1e6, "gflops": 2 * Double(n * k) / best / 1e9,
              "weight_gb_per_s": Double(bytes.count) / best / 1e9, "threads": threads])
      }
      try? KernelPath.select(saved)
    }
  }
}

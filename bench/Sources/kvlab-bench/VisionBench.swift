// `kvlab-bench --vision-serve FOLDER`: the vision encoder of an Idefics3 / SmolVLM folder, for
// bench/vision_vs_transformers.py. Loads the folder once, then answers one command per stdin
// line with one JSON line:
//   encode N            encode N tiles (tower + pixel-shuffle connector, one tile per call, as
//                       kvlab encodes a split image) of fixed pseudo-random pixels; only the
//                       encode calls are timed
//   tower N             the same through the tower alone (patch embedding … post-LayerNorm)
//   check IN.npy OUT    encode the tile IN.npy ([3][S][S] or [1][3][S][S] float32); write the
//                       tower's output to OUT.vision.npy and the connector's to OUT.features.npy
//   stages R            per-stage time of one tile's tower, best of R: the same kernels the tower
//                       calls (VisionTransformer.run is internal) on the folder's shapes, with
//                       random weights; plus "what-if" rows (other attention tiles, untiled
//                       attention, softmax alone, a SIMD GELU) that the tower does not run, and
//                       where the CPU has avx512_bf16, attention with bfloat16 products (what a
//                       16-bit tower runs under the bf16 kernel; these stages are the float32's)
import Foundation
import KVModels
import KVTensor

enum VisionBench {
  /// Tile `t` of the benchmark's pixels: value i is a fixed formula of (t, i) (the peer script
  /// uses the same formula), in [-1, 1] like normalised pixels.
  static func pixels(tile t: Int, size: Int) -> PixelValues {
    let count = 3 * size * size
    let values = (0..<count).map { (i: Int) -> Float in
      Float(((t &* count &+ i) &* 2_654_435_761) % 2001 - 1000) / 1000
    }
    return PixelValues(channels: 3, height: size, width: size, values: values)
  }

  struct Shape {
    var hidden = 0, intermediate = 0, layers = 0, heads = 0, imageSize = 0, patchSize = 0
    var scaleFactor = 2, textHidden = 0, eps: Float = 1e-6
    var patches: Int { (imageSize / patchSize) * (imageSize / patchSize) }
    var tokens: Int { patches / (scaleFactor * scaleFactor) }

    init(folder: String) throws {
      let path = (folder as NSString).appendingPathComponent("config.json")
      guard let root = try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any],
        let v = root["vision_config"] as? [String: Any], let t = root["text_config"] as? [String: Any]
      else { throw Failure("\(path): no vision_config / text_config") }
      func int(_ d: [String: Any], _ k: String) throws -> Int {
        guard let n = d[k] as? Int else { throw Failure("\(path): no \(k)") }
        return n
      }
      hidden = try int(v, "hidden_size")
      intermediate = try int(v, "intermediate_size")
      layers = try int(v, "num_hidden_layers")
      heads = try int(v, "num_attention_heads")
      imageSize = try int(v, "image_size")
      patchSize = try int(v, "patch_size")
      eps = Float(v["layer_norm_eps"] as? Double ?? 1e-6)
      scaleFactor = root["scale_factor"] as? Int ?? 2
      textHidden = try int(t, "hidden_size")
    }
  }

  static func serve(folder: String, threads: Int) throws {
    let meter = MemoryMeter()
    guard let model = try VisionLanguageModels.load(folder: folder, meter: meter) as? Idefics3Model
    else { throw Failure("\(folder): not an Idefics3 / SmolVLM folder") }
    let shape = try Shape(folder: folder)
    let common: [String: Any] = ["engine": "kvlab", "blas_core": BLAS.coreName, "threads": threads]
    emit(common.merging([
      "kind": "ready", "family": model.family, "prefill_kernel": PrefillKernel.current.rawValue, "image_size": shape.imageSize,
      "patches_per_tile": shape.patches, "tokens_per_tile": model.tokensPerUnit ?? 0,
      "vision_parameters": model.visionParameterCount,
    ]) { a, _ in a })
    var cache: [Int: PixelValues] = [:]
    while let line = readLine() {
      let words = line.split(separator: " ").map(String.init)
      guard let kind = words.first, words.count >= 2 else { continue }
      switch kind {
      case "encode", "tower":
        guard let n = Int(words[1]), n > 0 else { continue }
        let tiles = (0..<n).map { t in
          if let p = cache[t] { return p }
          let p = pixels(tile: t, size: shape.imageSize)
          cache[t] = p
          return p
        }
        var seconds = 0.0
        var rows = 0
        for tile in tiles {
          let t0 = DispatchTime.now().uptimeNanoseconds
          let out = try kind == "encode"
            ? model.encode([tile], meter: meter) : model.visionHiddenStates(tile, meter: meter)
          seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
          rows += out.rows
        }
        emit(common.merging([
          "kind": kind, "tiles": n, "tokens": kind == "encode" ? rows : n * shape.tokens,
          "patches": n * shape.patches, "seconds": seconds, "tiles_per_s": Double(n) / seconds,
        ]) { a, _ in a })
      case "check":
        guard words.count >= 3 else { continue }
        let (dims, values) = try NPYReader.read(words[1])
        let s = shape.imageSize
        guard values.count == 3 * s * s else {
          throw Failure("\(words[1]): shape \(dims), expected 3×\(s)×\(s)")
        }
        let tile = PixelValues(channels: 3, height: s, width: s, values: values)
        let vision = try model.visionHiddenStates(tile, meter: meter)
        let features = try model.encode([tile], meter: meter)
        for (suffix, m) in [("vision", vision), ("features", features)] {
          let w = try NPYWriter(path: "\(words[2]).\(suffix).npy", shape: [m.rows, m.cols])
          try w.append(UnsafeBufferPointer(start: m.pointer, count: m.rows * m.cols))
          try w.close()
        }
        emit(common.merging([
          "kind": "check", "vision": [vision.rows, vision.cols], "features": [features.rows, features.cols],
        ]) { a, _ in a })
      case "stages":
        emit(common.merging(stages(shape, repeats: Int(words[1]) ?? 3)) { a, _ in a })
      default:
        continue
      }
    }
  }

  /// Seconds per tile of each stage of the tower (all layers together), best of `repeats`,
  /// running the kernels VisionTransformer.run and Idefics3Model call, in the same order, on
  /// the same shapes (one layer's random weights reused for every layer).
  static func stages(_ s: Shape, repeats: Int) -> [String: Any] {
    let n = s.patches
    let d = s.hidden
    let f = s.intermediate
    let p = s.patchSize
    let headDim = d / s.heads
    let threads = BLAS.threads
    func random(_ rows: Int, _ cols: Int, seed: UInt64, scale: Float = 1) -> Matrix {
      let b = KernelBench.buffer(rows * cols, seed: seed)
      for i in 0..<(rows * cols) { b.pointer[i] *= scale }
      return Matrix(storage: b, rows: rows, cols: cols)
    }
    let tile = pixels(tile: 0, size: s.imageSize)
    let patchW = random(d, 3 * p * p, seed: 1, scale: 0.05)
    let qkvW = random(3 * d, d, seed: 2, scale: 0.05)
    let outW = random(d, d, seed: 3, scale: 0.05)
    let fc1W = random(f, d, seed: 4, scale: 0.05)
    let fc2W = random(d, f, seed: 5, scale: 0.02)
    let projW = random(s.textHidden, d * s.scaleFactor * s.scaleFactor, seed: 6, scale: 0.01)
    let bias = KernelBench.buffer(max(3 * d, f), seed: 7)
    let gamma = FloatBuffer([Float](repeating: 1, count: d), category: .vision, meter: nil)
    let patches = Matrix(uninitializedRows: n, cols: 3 * p * p, category: .vision, meter: nil)
    let x = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: nil)
    let h = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: nil)
    let qkv = Matrix(uninitializedRows: n, cols: 3 * d, category: .vision, meter: nil)
    let attended = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: nil)
    let mlp = Matrix(uninitializedRows: n, cols: f, category: .vision, meter: nil)
    let shuffled = Matrix(
      uninitializedRows: s.tokens, cols: d * s.scaleFactor * s.scaleFactor, category: .vision, meter: nil)
    let features = Matrix(uninitializedRows: s.tokens, cols: s.textHidden, category: .vision, meter: nil)
    let attention = TiledAttention(
      heads: s.heads, kvHeads: s.heads, headDim: headDim, queryTile: 256, keyTile: 1024)
    let scratch = FloatBuffer(
      uninitializedCount: attention.scratchCount(threads: threads), category: .vision, meter: nil)
    let scale = 1 / Float(headDim).squareRoot()
    let side = s.imageSize / p

    // name, runs per tile, body
    var steps: [(String, Int, () -> Void)] = []
    steps.append(("patch im2col", 1, {
      tile.values.withUnsafeBufferPointer { src in
        for r in 0..<n {
          var dst = patches.row(r)
          let y = r / side
          let xx = r % side
          for ch in 0..<3 {
            for ky in 0..<p {
              let base = ch * s.imageSize * s.imageSize + (y * p + ky) * s.imageSize + xx * p
              for kx in 0..<p { dst[kx] = src[base + kx] }
              dst += p
            }
          }
        }
      }
    }))
    steps.append(("patch linear", 1, { Linear.apply(patches, patchW, into: x) }))
    steps.append(("layernorm (2 per layer + post)", 2 * s.layers + 1, {
      Kernels.layerNorm(
        x.pointer, weight: gamma.pointer, bias: bias.pointer, eps: s.eps, rows: n, cols: d,
        out: h.pointer)
    }))
    steps.append(("qkv linear", s.layers, { Linear.apply(h, qkvW, into: qkv) }))
    steps.append(("attention", s.layers, {
      attention.run(
        q: qkv.pointer, ldq: 3 * d, n: n,
        segments: [
          KVSegment(
            keys: qkv.pointer + d, values: qkv.pointer + 2 * d, count: n, headStride: headDim,
            rowStride: 3 * d, causal: false)
        ], scale: scale, out: attended.pointer, ldo: d, scratch: scratch.pointer, threads: threads)
    }))
    steps.append(("out linear", s.layers, { Linear.apply(attended, outW, beta: 1, into: x) }))
    steps.append(("fc1 linear", s.layers, { Linear.apply(h, fc1W, into: mlp) }))
    steps.append(("gelu_tanh", s.layers, { Kernels.geluTanh(mlp.pointer, count: n * f) }))
    steps.append(("fc2 linear", s.layers, { Linear.apply(mlp, fc2W, beta: 1, into: x) }))
    steps.append(("bias adds (4 per layer + patch)", 1, {
      Kernels.addBias(x.pointer, bias: bias.pointer, rows: n, cols: d)
      for _ in 0..<s.layers {
        Kernels.addBias(qkv.pointer, bias: bias.pointer, rows: n, cols: 3 * d)
        Kernels.addBias(x.pointer, bias: bias.pointer, rows: n, cols: d)
        Kernels.addBias(mlp.pointer, bias: bias.pointer, rows: n, cols: f)
        Kernels.addBias(x.pointer, bias: bias.pointer, rows: n, cols: d)
      }
    }))
    steps.append(("connector shuffle+linear", 1, {
      let sf = s.scaleFactor
      let o = side / sf
      for i in 0..<o {
        for j in 0..<o {
          let dst = shuffled.row(i * o + j)
          for a in 0..<sf {
            for b in 0..<sf {
              (dst + (a * sf + b) * d).update(from: x.row((i * sf + a) * side + j * sf + b), count: d)
            }
          }
        }
      }
      Linear.apply(shuffled, projW, into: features)
    }))
    // What-ifs (not what the tower runs now; left out of the total): other attention tiles,
    // and GELU-tanh as x·sigmoid(2u) with FastMath's vectorised exp on `threads` threads.
    var whatIfs: Set<String> = []
    // The last: what a 16-bit tower runs under the bf16 prefill kernel (where the CPU has it).
    let variants = [(64, 512, false), (64, 1024, false), (128, 1024, false)]
      + (PrefillKernel.bf16.isSupported ? [(256, 1024, true)] : [])
    for (qt, kt, bf16) in variants {
      var variant = TiledAttention(heads: s.heads, kvHeads: s.heads, headDim: headDim, queryTile: qt, keyTile: kt)
      variant.bfloat16Products = bf16
      let scratch2 = FloatBuffer(
        uninitializedCount: variant.scratchCount(threads: threads), category: .vision, meter: nil)
      let name =
        bf16
        ? "attention, bfloat16 products (a 16-bit tower under the bf16 kernel)"
        : "what-if: attention tiles \(qt)x\(kt) (now 256x1024)"
      whatIfs.insert(name)
      steps.append((name, s.layers, {
        variant.run(
          q: qkv.pointer, ldq: 3 * d, n: n,
          segments: [
            KVSegment(
              keys: qkv.pointer + d, values: qkv.pointer + 2 * d, count: n, headStride: headDim,
              rowStride: 3 * d, causal: false)
          ], scale: scale, out: attended.pointer, ldo: d, scratch: scratch2.pointer, threads: threads)
      }))
    }
    // Untiled: per head S = QKᵀ·scale (n × n), softmax, S·V; heads across threads.
    let scores = FloatBuffer(uninitializedCount: threads * n * n, category: .vision, meter: nil)
    let untiled = {
      Parallel.withSingleThreadedBLAS {
        Parallel.forEach(s.heads, threads: threads) { head, worker in
          let sc = scores.pointer + worker * n * n
          let col = head * headDim
          BLAS.sgemm(
            transB: true, m: n, n: n, k: headDim, alpha: scale, a: qkv.pointer + col, lda: 3 * d,
            b: qkv.pointer + d + col, ldb: 3 * d, c: sc, ldc: n)
          Kernels.softmax(sc, rows: n, cols: n, threads: 1)
          BLAS.sgemm(
            m: n, n: headDim, k: n, a: sc, lda: n, b: qkv.pointer + 2 * d + col, ldb: 3 * d,
            c: attended.pointer + col, ldc: d)
        }
      }
    }
    let untiledName = "what-if: attention untiled (per head sgemm, softmax, sgemm)"
    let softmaxName = "what-if: softmax alone (heads × n × n scores)"
    whatIfs.formUnion([untiledName, softmaxName])
    steps.append((untiledName, s.layers, untiled))
    steps.append((softmaxName, s.layers, {
      Parallel.forEach(s.heads, threads: threads) { _, worker in
        Kernels.softmax(scores.pointer + worker * n * n, rows: n, cols: n, threads: 1)
      }
    }))
    let simdGelu = "what-if: gelu_tanh SIMD exp, \(threads) threads"
    whatIfs.insert(simdGelu)
    steps.append((simdGelu, s.layers, { geluTanhSIMD(mlp.pointer, count: n * f, threads: threads) }))
    // Keep activations bounded: refill x and the MLP buffer before timing each round.
    let seedX = KernelBench.buffer(n * d, seed: 8)
    let seedMLP = KernelBench.buffer(n * f, seed: 9)
    var best = [Double](repeating: .infinity, count: steps.count)
    // CPU seconds of the whole process (every thread, spinning included): on a shared machine
    // less disturbed by other processes than the wall time.
    var bestCPU = [Double](repeating: .infinity, count: steps.count)
    for _ in 0..<repeats {
      for (i, step) in steps.enumerated() {
        x.pointer.update(from: seedX.pointer, count: n * d)
        h.pointer.update(from: seedX.pointer, count: n * d)
        mlp.pointer.update(from: seedMLP.pointer, count: n * f)
        let cpu = KernelBench.processCPUSeconds()
        let once = KernelBench.time(step.2)
        bestCPU[i] = min(bestCPU[i], (KernelBench.processCPUSeconds() - cpu) * Double(step.1))
        best[i] = min(best[i], once * Double(step.1))
      }
    }
    var rows: [[String: Any]] = []
    var total = 0.0
    for (i, step) in steps.enumerated() {
      rows.append([
        "stage": step.0, "calls_per_tile": step.1, "seconds_per_tile": best[i],
        "cpu_seconds_per_tile": bestCPU[i],
        "what_if": whatIfs.contains(step.0),
      ])
      if !whatIfs.contains(step.0) { total += best[i] }
    }
    // How far the SIMD GELU is from Kernels.geluTanh, over the MLP's activations.
    let a = FloatBuffer(uninitializedCount: n * f, category: .vision, meter: nil)
    let b = FloatBuffer(uninitializedCount: n * f, category: .vision, meter: nil)
    for i in 0..<(n * f) { a.pointer[i] = seedMLP.pointer[i] * 4 }
    b.pointer.update(from: a.pointer, count: n * f)
    Kernels.geluTanh(a.pointer, count: n * f)
    geluTanhSIMD(b.pointer, count: n * f, threads: threads)
    var geluDiff: Float = 0
    for i in 0..<(n * f) { geluDiff = max(geluDiff, abs(a.pointer[i] - b.pointer[i])) }
    // And the untiled attention against the tiled one, on the same q, k, v.
    for i in 0..<(n * 3 * d) { qkv.pointer[i] = seedMLP.pointer[i] * 2 }
    steps[steps.firstIndex { $0.0 == "attention" }!].2()
    let tiled = [Float](UnsafeBufferPointer(start: attended.pointer, count: n * d))
    untiled()
    var attentionDiff: Float = 0
    for i in 0..<(n * d) { attentionDiff = max(attentionDiff, abs(tiled[i] - attended.pointer[i])) }
    let flops: [String: Double] = [
      "patch linear": 2 * Double(n * d * 3 * p * p), "qkv linear": 2 * Double(n * 3 * d * d),
      "out linear": 2 * Double(n * d * d), "fc1 linear": 2 * Double(n * f * d),
      "fc2 linear": 2 * Double(n * d * f), "attention": 4 * Double(n * n * d),
    ]
    for i in rows.indices {
      let name = rows[i]["stage"] as! String
      if let fl = flops[name] ?? (name.contains("attention") ? flops["attention"] : nil) {
        let calls = Double(rows[i]["calls_per_tile"] as! Int)
        rows[i]["gflops"] = fl * calls / best[i] / 1e9
      }
    }
    return [
      "kind": "stages", "stages": rows, "total_seconds_per_tile": total,
      "simd_gelu_max_abs_diff": Double(geluDiff),
      "untiled_attention_max_abs_diff": Double(attentionDiff),
    ]
  }

  /// GELU-tanh 0.5·x·(1 + tanh(u)), u = √(2/π)(x + 0.044715x³), written as x·sigmoid(2u) =
  /// x / (1 + e^(−2u)) with FastMath's vectorised exp, rows of 4096 split across threads.
  static func geluTanhSIMD(_ x: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    typealias V = FastMath.Vector
    let k = V(repeating: -2 * Float((2 / Double.pi).squareRoot()))
    let c = V(repeating: 0.044715)
    let one = V(repeating: 1)
    let chunk = 4096
    Parallel.rows((count + chunk - 1) / chunk, threads: threads) { range in
      let lo = range.lowerBound * chunk
      let hi = min(count, range.upperBound * chunk)
      var i = lo
      while i + 8 <= hi {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: V.self)
        let e = FastMath.exp(k * (v + c * v * v * v))
        UnsafeMutableRawPointer(x + i).storeBytes(of: v / (one + e), as: V.self)
        i += 8
      }
      while i < hi {
        let v = x[i]
        x[i] = v / (1 + FastMath.exp(k[0] * (v + 0.044715 * v * v * v)))
        i += 1
      }
    }
  }
}

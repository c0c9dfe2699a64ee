// kvlab-bench: times kvlab's own engine on the default model so that bench/*.py can put it side
// by side with peers in one script. Prints one JSON object per measurement on stdout.
import Foundation
import KVCache
import KVEngine
import KVModels
import KVTasks
import KVTensor

struct Arguments {
  var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
  var lengths = [128, 512, 1024]
  var decode = 32
  var repeats = 3
  var threads = 2
  var chunk = 1024
  /// With --parity DIR: compare every logit with the full tables scripts/gen_parity_fixtures.py
  /// wrote there (DIR/NAME.npy) instead of timing.
  var parityDirectory: String?
  /// --serve: load the model once, then answer one command per stdin line ("prefill N",
  /// "decode N STEPS": prefill N tokens, then time STEPS decode steps) with one JSON line, so
  /// that a script can alternate kvlab and its peer measurement by measurement.
  var serve = false
  /// --vision-serve FOLDER: the vision encoder of an Idefics3 / SmolVLM folder instead of the
  /// decoder, one command per stdin line (see VisionBench).
  var visionServe: String?
  /// --kernels: micro-benchmarks of the BLAS shapes instead of the model.
  var kernels = false
  /// --finite-scan FILE: time the load-time scan for non-finite weights of a GGUF file or a
  /// safetensors file (each pass reads every float tensor's bytes; the first also faults the
  /// mapping in).
  var finiteScan: String?
  /// --determinism N: run the same N-token prefill (all logits, --chunk at a time) twice and
  /// check that every logit is bitwise identical.
  var determinism: Int?
  /// --accuracy FOLDER: the accuracy benchmark of a model folder on held-out synthetic tasks
  /// (AccuracyBench), with --experiment, --tasks, --count, --seed0, --fractions, --policies,
  /// --modes.
  var accuracy: String?
  var experiment = "main"
  var tasks = SyntheticTask.allCases
  var count = 200
  var seed0 = 0
  var fractions = [0.05, 0.10, 0.25, 0.50]
  var policies = ["snapkv", "keydiff"]
  var modes: [PrefillMode] = [.post, .sequential, .capped]
  /// --precision stored|f32: the matrices as the GGUF stores them, or the float32 reference.
  var precision = WeightPrecision.stored
  /// --kernel-path auto|portable|avx2|avx512: the weight kernels' instruction set.
  var kernelPath = KernelPath.best
  /// --prefill-kernel auto|sgemm|bf16|int8: how prefill blocks multiply by the weights (auto,
  /// as in kvlab: bf16 where the CPU has avx512_bf16, else int8 where it has avx2, else sgemm).
  var prefillKernel = PrefillKernel.Choice.auto

  init(_ argv: [String]) throws {
    var it = argv.dropFirst().makeIterator()
    while let a = it.next() {
      if a == "--serve" { serve = true; continue }
      if a == "--kernels" { kernels = true; continue }
      guard let v = it.next() else { throw Failure("\(a) needs a value") }
      switch a {
      case "--model": model = v
      case "--lengths": lengths = v.split(separator: ",").compactMap { Int($0) }
      case "--decode": decode = Int(v) ?? decode
      case "--repeats": repeats = Int(v) ?? repeats
      case "--threads": threads = Int(v) ?? threads
      case "--chunk": chunk = Int(v) ?? chunk
      case "--parity": parityDirectory = v
      case "--determinism": determinism = Int(v)
      case "--vision-serve": visionServe = v
      case "--finite-scan": finiteScan = v
      case "--accuracy": accuracy = v
      case "--experiment": experiment = v
      case "--tasks": tasks = try list(v, a) { SyntheticTask(rawValue: $0) }
      case "--count": count = Int(v) ?? count
      case "--seed0": seed0 = Int(v) ?? seed0
      case "--fractions": fractions = try list(v, a) { Double($0) }
      case "--policies": policies = v.split(separator: ",").map(String.init)
      case "--modes": modes = try list(v, a) { PrefillMode(rawValue: $0) }
      case "--precision":
        guard let p = WeightPrecision(rawValue: v) else { throw Failure("--precision: stored or f32") }
        precision = p
      case "--kernel-path": kernelPath = try KernelPath.parse(v)
      case "--prefill-kernel": prefillKernel = try PrefillKernel.parse(v)
      default: throw Failure("unknown option \(a)")
      }
    }
  }
}

/// A comma-separated list, every item parsed by `parse`.
func list<T>(_ text: String, _ option: String, _ parse: (String) -> T?) throws -> [T] {
  try text.split(separator: ",").map {
    guard let v = parse(String($0)) else { throw Failure("\(option): cannot read '\($0)'") }
    return v
  }
}

struct Failure: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}

func emit(_ fields: [String: Any]) {
  let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
  print(String(decoding: data, as: UTF8.self))
  fflush(stdout)
}

/// Max |Δlogit| over every position and column against transformers' full logits.
func checkParity(model: LlamaModel, directory: String, chunk: Int, meter: MemoryMeter) throws {
  struct Manifest: Decodable {
    struct Prompt: Decodable { let name: String; let ids: [Int] }
    let prompts: [Prompt]
  }
  let manifestPath = TestFixtures.parityManifest
  let manifest = try JSONDecoder().decode(
    Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: manifestPath)))
  let c = model.config
  for prompt in manifest.prompts {
    let reference = try NPYReader.read("\(directory)/\(prompt.name).npy").values
    let cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
    var worst: Float = 0
    var argmaxMismatches = 0
    var done = 0
    while done < prompt.ids.count {
      let ids = Array(prompt.ids[done..<min(prompt.ids.count, done + chunk)])
      let logits = try model.forward(
        model.embed(ids, meter: meter), positions: Array(done..<(done + ids.count)),
        origins: ids.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
        logits: .all, meter: meter)!
      for r in 0..<ids.count {
        let row = logits.row(r)
        let ref = reference.withUnsafeBufferPointer {
          $0.baseAddress! + (done + r) * c.vocabularySize
        }
        var a = 0
        var b = 0
        for v in 0..<c.vocabularySize {
          worst = max(worst, abs(row[v] - ref[v]))
          if row[v] > row[a] { a = v }
          if ref[v] > ref[b] { b = v }
        }
        if a != b { argmaxMismatches += 1 }
      }
      done += ids.count
    }
    emit([
      "engine": "kvlab", "kind": "parity", "prompt": prompt.name, "tokens": prompt.ids.count,
      "max_abs_diff": Double(worst), "argmax_mismatches": argmaxMismatches,
    ])
  }
}

enum TestFixtures {
  static let parityManifest = "Tests/KVEngineTests/Fixtures/parity/manifest.json"
}

/// Prefills `n` tokens of `ids` into a fresh cache, `chunk` at a time; returns seconds.
func prefill(
  _ model: LlamaModel, ids: [Int], n: Int, chunk: Int, meter: MemoryMeter
) throws -> (Double, DenseKVCache) {
  let c = model.config
  let cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
  let t0 = Date()
  var done = 0
  while done < n {
    let part = Array(ids[done..<min(n, done + chunk)])
    _ = try model.forward(
      model.embed(part, meter: meter), positions: Array(done..<(done + part.count)),
      origins: part.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
      logits: done + part.count == n ? .last : .none, meter: meter)
    done += part.count
  }
  return (Date().timeIntervalSince(t0), cache)
}

/// Decodes `steps` tokens (ids[n...]) after a prefill of n; returns seconds.
func decode(
  _ model: LlamaModel, ids: [Int], n: Int, steps: Int, cache: DenseKVCache, meter: MemoryMeter
) throws -> Double {
  let t1 = Date()
  for s in 0..<steps {
    _ = try model.forward(
      model.embed([ids[n + s]], meter: meter), positions: [n + s],
      origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
      meter: meter)
  }
  return Date().timeIntervalSince(t1)
}

/// A fixed pseudo-random token sequence (the peer uses the same ids: seed-free formula).
func benchmarkIDs(count: Int, vocabulary: Int) -> [Int] {
  (0..<count).map { (i: Int) -> Int in (i &* 7919 &+ 13) % (vocabulary - 256) + 256 }
}

do {
  let args = try Arguments(CommandLine.arguments)
  BLAS.setThreads(args.threads)
  try KernelPath.select(args.kernelPath)
  try PrefillKernel.select(args.prefillKernel)
  ProcessMemory.returnLargeFreesToTheSystem()  // as kvlab does: large frees leave the RSS
  if args.kernels {
    KernelBench.run(threads: args.threads, repeats: args.repeats)
    exit(0)
  }
  if let folder = args.accuracy {
    try AccuracyBench.run(
      AccuracyBench.Plan(
        folder: folder, experiment: args.experiment, tasks: args.tasks, count: args.count,
        seed0: args.seed0, fractions: args.fractions, policies: args.policies, modes: args.modes,
        threads: args.threads))
    exit(0)
  }
  if let path = args.finiteScan {
    for pass in 1...max(1, args.repeats) {
      let start = Date()
      let (bad, bytes): (String?, Int)
      if path.hasSuffix(".gguf") {
        let file = try GGUFFile(path: path)
        (bad, bytes) = (try file.firstNonFinite()?.tensor, file.fileSize)
      } else {
        let file = try SafetensorsFile(path: path)
        (bad, bytes) = (file.firstNonFinite()?.tensor, file.fileSize)
      }
      emit([
        "file": path, "bytes": bytes, "pass": pass, "seconds": Date().timeIntervalSince(start),
        "non_finite": bad ?? "none",
      ])
    }
    exit(0)
  }
  if let folder = args.visionServe {
    try VisionBench.serve(folder: folder, threads: args.threads)
    exit(0)
  }
  let meter = MemoryMeter()
  let gguf = try GGUFFile(path: args.model)
  let model = try LlamaModel.load(gguf: gguf, precision: args.precision, meter: meter)
  let c = model.config
  if let dir = args.parityDirectory {
    try checkParity(model: model, directory: dir, chunk: args.chunk, meter: meter)
    exit(0)
  }
  if let n = args.determinism {
    let ids = benchmarkIDs(count: n, vocabulary: c.vocabularySize)
    func logits() throws -> [Float] {
      let cache = DenseKVCache(
        layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
      var all: [Float] = []
      var done = 0
      while done < n {
        let part = Array(ids[done..<min(n, done + args.chunk)])
        let out = try model.forward(
          model.embed(part, meter: meter), positions: Array(done..<(done + part.count)),
          origins: part.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
          logits: .all, meter: meter)!
        all += out.storage.buffer.prefix(out.rows * out.cols)
        done += part.count
      }
      return all
    }
    let first = try logits().map(\.bitPattern)
    let second = try logits().map(\.bitPattern)
    emit([
      "engine": "kvlab", "kind": "determinism", "tokens": n, "chunk": args.chunk,
      "threads": args.threads, "bitwise_identical": first == second,
    ])
    exit(first == second ? 0 : 1)
  }
  let common: [String: Any] = [
    "engine": "kvlab", "blas_core": BLAS.coreName, "threads": args.threads,
    "kernel_path": KernelPath.current.rawValue, "weights": model.weightFormat,
    // Float32 weights take sgemm whatever the selection (WeightMatrix.takesBFloat16).
    "prefill_kernel": model.weightFormat == "F32" ? "sgemm" : PrefillKernel.current.rawValue,
    "cpu_features": KernelPath.cpuFeatures.joined(separator: " "),
  ]
  if args.serve {
    emit(common.merging(["kind": "ready"]) { a, _ in a })
    while let line = readLine() {
      let words = line.split(separator: " ").map(String.init)
      guard let kind = words.first, words.count >= 2, let n = Int(words[1]) else { continue }
      let steps = words.count > 2 ? Int(words[2]) ?? 0 : 0
      let ids = benchmarkIDs(count: n + steps, vocabulary: c.vocabularySize)
      let (seconds, cache) = try prefill(model, ids: ids, n: n, chunk: args.chunk, meter: meter)
      if kind == "decode" {
        let d = try decode(model, ids: ids, n: n, steps: steps, cache: cache, meter: meter)
        emit(
          common.merging([
            "kind": "decode", "tokens": steps, "context": n, "seconds": d,
            "tokens_per_s": Double(steps) / d,
          ]) { a, _ in a })
      } else {
        emit(
          common.merging([
            "kind": "prefill", "tokens": n, "seconds": seconds,
            "tokens_per_s": Double(n) / seconds,
          ]) { a, _ in a })
      }
    }
    exit(0)
  }
  let ids = benchmarkIDs(
    count: (args.lengths.max() ?? 0) + args.decode, vocabulary: c.vocabularySize)
  for n in args.lengths {
    for r in 0..<args.repeats {
      let (seconds, cache) = try prefill(model, ids: ids, n: n, chunk: args.chunk, meter: meter)
      emit(
        common.merging([
          "kind": "prefill", "tokens": n, "repeat": r, "seconds": seconds,
          "tokens_per_s": Double(n) / seconds,
        ]) { a, _ in a })
      if args.decode > 0 && n == args.lengths.first {
        let d = try decode(model, ids: ids, n: n, steps: args.decode, cache: cache, meter: meter)
        emit(
          common.merging([
            "kind": "decode", "tokens": args.decode, "context": n, "repeat": r,
            "seconds": d, "tokens_per_s": Double(args.decode) / d,
          ]) { a, _ in a })
      }
    }
  }
} catch {
  FileHandle.standardError.write(Data("kvlab-bench: \(error)\n".utf8))
  exit(1)
}

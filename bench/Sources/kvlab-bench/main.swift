// kvlab-bench: times kvlab's own engine on the default model so that bench/*.py can put it side
// by side with peers in one script. Prints one JSON object per measurement on stdout.
import Foundation
import KVCache
import KVEngine
import KVModels
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

  init(_ argv: [String]) throws {
    var it = argv.dropFirst().makeIterator()
    while let a = it.next() {
      guard let v = it.next() else { throw Failure("\(a) needs a value") }
      switch a {
      case "--model": model = v
      case "--lengths": lengths = v.split(separator: ",").compactMap { Int($0) }
      case "--decode": decode = Int(v) ?? decode
      case "--repeats": repeats = Int(v) ?? repeats
      case "--threads": threads = Int(v) ?? threads
      case "--chunk": chunk = Int(v) ?? chunk
      case "--parity": parityDirectory = v
      default: throw Failure("unknown option \(a)")
      }
    }
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
        let ref = reference.withUnsafeBufferPointer { $0.baseAddress! + (done + r) * c.vocabularySize }
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
    emit(["engine": "kvlab", "kind": "parity", "prompt": prompt.name, "tokens": prompt.ids.count,
          "max_abs_diff": Double(worst), "argmax_mismatches": argmaxMismatches])
  }
}

enum TestFixtures {
  static let parityManifest = "Tests/KVEngineTests/Fixtures/parity/manifest.json"
}

do {
  let args = try Arguments(CommandLine.arguments)
  BLAS.setThreads(args.threads)
  let meter = MemoryMeter()
  let gguf = try GGUFFile(path: args.model)
  let model = try LlamaModel.load(gguf: gguf, meter: meter)
  let c = model.config
  if let dir = args.parityDirectory {
    try checkParity(model: model, directory: dir, chunk: args.chunk, meter: meter)
    exit(0)
  }
  // A fixed pseudo-random token sequence (the peer uses the same ids: seed-free formula).
  let maxLen = (args.lengths.max() ?? 0) + args.decode
  let ids = (0..<maxLen).map { (i: Int) -> Int in (i &* 7919 &+ 13) % (c.vocabularySize - 256) + 256 }
  for n in args.lengths {
    for r in 0..<args.repeats {
      let cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
      let t0 = Date()
      var done = 0
      while done < n {
        let chunk = Array(ids[done..<min(n, done + args.chunk)])
        _ = try model.forward(
          model.embed(chunk, meter: meter), positions: Array(done..<(done + chunk.count)),
          origins: chunk.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
          logits: done + chunk.count == n ? .last : .none, meter: meter)
        done += chunk.count
      }
      let prefill = Date().timeIntervalSince(t0)
      emit(["engine": "kvlab", "kind": "prefill", "tokens": n, "repeat": r, "seconds": prefill,
            "tokens_per_s": Double(n) / prefill, "blas_core": BLAS.coreName, "threads": args.threads])
      if args.decode > 0 && n == args.lengths.first {
        let t1 = Date()
        for s in 0..<args.decode {
          _ = try model.forward(
            model.embed([ids[n + s]], meter: meter), positions: [n + s],
            origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
            meter: meter)
        }
        let decode = Date().timeIntervalSince(t1)
        emit(["engine": "kvlab", "kind": "decode", "tokens": args.decode, "context": n, "repeat": r,
              "seconds": decode, "tokens_per_s": Double(args.decode) / decode,
              "blas_core": BLAS.coreName, "threads": args.threads])
      }
    }
  }
} catch {
  FileHandle.standardError.write(Data("kvlab-bench: \(error)\n".utf8))
  exit(1)
}

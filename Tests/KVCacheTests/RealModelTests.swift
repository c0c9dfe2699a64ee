import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// The budgeted cache under the real decoder (SmolLM2-135M, `LlamaModel.forward`).
final class RealModelTests: XCTestCase {
  static let text = """
    The harbour town woke slowly. Fishing boats knocked against the pier while gulls argued over \
    scraps, and the baker on Quay Street pulled the first trays of rye bread from an oven older \
    than anyone in the family could remember. At the far end of the pier an old lighthouse keeper \
    named Ansel counted the boats as they left: seven blue ones, three red ones, and a single \
    yellow skiff that belonged to his granddaughter Mira. Every morning he wrote the count in a \
    leather notebook, together with the direction of the wind and the colour of the sky. The \
    notebook was almost full. On its last page, in small careful letters, he had written the \
    number of the locker where he kept the spare key to the lamp room: locker forty-two. Mira \
    knew about the notebook but had never read it. That morning the wind came from the north-east \
    and the sky was the colour of pewter. Ansel counted eleven boats, wrote the number down, and \
    went inside to make tea. Question: which locker holds the spare key to the lamp room?
    """

  struct Loaded {
    let model: LlamaModel
    let tokens: [Int]
    let meter: MemoryMeter
  }

  static let loaded: Loaded? = {
    guard FileManager.default.fileExists(atPath: CachePaths.model) else { return nil }
    let meter = MemoryMeter()
    guard let gguf = try? GGUFFile(path: CachePaths.model),
      let tokenizer = try? BPETokenizer(gguf: gguf),
      let model = try? LlamaModel.load(gguf: gguf, meter: meter)
    else { return nil }
    return Loaded(model: model, tokens: tokenizer.encode(text), meter: meter)
  }()

  func load() throws -> Loaded {
    _ = try CachePaths.requireModel()
    guard let l = Self.loaded else { throw XCTSkip("model failed to load") }
    return l
  }

  /// Prefills `tokens` in blocks of `block`, then decodes `decode` greedy tokens (one-token
  /// blocks); returns the last logits and every step's argmax.
  func run(
    _ l: Loaded, _ tokens: [Int], cache: KeyValueCache, block: Int, decode: Int = 0,
    meter: MemoryMeter
  ) throws -> (logits: [Float], argmax: [Int]) {
    var done = 0
    var last: Matrix?
    let origin = TokenOrigin(modality: .text, input: 0)
    while done < tokens.count {
      let chunk = Array(tokens[done..<min(tokens.count, done + block)])
      last = try l.model.forward(
        l.model.embed(chunk, meter: meter), positions: Array(done..<done + chunk.count),
        origins: Array(repeating: origin, count: chunk.count), cache: cache, logits: .last,
        meter: meter)
      done += chunk.count
    }
    var argmax: [Int] = []
    for step in 0..<decode {
      let row = last!.storage.array
      let next = row.indices.max { row[$0] < row[$1] }!
      argmax.append(next)
      last = try l.model.forward(
        l.model.embed([next], meter: meter), positions: [tokens.count + step],
        origins: [TokenOrigin(modality: .generated, input: 1)], cache: cache, logits: .last,
        meter: meter)
    }
    return (last!.storage.array, argmax)
  }

  /// With a budget that covers the whole input (and the decoded tokens), every mode gives
  /// logits identical to `full`; so does a pyramid schedule whose smallest layer budget does.
  func testEveryModeMatchesFullWhenTheBudgetCoversTheInput() throws {
    let l = try load()
    let c = l.model.config
    let tokens = Array(l.tokens.prefix(64))
    let meter = MemoryMeter()
    let dense = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: meter)
    let reference = try run(l, tokens, cache: dense, block: 24, decode: 2, meter: meter)
    // Pyramid slope 0.5 over a mean of 140: 210 at layer 0 down to 70 at the last.
    let runs: [(PrefillMode, any EvictionPolicy, Int, BudgetSchedule)] = [
      (.capped, SnapKVPolicy(window: 16), 70, .uniform), (.sequential, H2OPolicy(), 70, .uniform),
      (.post, KeyDiffPolicy(), 70, .uniform),
      (.capped, SnapKVPolicy(window: 16), 140, .pyramid(slope: 0.5)),
      (.sequential, KeyDiffPolicy(), 140, .pyramid(slope: 0.5)),
    ]
    for (mode, policy, budget, schedule) in runs {
      let cache = try BudgetedCache(
        config: c, budget: .tokens(budget), schedule: schedule, mode: mode, policy: policy,
        blockSize: 24, meter: meter)
      let out = try run(l, tokens, cache: cache, block: 24, decode: 2, meter: meter)
      XCTAssertEqual(out.argmax, reference.argmax, "\(mode) \(policy) \(schedule)")
      let diff = zip(out.logits, reference.logits).map { abs($0 - $1) }.max()!
      XCTAssertEqual(diff, 0, "\(mode) \(policy) \(schedule): logits differ from full by \(diff)")
      XCTAssertEqual(cache.countRange, 66...66)
    }
  }

  /// The hard cap under the real model: the meter's KV high-water mark is the budget in capped
  /// mode (prefill and decode), at most budget + block in sequential; full and post grow with
  /// the input.
  func testKVHighWaterOnTheRealModel() throws {
    let l = try load()
    let c = l.model.config
    let tokens = Array(l.tokens.prefix(128))
    let bpt = c.kvBytesPerToken
    let budget = 32
    let block = 24
    var report: [String] = []
    let runs: [(PrefillMode, any EvictionPolicy, BudgetSchedule)] = [
      (.capped, SnapKVPolicy(window: 8), .uniform), (.capped, KeyDiffPolicy(), .uniform),
      (.capped, SnapKVPolicy(window: 8), .pyramid(slope: 0.5)),
      (.sequential, KeyDiffPolicy(), .uniform),
      (.sequential, KeyDiffPolicy(), .pyramid(slope: 0.7)),
      (.post, SnapKVPolicy(window: 8), .uniform), (.full, KeyDiffPolicy(), .uniform),
    ]
    for (mode, policy, schedule) in runs {
      let meter = MemoryMeter()
      let cache = try makeCache(
        config: c, budget: .tokens(budget), schedule: schedule, mode: mode, policy: policy,
        blockSize: block, meter: meter)
      let out = try run(l, tokens, cache: cache, block: block, decode: 2, meter: meter)
      XCTAssertTrue(out.logits.allSatisfy { $0.isFinite })
      let peak = meter.reading(.kv).highWater
      report.append(
        "\(mode)/\(policy.name)/\(schedule) \(peak) B = \(String(format: "%.2f", Double(peak) / Double(budget * bpt)))×"
      )
      switch mode {
      case .capped:
        XCTAssertEqual(peak, budget * bpt, "\(policy) capped \(schedule)")
        let b = cache as! BudgetedCache
        XCTAssertEqual((0..<c.layers).map { b.count(layer: $0) }, b.layerBudgets)
        XCTAssertEqual(b.layerBudgets.reduce(0, +), budget * c.layers)
      case .sequential:
        XCTAssertLessThanOrEqual(peak, (budget + block) * bpt, "\(policy) sequential \(schedule)")
        XCTAssertGreaterThan(peak, budget * bpt)
      case .post, .full:
        XCTAssertGreaterThanOrEqual(peak, tokens.count * bpt, "\(policy) \(mode)")
      }
    }
    print(
      "real model, \(tokens.count) tokens + 2 decoded, budget \(budget) tokens = \(budget * bpt) B, block \(block): KV high-water "
        + report.joined(separator: ", "))
  }
}

import Foundation
import KVCache
import KVModels
import KVTensor
import XCTest

/// The hard-cap property: for random budgets, policies, options, block sizes and
/// structured inputs (system text, text spans, tiled images, video frames) of random K/V/Q, the
/// meter's `.kv` high-water mark is exactly the budget in `capped` mode, at most budget + block
/// in `sequential`, and grows with the input in `full` and `post`. Along the way: every held row
/// is the row that was fed at its position (compaction is correct), positions stay ascending,
/// mandatory entries survive, capped and sequential keep the same entries, and a refused block
/// leaves the cache untouched. Half the trials spread the budget over the layers with a pyramid
/// schedule: each layer then holds its own budget, and the storage still sums to the budget.
final class BudgetPropertyTests: XCTestCase {
  static func randomPolicy(_ rng: inout SeededRNG) -> any EvictionPolicy {
    switch Int.random(in: 0..<10, using: &rng) {
    case 0:
      return SnapKVPolicy(
        window: Int.random(in: 1...8, using: &rng), kernel: [1, 3, 5].randomElement(using: &rng)!)
    case 1: return KeyDiffPolicy()
    case 2: return KNormPolicy()
    case 3: return ValueNormPolicy()
    case 4: return RandomPolicy(seed: UInt64.random(in: 0..<1000, using: &rng))
    case 5: return StreamingLLMPolicy(sinks: Int.random(in: 0...4, using: &rng))
    case 6:
      return H2OPolicy(recent: Bool.random(using: &rng) ? nil : Int.random(in: 0...6, using: &rng))
    case 7:
      return GridPoolPolicy(
        base: BaseScore.allCases.randomElement(using: &rng)!, window: Int.random(in: 1...8, using: &rng),
        kernel: [1, 3, 5].randomElement(using: &rng)!,
        pooling: GridPooling.allCases.randomElement(using: &rng)!)
    case 8:
      return UnitFloorsPolicy(
        base: BaseScore.allCases.randomElement(using: &rng)!, window: Int.random(in: 1...8, using: &rng),
        floor: Double.random(in: 0...1, using: &rng), kernel: [1, 3].randomElement(using: &rng)!,
        thumbnail: UnitFloorsPolicy.Thumbnail.allCases.randomElement(using: &rng)!)
    default:
      var p = InfiniPotVPolicy(
        alpha: Double.random(in: 0...1, using: &rng),
        recent: Double.random(in: 0...0.5, using: &rng))
      if Bool.random(using: &rng) {
        p.fill = .snapkv
        p.window = Int.random(in: 1...8, using: &rng)
      }
      return p
    }
  }

  struct Snapshot: Equatable {
    var counts: [Int]
    var positions: [[[Int]]]
    var keys: [[[Float]]]
  }

  static func snapshot(_ c: BudgetedCache) -> Snapshot {
    Snapshot(
      counts: (0..<c.layers).map { c.count(layer: $0) },
      positions: (0..<c.layers).map { l in (0..<c.kvHeads).map { c.positions(layer: l, head: $0) }
      },
      keys: (0..<c.layers).map { l in
        (0..<c.kvHeads).map { h in
          (0..<c.count(layer: l)).flatMap { r in
            Array(UnsafeBufferPointer(start: c.key(layer: l, head: h, row: r), count: c.headDim))
          }
        }
      })
  }

  func testHardCapOverRandomBudgetsPoliciesBlocksAndInputs() throws {
    var rng = SeededRNG(seed: 4)
    let trials = 200
    var refused = 0
    var cappedPeakOverBudget: Double = 0
    var sequentialPeakOverBound: Double = 0
    var sequentialPeakOverBudget: Double = 0
    var minGrowth = Double.infinity
    var seqMatchesCapped = 0
    var usedPolicies: Set<String> = []
    for trial in 0..<trials {
      let layers = Int.random(in: 1...4, using: &rng)
      let kvHeads = Int.random(in: 1...2, using: &rng)
      let queryHeads = kvHeads * Int.random(in: 1...3, using: &rng)
      let headDim = [4, 8, 16].randomElement(using: &rng)!
      let total = Int.random(in: 8...260, using: &rng)
      let origins = SyntheticInput.structuredOrigins(count: total, rng: &rng)
      let input = SyntheticInput(
        layers: layers, kvHeads: kvHeads, queryHeads: queryHeads, headDim: headDim,
        origins: origins, rng: &rng)
      let policy = Self.randomPolicy(&rng)
      usedPolicies.insert(policy.name)
      let schedule: BudgetSchedule =
        Bool.random(using: &rng)
        ? .uniform : .pyramid(slope: Double.random(in: 0...0.8, using: &rng))
      // The smallest layer budget, about (1 − slope)·M, must hold what the policy needs.
      var low = max(1, policy.minimumBudget)
      if case .pyramid(let slope) = schedule {
        low = Int((Double(low) / (1 - slope)).rounded(.up)) + 1
      }
      let budget = Int.random(in: low...max(low, total + 16), using: &rng)
      let block = Int.random(in: 1...48, using: &rng)
      var options = RetentionOptions()
      switch Int.random(in: 0..<5, using: &rng) {
      case 0: options.protectText = true
      case 1: options.protectSystem = true
      case 2:
        options.quota = .init(
          unit: RetentionOptions.Quota.Unit.allCases.randomElement(using: &rng)!,
          minimum: Int.random(in: 1...3, using: &rng))
      default: break
      }
      let bpt = 2 * layers * kvHeads * headDim * 4
      let tag =
        "trial \(trial): \(policy) M=\(budget) \(schedule) b=\(block) L=\(layers) H=\(kvHeads)/\(queryHeads) d=\(headDim) n=\(total) \(options)"

      let meters = (
        capped: MemoryMeter(), sequential: MemoryMeter(), post: MemoryMeter(), full: MemoryMeter()
      )
      let capped = try BudgetedCache(
        layers: layers, kvHeads: kvHeads, headDim: headDim, queryHeads: queryHeads, budget: budget,
        schedule: schedule, mode: .capped, policy: policy, options: options, meter: meters.capped)
      let sequential = try BudgetedCache(
        layers: layers, kvHeads: kvHeads, headDim: headDim, queryHeads: queryHeads, budget: budget,
        schedule: schedule, mode: .sequential, policy: policy, options: options, blockSize: block,
        meter: meters.sequential)
      let post = try BudgetedCache(
        layers: layers, kvHeads: kvHeads, headDim: headDim, queryHeads: queryHeads, budget: budget,
        schedule: schedule, mode: .post, policy: policy, options: options, meter: meters.post)
      let full = DenseKVCache(
        layers: layers, kvHeads: kvHeads, headDim: headDim, initialCapacity: 16, meter: meters.full)

      // Blocks: fixed size b, or aligned to the structure (one frame / tile / text span, cut at b).
      let aligned = Bool.random(using: &rng)
      var fed = 0
      var refusedHere = false
      while fed < total {
        var end = min(total, fed + block)
        if aligned {
          var e = fed + 1
          while e < end && Self.unit(origins[e]) == Self.unit(origins[fed]) { e += 1 }
          end = e
        }
        let range = fed..<end
        let before = Self.snapshot(capped)
        do {
          try input.feed(range, into: capped)
        } catch let e as CacheError {
          guard case .budgetTooSmall = e else { throw e }
          // Refused: nothing changed, and sequential refuses the same block.
          XCTAssertEqual(Self.snapshot(capped), before, "refused block changed the cache: " + tag)
          XCTAssertThrowsError(try input.feed(range, into: sequential), tag)
          refused += 1
          refusedHere = true
          break
        }
        try input.feed(range, into: sequential)
        try input.feed(range, into: post)
        try input.feed(range, into: full)
        fed = end

        // The cap, after every block (the high-water mark covers the whole block).
        let cappedPeak = meters.capped.reading(.kv).highWater
        XCTAssertEqual(cappedPeak, budget * bpt, "capped storage is exactly the budget: " + tag)
        XCTAssertLessThanOrEqual(cappedPeak, budget * bpt, tag)
        cappedPeakOverBudget = max(cappedPeakOverBudget, Double(cappedPeak) / Double(budget * bpt))
        let seqPeak = meters.sequential.reading(.kv).highWater
        XCTAssertLessThanOrEqual(seqPeak, (budget + block) * bpt, tag)
        sequentialPeakOverBound = max(
          sequentialPeakOverBound, Double(seqPeak) / Double((budget + block) * bpt))
        sequentialPeakOverBudget = max(
          sequentialPeakOverBudget, Double(seqPeak) / Double(budget * bpt))

        // Contents.
        XCTAssertEqual(capped.layerBudgets.reduce(0, +), budget * layers, tag)
        XCTAssertEqual(
          (0..<layers).map { capped.count(layer: $0) }, capped.layerBudgets.map { min($0, fed) },
          tag)
        try Self.checkIntegrity(capped, input, fed: fed, tag: "capped " + tag)
        try Self.checkIntegrity(sequential, input, fed: fed, tag: "sequential " + tag)
        if Self.snapshot(capped).positions == Self.snapshot(sequential).positions {
          seqMatchesCapped += 1
        } else {
          XCTFail("capped and sequential hold different entries: " + tag)
        }
      }
      // full and post grow with the input: they held every token fed.
      if fed > 0 {
        XCTAssertGreaterThanOrEqual(meters.full.reading(.kv).highWater, fed * bpt, tag)
        XCTAssertGreaterThanOrEqual(meters.post.reading(.kv).highWater, fed * bpt, tag)
        XCTAssertEqual(post.count, fed, tag)
        minGrowth = min(minGrowth, Double(meters.post.reading(.kv).highWater) / Double(fed * bpt))
        if !refusedHere {
          do {
            try post.compress()
            XCTAssertEqual(post.count, min(post.layerBudgets.max()!, fed), tag)
            XCTAssertLessThanOrEqual(meters.post.reading(.kv).current, max(budget, fed) * bpt, tag)
            try Self.checkIntegrity(post, input, fed: fed, tag: "post " + tag)
          } catch CacheError.budgetTooSmall {
            // post saw everything at once: its mandatory set can exceed what capped ever had to hold.
          }
        }
      }
    }
    XCTAssertEqual(usedPolicies.count, 10, "every policy drawn")
    print(
      "hard-cap property: \(trials) trials, \(refused) refused (budget below the mandatory set), policies \(usedPolicies.sorted()); "
        + "capped peak/budget max \(cappedPeakOverBudget), sequential peak/(budget+block) max \(String(format: "%.3f", sequentialPeakOverBound)), "
        + "sequential peak/budget max \(String(format: "%.3f", sequentialPeakOverBudget)), post peak/input min \(minGrowth), capped==sequential in \(seqMatchesCapped) blocks"
    )
  }

  /// Which structural unit a token belongs to (block alignment).
  static func unit(_ o: TokenOrigin) -> [Int?] {
    [o.input, o.image, o.tile, o.frame, o.modality == .text ? -1 : nil]
  }

  static func checkIntegrity(_ c: BudgetedCache, _ input: SyntheticInput, fed: Int, tag: String)
    throws
  {
    for l in 0..<c.layers {
      XCTAssertLessThanOrEqual(c.count(layer: l), min(c.layerBudgets[l], fed), tag)
      for h in 0..<c.kvHeads {
        let pos = c.positions(layer: l, head: h)
        XCTAssertEqual(pos.count, c.count(layer: l), tag)
        XCTAssertTrue(
          zip(pos, pos.dropFirst()).allSatisfy { $0 < $1 }, "positions ascending: " + tag)
        XCTAssertTrue(pos.allSatisfy { $0 < fed }, tag)
        for (r, p) in pos.enumerated() {
          let k = Array(
            UnsafeBufferPointer(start: c.key(layer: l, head: h, row: r), count: c.headDim))
          let v = Array(
            UnsafeBufferPointer(start: c.value(layer: l, head: h, row: r), count: c.headDim))
          if k != Array(input.key(layer: l, position: p, head: h))
            || v != Array(input.value(layer: l, position: p, head: h))
          {
            XCTFail("row \(r) (position \(p)) of layer \(l) head \(h) is not what was fed: " + tag)
            return
          }
          XCTAssertEqual(c.entries(layer: l, head: h)[r].origin, input.origins[p], tag)
        }
        // Whatever the policy and options make mandatory now is held (sinks, window, text).
        if c.options.protectText {
          let text = (0..<fed).filter { input.origins[$0].modality == .text }
          XCTAssertTrue(Set(text).isSubset(of: pos), "protected text kept: " + tag)
        }
        if c.options.protectSystem {
          let sys = (0..<fed).filter { input.origins[$0].isSystem }
          XCTAssertTrue(Set(sys).isSubset(of: pos), "protected system kept: " + tag)
        }
        if let s = c.policy as? StreamingLLMPolicy, fed > 0 {
          XCTAssertEqual(
            Array(pos.prefix(min(s.sinks, fed))), Array(0..<min(s.sinks, fed)), "sinks kept: " + tag
          )
        }
        if let s = c.policy as? SnapKVPolicy {
          let w = Array(max(0, fed - s.window)..<fed)
          XCTAssertTrue(Set(w).isSubset(of: pos), "window kept: " + tag)
        }
        if let s = c.policy as? H2OPolicy {
          let r = min(c.count(layer: l), s.recentCount(budget: c.layerBudgets[l]))
          XCTAssertTrue(Set((fed - r)..<fed).isSubset(of: pos), "recent kept: " + tag)
        }
      }
    }
  }
}

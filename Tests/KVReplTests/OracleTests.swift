import Foundation
import KVCache
import KVEngine
import KVModels
import KVTasks
import XCTest

@testable import KVRepl

/// `policy oracle` on the embedded model (weights/kvlab-shapes: 64-px tiles of 4×4 tokens, so
/// one token covers 16×16 pixels of a tile; needle images are 512 px, 8×8 tiles + the global
/// image): which tokens it keeps, and its refusals.
final class OracleTests: XCTestCase {
  static let model = repositoryRoot + "/weights/kvlab-shapes"

  func loaded() -> (Repl, CaptureSink) {
    let (repl, out) = makeRepl()
    XCTAssertEqual(repl.run(line: "load \(Self.model)"), .ok, out.text)
    return (repl, out)
  }

  /// The patches a shape's bounding box covers, computed pixel by pixel from the embedded
  /// model's geometry (independently of `TargetGeometry`): tile (y/64, x/64) at patch
  /// ((y%64)/16, (x%64)/16) and, for a split image, the global tile (the 512-px image
  /// shrunk to 64 px: 128 px a patch).
  func covered(
    _ s: PlacedShape, side: Int, split: Bool, input: Int, image: Int, frame: Int? = nil
  ) -> Set<PatchKey> {
    var keys: Set<PatchKey> = []
    let tiles = side / 64
    for py in max(0, s.y - s.radius)...min(side - 1, s.y + s.radius) {
      for px in max(0, s.x - s.radius)...min(side - 1, s.x + s.radius) {
        if split {
          keys.insert(
            PatchKey(
              input: input, image: image, tile: (py / 64) * tiles + px / 64, row: (py % 64) / 16,
              col: (px % 64) / 16, frame: frame))
        }
        let global = side / 4  // pixels per patch of the global tile (4 patches a side)
        keys.insert(
          PatchKey(
            input: input, image: image, tile: split ? tiles * tiles : 0, row: py / global,
            col: px / global, frame: frame))
      }
    }
    return keys
  }

  /// Checks every (layer, KV head) holds every key of `keys`, and that the budget evicted visual
  /// tokens (so keeping them was a choice). Returns how many visual tokens layer 0 head 0 holds.
  @discardableResult
  func assertHeld(_ keys: Set<PatchKey>, _ repl: Repl, visual: Int) throws -> Int {
    let cache = try XCTUnwrap(repl.session.budgetedCache)
    var held0 = 0
    for l in 0..<cache.layers {
      for h in 0..<cache.kvHeads {
        let held = Set(cache.entries(layer: l, head: h).compactMap(PatchKey.init))
        XCTAssertTrue(keys.isSubset(of: held), "layer \(l) head \(h): \(keys.subtracting(held).sorted()) evicted")
        XCTAssertLessThan(held.count, visual / 2, "layer \(l) head \(h) evicted too little")
        if l == 0 && h == 0 { held0 = held.count }
      }
    }
    return held0
  }

  /// The budget of `share` of the visual tokens on top of the text (protected) and a few tokens
  /// for the question and answer.
  func budget(_ repl: Repl, visual: Int, share: Double) -> Int {
    repl.session.context.count - visual + Int((share * Double(visual)).rounded()) + 24
  }

  func testNeedleImageKeepsEveryTargetToken() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic needle-image seed=3"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleImage, seed: 3)
    let fed = try XCTUnwrap(repl.syntheticFed).index
    let expected = covered(sample.target, side: 512, split: true, input: fed.input, image: fed.image)
    let b = budget(repl, visual: 1040, share: 0.05)
    XCTAssertEqual(
      runLines(repl, "policy oracle", "protect text=on", "budget \(b) tokens"), .ok, out.text)
    let oracle = try XCTUnwrap(repl.session.cacheSettings.policy as? OraclePolicy)
    XCTAssertEqual(oracle.targets, expected)
    XCTAssertEqual(
      oracle.description,
      "oracle fill=keydiff (targets: \(expected.count) visual tokens of needle-image seed=3)")
    try assertHeld(expected, repl, visual: 1040)
  }

  func testNeedleVideoKeepsTheNeedlesFrames() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic needle-video seed=5"), .ok, out.text)
    let sample = try SyntheticGenerator.generate(.needleVideo, seed: 5)
    let fed = try XCTUnwrap(repl.syntheticFed).index
    let span = try XCTUnwrap(sample.frameSpan)
    var expected: Set<PatchKey> = []
    for f in span {
      expected.formUnion(
        covered(sample.target, side: 64, split: false, input: fed.input, image: fed.image, frame: f))
    }
    let visual = 32 * 16
    // The budget last: setting it rebuilds the cache from the context with the oracle.
    XCTAssertEqual(
      runLines(
        repl, "policy oracle", "protect text=on",
        "budget \(budget(repl, visual: visual, share: 0.05)) tokens"), .ok, out.text)
    let oracle = try XCTUnwrap(repl.session.cacheSettings.policy as? OraclePolicy)
    XCTAssertEqual(oracle.targets, expected)
    try assertHeld(expected, repl, visual: visual)
  }

  /// An oracle in use takes the targets of each new synthetic sample before it is fed, so a
  /// capped prefill ranks the new sample's tokens by its own target.
  func testFeedWhileOracleIsInUseRetargets() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=1"), .ok, out.text)
    XCTAssertEqual(
      runLines(
        repl, "policy oracle", "protect text=on",
        "budget \(repl.session.context.count + 40) tokens"), .ok, out.text)
    let first = try XCTUnwrap(repl.syntheticFed).index
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=4"), .ok, out.text)
    let fed = try XCTUnwrap(repl.syntheticFed).index
    XCTAssertGreaterThan(fed.input, first.input)
    let sample = try SyntheticGenerator.generate(.count, seed: 4)
    var expected: Set<PatchKey> = []
    for s in sample.shapes where s.kind == sample.target.kind {
      expected.formUnion(covered(s, side: 64, split: false, input: fed.input, image: fed.image))
    }
    let oracle = try XCTUnwrap(repl.session.cacheSettings.policy as? OraclePolicy)
    XCTAssertEqual(oracle.targets, expected)
    XCTAssertEqual(
      oracle.description,
      "oracle fill=keydiff (targets: \(expected.count) visual tokens of count seed=4)")
    let cache = try XCTUnwrap(repl.session.budgetedCache)
    for l in 0..<cache.layers {
      for h in 0..<cache.kvHeads {
        let held = Set(cache.entries(layer: l, head: h).compactMap(PatchKey.init))
        XCTAssertTrue(expected.isSubset(of: held), "layer \(l) head \(h)")
      }
    }
  }

  func testCountTargetsEveryShapeOfTheCountedKind() throws {
    for seed in 0..<6 {
      let sample = try SyntheticGenerator.generate(.count, seed: UInt64(seed))
      let shapes = TargetGeometry.shapes(of: sample)
      XCTAssertEqual(shapes.count, sample.count, "seed \(seed)")
      XCTAssertTrue(shapes.allSatisfy { $0.shape.kind == sample.target.kind && $0.frames == nil })
    }
    let attribute = try SyntheticGenerator.generate(.attribute, seed: 2)
    XCTAssertEqual(TargetGeometry.shapes(of: attribute).map(\.shape), [attribute.target])
  }

  /// A REPL session: the oracle at 5% of the visual tokens answers what the full cache
  /// answers, on seeds where KeyDiff alone at that budget does not. The setting is the accuracy
  /// benchmark's (tile blocks, text protected, the budget = the prompt's text tokens, question
  /// included, + 52 visual tokens); both seeds ask "which shape is COLOR?", 9 prompt tokens.
  func testOracleAnswersWhereFullCacheDoes() throws {
    for seed in Self.answerSeeds {
      var answers: [String: String] = [:]
      for policy in ["full", "keydiff", "oracle"] {
        let (repl, out) = loaded()
        XCTAssertEqual(
          repl.run(line: "feed synthetic needle-image seed=\(seed)"), .ok, out.text)
        if policy != "full" {
          let b = repl.session.context.count - 1040 + 9 + 52
          XCTAssertEqual(
            runLines(
              repl, "policy \(policy)", "protect text=on", "prefill block=tile",
              "budget \(b) tokens"), .ok, out.text)
        }
        XCTAssertEqual(repl.run(line: "synthetic ask max=3"), .ok, out.text)
        answers[policy] = out.lines.last
      }
      XCTAssertTrue(answers["full"]!.hasSuffix("(correct)"), "seed \(seed): \(answers)")
      XCTAssertTrue(answers["keydiff"]!.hasSuffix("(wrong)"), "seed \(seed): \(answers)")
      XCTAssertEqual(answers["oracle"], answers["full"], "seed \(seed)")
    }
  }

  static let answerSeeds = [1, 31]

  func testRefusesWithoutASyntheticInput() throws {
    let (repl, out) = loaded()
    let before = repl.session.cacheSettings.policy.description
    let line = "error: policy oracle: needs a synthetic input (feed synthetic TASK seed=N) to know its target"
    XCTAssertEqual(repl.run(line: "policy oracle"), .failed)
    XCTAssertEqual(out.lines.last, line)
    XCTAssertEqual(repl.session.cacheSettings.policy.description, before)
    // A sample that left the context (reset) is no target either.
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=1"), .ok, out.text)
    XCTAssertEqual(repl.run(line: "reset"), .ok, out.text)
    XCTAssertEqual(repl.run(line: "policy oracle fill=snapkv"), .failed)
    XCTAssertEqual(out.lines.last, line)
    XCTAssertEqual(repl.session.cacheSettings.policy.description, before)
  }

  /// The oracle's targets are worked out for Idefics3's tiles only: another family (here the
  /// paper's InternVL) gets one line naming it, and the policy and context stay as they were.
  func testOtherFamilyIsOneLine() throws {
    let (repl, out) = makeRepl()
    let internvl = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm/internvl_qwen3/model"
    XCTAssertEqual(repl.run(line: "load \(internvl)"), .ok, out.text)
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=1"), .ok, out.text)
    let policy = repl.session.cacheSettings.policy.description
    let context = repl.session.contextCount
    let before = out.lines.count
    XCTAssertEqual(repl.run(line: "policy oracle"), .failed)
    XCTAssertEqual(out.lines.count, before + 1, out.text)
    XCTAssertEqual(
      out.lines.last,
      "error: policy oracle: the oracle's targets follow Idefics3's tiles only; the loaded model is internvl (load weights/kvlab-shapes or an Idefics3 / SmolVLM model)"
    )
    XCTAssertEqual(repl.session.cacheSettings.policy.description, policy)
    XCTAssertEqual(repl.session.contextCount, context)
  }

  func testBadFillIsOneLine() throws {
    let (repl, out) = loaded()
    XCTAssertEqual(repl.run(line: "feed synthetic count seed=1"), .ok, out.text)
    let before = out.lines.count
    XCTAssertEqual(repl.run(line: "policy oracle fill=lru"), .failed)
    XCTAssertEqual(out.lines.count, before + 1, out.text)
    XCTAssertTrue(
      out.lines.last!.hasPrefix("error: policy oracle: ") && out.lines.last!.contains("fill"),
      out.text)
    XCTAssertEqual(repl.run(line: "policy oracle window=8"), .failed)
    XCTAssertTrue(out.lines.last!.hasPrefix("error: policy oracle: "), out.text)
  }
}

import Foundation
import KVEngine
import KVModels
import XCTest

/// The registry is the list of what kvlab loads: every family in it must load its fixture
/// through the session (`load PATH`) in each format it claims — a Hugging Face folder when it
/// has model_types, a GGUF file when it has architectures — and report itself. A registry line
/// without a fixture here fails, as does a fixture for a family no longer registered.
final class ModelRegistryTests: XCTestCase {
  /// Each family's fixtures under Tests/KVEngineTests/Fixtures (the scripts that make them:
  /// docs/adding-a-model.md).
  static let fixtures: [String: (folder: String?, gguf: String?)] = [
    "llama": ("decoders/llama_folder", "decoders/llama_tokenized.gguf"),
    "qwen2": ("decoders/qwen2_folder", "decoders/qwen2_tokenized.gguf"),
    "qwen3": ("qwen3/qwen3_gqa2", "qwen3/qwen3_gqa2.gguf"),
    "idefics3": ("vlm/idefics3/model", nil),
    "llava": ("vlm/llava/model", nil),
    "qwen2_vl": ("vlm/qwen2_vl/model", nil),
    "qwen2_5_vl": ("vlm/qwen2_5_vl/model", nil),
    "internvl": ("vlm/internvl/model", nil),
  ]

  func testEveryRegisteredFamilyLoadsItsFixture() throws {
    XCTAssertEqual(
      Set(Self.fixtures.keys), Set(ModelRegistry.families.map(\.name)),
      "one fixture entry per registered family")
    for family in ModelRegistry.families {
      guard let fixture = Self.fixtures[family.name] else {
        XCTFail("family \(family.name) is registered without a fixture (docs/adding-a-model.md)")
        continue
      }
      XCTAssertEqual(
        fixture.folder != nil, !family.modelTypes.isEmpty, "\(family.name): folder fixture")
      XCTAssertEqual(
        fixture.gguf != nil, !family.ggufArchitectures.isEmpty, "\(family.name): GGUF fixture")
      for path in [fixture.folder, fixture.gguf].compactMap({ $0 }) {
        try checkLoads(family, TestPaths.fixtures + "/" + path)
      }
    }
  }

  private func checkLoads(_ family: ModelFamily, _ path: String) throws {
    let session = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
    let report = try session.load(path)
    XCTAssertEqual(session.family?.name, family.name, path)
    XCTAssertGreaterThan(report.parameters, 0, path)
    if family.hasVision {
      let vision = try XCTUnwrap(session.vision, path)
      XCTAssertEqual(report.architecture, vision.family, path)
      let fed = try session.feedImage(TestPaths.fixtures + "/vlm/images/img_45x61.png")
      XCTAssertGreaterThan(fed.visualUnits, 0, path)
      XCTAssertGreaterThan(fed.visualTokens, 0, path)
    } else {
      XCTAssertNil(session.vision, path)
      XCTAssertTrue(family.ggufArchitectures.contains(report.architecture)
        || family.modelTypes.contains(report.architecture), "\(path): \(report.architecture)")
      try session.feedText("a red square", raw: true)
    }
    let logits = try XCTUnwrap(session.nextTokenLogits, path)
    XCTAssertTrue(logits.allSatisfy(\.isFinite), path)
  }

  /// The text families' folders, and the same weights as GGUF files with their tokenizer, say
  /// what transformers says: the ids of the text and the logits of its last position within
  /// 1e-4 (scripts/gen_registry_fixtures.py).
  func testDecoderFoldersMatchTransformers() throws {
    struct Expected: Decodable {
      let text: String
      let ids: [Int]
      let last_logits: [Float]
    }
    for (name, path) in [
      ("llama", "llama_folder"), ("llama", "llama_tokenized.gguf"), ("qwen2", "qwen2_folder"),
      ("qwen2", "qwen2_tokenized.gguf"),
    ] {
      let folder = TestPaths.fixtures + "/decoders/\(name)_folder"
      let expected = try JSONDecoder().decode(
        Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
      let session = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
      _ = try session.load(TestPaths.fixtures + "/decoders/" + path)
      XCTAssertEqual(session.family?.name, name, path)
      XCTAssertEqual(try session.tokenize(expected.text), expected.ids, path)
      try session.feedText(expected.text, raw: true)
      let logits = try XCTUnwrap(session.nextTokenLogits)
      XCTAssertEqual(logits.count, expected.last_logits.count, path)
      let worst = zip(logits, expected.last_logits).map { abs($0 - $1) }.max() ?? .infinity
      XCTAssertLessThanOrEqual(worst, 1e-4, path)
    }
  }
}

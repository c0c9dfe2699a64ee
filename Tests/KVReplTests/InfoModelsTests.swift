import Foundation
import KVEngine
import KVModels
import KVTensor
import XCTest

@testable import KVRepl

/// `info models` prints the registry, needing no model: what a folder's model_type or a GGUF's
/// architecture may be, and each family's visual unit and options, as `feed` uses them.
final class InfoModelsTests: XCTestCase {
  /// `info`'s reason for the prefill kernel, for each way it can have been chosen.
  func testPrefillKernelReason() {
    let zen4 = ["avx2", "avx512", "avx512_vnni", "avx512_bf16"]
    XCTAssertEqual(
      ReplCommands.prefillKernelReason(.auto, pinnedToReference: false, features: zen4),
      "auto: avx512_bf16; --prefill-kernel sgemm for the float32 reference")
    XCTAssertEqual(
      ReplCommands.prefillKernelReason(.auto, pinnedToReference: false, features: ["avx2"]),
      "auto: avx2 without avx512_bf16; --prefill-kernel sgemm for the float32 reference")
    XCTAssertEqual(
      ReplCommands.prefillKernelReason(.auto, pinnedToReference: false, features: []),
      "auto: no avx2")
    XCTAssertEqual(
      ReplCommands.prefillKernelReason(.auto, pinnedToReference: true, features: zen4),
      "auto: recording and replay run the float32 reference")
    XCTAssertEqual(
      ReplCommands.prefillKernelReason(.named(.bf16), pinnedToReference: false, features: zen4),
      "chosen by --prefill-kernel")
  }

  func testInfoModelsListsEveryRegisteredFamily() throws {
    let (repl, capture) = makeRepl()
    XCTAssertEqual(repl.run(line: "info models"), .ok, capture.text)
    XCTAssertEqual(
      capture.lines,
      [
        "family      model_type (folder)  architecture (gguf)  visual unit     options",
        "llama       llama                llama                - (text)        -",
        "qwen2       qwen2                qwen2                - (text)        -",
        "qwen3       qwen3                qwen3                - (text)        -",
        "idefics3    idefics3, smolvlm    -                    tile            split=",
        "llava       llava                -                    image           -",
        "qwen2_vl    qwen2_vl             -                    temporal patch  -",
        "qwen2_5_vl  qwen2_5_vl           -                    temporal patch  -",
        "internvl    internvl             -                    tile            -",
      ])
    XCTAssertEqual(capture.lines.count, ModelRegistry.families.count + 1)
  }

  /// `feed` counts the loaded family's units by the family's own name.
  func testFeedCountsInTheFamilysUnit() throws {
    let (repl, capture) = makeRepl()
    let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"
    for (family, unit) in [
      ("idefics3", "tile"), ("llava", "image"), ("qwen2_vl", "temporal patch"), ("internvl", "tile"),
    ] {
      XCTAssertEqual(repl.run(line: "load \(vlm)/\(family)/model"), .ok, capture.text)
      XCTAssertEqual(repl.run(line: "feed image \(vlm)/images/img_45x61.png"), .ok, capture.text)
      let fed = try XCTUnwrap(capture.lines.last { $0.hasPrefix("fed image") })
      XCTAssertTrue(fed.contains(": 1 \(unit),") || fed.contains(" \(unit)s,"), "\(family): \(fed)")
    }
  }
}

import Foundation
import XCTest

@testable import KVModels

/// Every input the fuzzers (fuzz/, scripts/fuzz.sh) found to crash kvlab, kept in
/// fuzz/regressions/TARGET-NAME, run through the same entry points as the fuzz target: each must
/// now be refused with an error (a trap would end the test process).
final class FuzzRegressionTests: XCTestCase {
  static let folder =
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fuzz/regressions").path

  func inputs(_ target: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: Self.folder)
      .filter { $0.hasPrefix(target + "-") }.sorted().map { Self.folder + "/" + $0 }
  }

  /// config-preprocessor-*: a Qwen2-VL preprocessor_config.json with "patch_size": 0 trapped (a
  /// NaN size converted to Int in smart resizing). config-decoder-*: a llama config.json with
  /// "num_attention_heads": 0 and no head_dim trapped (division by zero deriving head_dim).
  func testConfigInputs() throws {
    let files = try inputs("config")
    XCTAssertFalse(files.isEmpty)
    for path in files {
      let value = try JSONValue.parse(Data(contentsOf: URL(fileURLWithPath: path)))
      let json = try XCTUnwrap(value.object, path)
      do {
        if path.contains("config-decoder-") {
          try value.decode(DecoderConfig.self).validate(source: path)
        } else {
          _ = try ImagePreprocessor(config: json, path: path).outputSize(height: 480, width: 640)
        }
        XCTFail("\(path): accepted")
      } catch {
        XCTAssertTrue("\(error)".hasPrefix(path + ": "), "\(error)")
      }
    }
  }

  /// A tokenizer.json whose vocabulary gives a token the id 3.5·10^39 allocated an array of
  /// that many entries (an id converted from a JSON double without a range check).
  func testTokenizerInputs() throws {
    let files = try inputs("tokenizer")
    XCTAssertFalse(files.isEmpty)
    for path in files {
      XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: path), path) { error in
        XCTAssertTrue("\(error)".contains(path), "\(error)")
      }
    }
  }
}

import Foundation
import KVEngine
import XCTest

/// Paths the tests share: the repository root (from this file's location), the real model
/// fetched by scripts/setup.sh, and the committed fixtures.
enum TestPaths {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path
  static let model = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  static let fixtures = root + "/Tests/KVEngineTests/Fixtures"

  /// The real model is required (CI fetches it in setup); a missing file fails loudly.
  static func requireModel() throws -> String {
    guard FileManager.default.fileExists(atPath: model) else {
      XCTFail("\(model) is missing: run scripts/setup.sh")
      throw XCTSkip("model missing")
    }
    return model
  }

  /// A session whose bare `load` loads the real model, on 2 threads.
  static func textModelSession() throws -> Session {
    _ = try requireModel()
    return Session(
      options: EngineOptions(
        threads: 2, modelDirectories: [root + "/models"], defaultModel: EngineOptions.textModelFile))
  }
}

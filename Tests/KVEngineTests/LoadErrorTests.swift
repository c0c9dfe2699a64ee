import Foundation
import KVEngine
import XCTest

/// Bad model files given to `load`: each a one-line error naming the file (docs/bad-input.md).
final class LoadErrorTests: XCTestCase {
  var folder = ""

  override func setUpWithError() throws {
    folder = NSTemporaryDirectory() + "kvlab-load-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: folder)
  }

  private func loadError(_ path: String) -> String {
    let session = Session(options: EngineOptions(threads: 2, modelDirectories: []))
    do {
      _ = try session.load(path)
      return "loaded"
    } catch {
      XCTAssertNil(session.model, "a failed load must leave no model")
      return "\(error)"
    }
  }

  private func write(_ name: String, _ bytes: Data) throws -> String {
    let path = folder + "/" + name
    try bytes.write(to: URL(fileURLWithPath: path))
    return path
  }

  /// The real model with `patch` applied to its bytes.
  private func patchedModel(_ name: String, _ patch: (inout Data) throws -> Void) throws -> String {
    var data = try Data(contentsOf: URL(fileURLWithPath: try TestPaths.requireModel()))
    try patch(&data)
    return try write(name, data)
  }

  func testMissingFile() {
    XCTAssertEqual(loadError(folder + "/nope.gguf"), folder + "/nope.gguf: no such file")
  }

  func testFolder() {
    XCTAssertEqual(
      loadError(folder),
      folder
        + ": is a folder without config.json; expected a .gguf file or a Hugging Face model folder")
  }

  func testNoDefaultModel() {
    XCTAssertEqual(loadError(""), "empty model path")
    let session = Session(options: EngineOptions(threads: 2, modelDirectories: [folder]))
    XCTAssertThrowsError(try session.load(nil)) {
      XCTAssertEqual(
        "\($0)",
        "default model kvlab-shapes not found in \(folder); set KVLAB_MODELS to the folder that holds it, or give its path (load PATH)"
      )
    }
  }

  func testEmptyFile() throws {
    let p = try write("empty.gguf", Data())
    XCTAssertEqual(loadError(p), p + ": file too short to be GGUF: 0 bytes, the header alone is 24")
  }

  func testNotGGUF() throws {
    let p = try write("notes.gguf", Data("hello, this is not a model\n".utf8))
    XCTAssertEqual(
      loadError(p), p + #": not a GGUF file: magic is "hell" (68 65 6c 6c), expected "GGUF""#)
  }

  func testTruncatedModel() throws {
    let real = try Data(contentsOf: URL(fileURLWithPath: try TestPaths.requireModel()))
    let p = try write("cut.gguf", real.prefix(4 << 20))
    let error = loadError(p)
    XCTAssertTrue(error.hasPrefix(p + ": tensor '"), error)
    XCTAssertTrue(error.contains("runs past the end of the file (4194304 bytes)"), error)
  }

  func testUnsupportedArchitecture() throws {
    // Same-length rename of the architecture: 'llama' → 'bloom'.
    let p = try patchedModel("bloom.gguf") { data in
      let key = Data("general.architecture".utf8)
      let at = try XCTUnwrap(data.range(of: key))
      // key, then value type u32 (8 = string), length u64, then the bytes.
      let value = at.upperBound + 4 + 8
      XCTAssertEqual(data[value..<(value + 5)], Data("llama".utf8))
      data.replaceSubrange(value..<(value + 5), with: Data("bloom".utf8))
    }
    XCTAssertEqual(loadError(p), p + ": architecture 'bloom' is not supported (llama, qwen2, qwen3)")
  }

  func testUnsupportedQuantType() throws {
    // token_embd.weight relabelled from Q8_0 to Q5_0: valid GGUF, but not a type kvlab dequantizes.
    let p = try patchedModel("q5.gguf") { data in
      let name = Data("token_embd.weight".utf8)
      let at = try XCTUnwrap(data.range(of: name))
      let type = at.upperBound + 4 + 2 * 8  // n_dims u32, two u64 dims, then the type
      XCTAssertEqual(data[type], 8)
      data[type] = 6
    }
    XCTAssertEqual(
      loadError(p),
      p + ": tensor 'token_embd.weight': ggml type Q5_0 (6) cannot be dequantized "
        + "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)")
  }

  func testModelWithoutTokenizer() throws {
    let p = TestPaths.fixtures + "/decoders/qwen2.gguf"
    let error = loadError(p)
    XCTAssertTrue(error.hasPrefix(p + ": "), error)
    XCTAssertTrue(error.lowercased().contains("tokenizer"), error)
  }
}

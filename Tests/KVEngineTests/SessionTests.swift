import Foundation
import KVEngine
import KVTensor
import XCTest

/// The session end to end on the real model: what a user does from the REPL.
final class SessionTests: XCTestCase {
  func makeSession() throws -> Session { try TestPaths.textModelSession() }

  func testAnswersCapitalOfFranceGreedy() throws {
    let session = try makeSession()
    let report = try session.load(nil)
    XCTAssertEqual(report.architecture, "llama")
    XCTAssertEqual(report.layers, 30)
    XCTAssertEqual(report.kvBytesPerToken, 2 * 30 * 3 * 64 * 4)
    var streamed = ""
    let answer = try session.ask(
      "What is the capital of France?", options: GenerationOptions(maxTokens: 16)
    ) { streamed += $0 }
    XCTAssertTrue(answer.text.contains("Paris"), answer.text)
    XCTAssertEqual(streamed, answer.text)
    // The reference continuation (transformers, greedy) starts with this sentence.
    XCTAssertTrue(answer.text.hasPrefix("The capital of France is Paris."), answer.text)
  }

  func testChatPromptMatchesTemplateTokenization() throws {
    let session = try makeSession()
    _ = try session.load(nil)
    _ = try session.feedText("What is the capital of France?", raw: false)
    // The fed context equals the template rendering of one user message (the generation
    // prompt comes with `ask`).
    let expected = try session.tokenize(
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
    )
    XCTAssertEqual(session.context, expected)
  }

  func testSampledGenerationIsDeterministicForASeed() throws {
    let session = try makeSession()
    _ = try session.load(nil)
    func run(seed: UInt64) throws -> [Int] {
      session.reset()
      _ = try session.feedText("Once upon a time", raw: true)
      return try session.generate(
        options: GenerationOptions(
          maxTokens: 12, temperature: 0.9, topK: 40, topP: 0.95, seed: seed)
      ) { _ in }.tokens
    }
    let a = try run(seed: 7)
    XCTAssertEqual(a, try run(seed: 7))
    XCTAssertNotEqual(a, try run(seed: 8))
  }

  func testMeterChargesWeightsAndKV() throws {
    let session = try makeSession()
    _ = try session.load(nil)
    // The matrices stay Q4_1/Q8_0, read in place from the file (the tied embedding once); the
    // heap holds the norms and the llama Q/K rows put back in rotate-half order.
    let heap = session.meter.reading(.weights).current
    let mapped = session.meter.reading(.mapped).current
    let tensorBytes = 96_576_768  // the GGUF's tensor data (gguf.GGUFReader: Σ n_bytes)
    XCTAssertEqual(heap + mapped, tensorBytes, accuracy: 64 * 1024)
    XCTAssertLessThanOrEqual(Double(heap + mapped), 1.15 * Double(tensorBytes))
    XCTAssertGreaterThan(mapped, heap)
    // The float32 reference path holds 134.5M float32 parameters.
    let reference = try makeSession()
    _ = try reference.load(nil, precision: .f32)
    XCTAssertEqual(reference.meter.reading(.weights).current, 134_515_008 * 4, accuracy: 1_000_000)
    XCTAssertEqual(reference.meter.reading(.mapped).current, 0)
    // More tokens than the dense cache's first allocation (256), so that it grows.
    _ = try session.feedText(String(repeating: "hello world ", count: 200), raw: true)
    XCTAssertGreaterThan(session.context.count, 256)
    let kv = session.meter.reading(.kv)
    XCTAssertGreaterThanOrEqual(kv.current, session.context.count * 2 * 30 * 3 * 64 * 4)
    XCTAssertGreaterThanOrEqual(kv.highWater, kv.current)
    session.reset()
    XCTAssertLessThan(session.meter.reading(.kv).current, kv.current)
  }

  func testCancellationKeepsSessionConsistent() throws {
    let session = try makeSession()
    _ = try session.load(nil)
    session.cancellation.set()
    XCTAssertThrowsError(try session.feedText("hello", raw: true)) { error in
      XCTAssertEqual(error as? EngineError, .cancelled("prefill stopped after 0 of 1 tokens"))
    }
    session.cancellation.clear()
    XCTAssertEqual(session.context, [])
    _ = try session.feedText("hello", raw: true)
    XCTAssertEqual(session.context.count, 1)
  }

  func testLogitsFileHasEveryPosition() throws {
    let session = try makeSession()
    _ = try session.load(nil)
    _ = try session.feedText("The quick brown fox", raw: true)
    let path = NSTemporaryDirectory() + "kvlab-logits-\(getpid()).npy"
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try session.writeLogits(to: path)
    XCTAssertEqual(shape.rows, session.context.count)
    let (dims, values) = try NPYReader.read(path)
    XCTAssertEqual(dims, [session.context.count, 49152])
    XCTAssertEqual(values.count, session.context.count * 49152)
    XCTAssertTrue(values.allSatisfy { $0.isFinite })
  }

  func testBadInputsGiveOneLineErrors() throws {
    let session = try makeSession()
    XCTAssertThrowsError(try session.feedText("x", raw: true)) {
      XCTAssertEqual("\($0)", "no model loaded (use 'load' first)")
    }
    XCTAssertThrowsError(try session.load("/nonexistent/model.gguf")) {
      XCTAssertEqual("\($0)", "/nonexistent/model.gguf: no such file")
    }
    XCTAssertThrowsError(try session.load(TestPaths.root + "/models")) {
      XCTAssertEqual(
        "\($0)",
        TestPaths.root
          + "/models: is a folder without config.json; expected a .gguf file or a Hugging Face model folder"
      )
    }
    _ = try session.load(nil)
    XCTAssertThrowsError(try session.generate(options: GenerationOptions()) { _ in }) {
      XCTAssertEqual("\($0)", "nothing fed yet; feed text first")
    }
  }
}

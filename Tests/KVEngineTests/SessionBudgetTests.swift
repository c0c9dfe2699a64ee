import Foundation
import KVCache
import KVEngine
import KVModels
import KVTensor
import XCTest

/// The session's budget hook: budget / policy / prefill mode configuration.
final class SessionBudgetTests: XCTestCase {
  static let text = String(repeating: "The lighthouse keeper counted the boats and wrote the number in his notebook. ", count: 6)

  func testBudgetPolicyAndModeOnTheSession() throws {
    let path = try TestPaths.requireModel()
    let s = Session(options: EngineOptions(threads: 2, prefillChunk: 64))
    try s.configureBudget(.tokens(40))  // before load: stored
    XCTAssertEqual(s.cacheSettings.mode, .capped)
    try s.configurePolicy(try PolicyCatalog.make("snapkv", options: ["window": "8"]))
    try s.configurePrefill(mode: .capped, block: 32)
    let load = try s.load(path)
    let bpt = load.kvBytesPerToken
    XCTAssertNotNil(s.budgetedCache)
    s.meter.resetHighWater()
    try s.feedText(Self.text, raw: false)
    XCTAssertGreaterThan(s.context.count, 100)
    XCTAssertEqual(s.cacheSummary?.tokens, 40)
    XCTAssertEqual(s.meter.reading(.kv).highWater, 40 * bpt)
    let answer = try s.ask("What did he count?", options: GenerationOptions(maxTokens: 4), onText: { _ in })
    XCTAssertFalse(answer.tokens.isEmpty)
    XCTAssertEqual(s.meter.reading(.kv).highWater, 40 * bpt)
    XCTAssertEqual(s.cacheSummary?.tokens, 40)

    // Shrink mid-session: compressed now.
    try s.configureBudget(.tokens(24))
    XCTAssertEqual(s.cacheSummary?.tokens, 24)
    XCTAssertEqual(s.meter.reading(.kv).current, 24 * bpt)
    // Bad inputs: errors, session unchanged.
    XCTAssertThrowsError(try s.configureBudget(.tokens(4))) { e in XCTAssertTrue("\(e)".contains("below what snapkv"), "\(e)") }
    XCTAssertThrowsError(try s.configureBudget(.bytes(1000))) { e in XCTAssertTrue("\(e)".contains("less than one token"), "\(e)") }
    XCTAssertThrowsError(try s.configurePrefill(mode: .capped, block: 0))
    XCTAssertEqual(s.cacheSummary?.tokens, 24)
    XCTAssertEqual(s.cacheSettings.budget, .tokens(24))

    // Mode change: the cache is rebuilt from the context (exact), here post: compressed after input.
    let contextBefore = s.context
    try s.configurePrefill(mode: .post)
    XCTAssertEqual(s.context, contextBefore)
    XCTAssertEqual(s.cacheSummary?.tokens, 24)
    XCTAssertEqual(s.budgetedCache?.mode, .post)
    // Budget off: back to the full cache, rebuilt from the context.
    try s.configureBudget(nil)
    XCTAssertNil(s.budgetedCache)
    XCTAssertEqual(s.cacheSummary?.tokens, s.context.count)
    XCTAssertThrowsError(try s.configurePrefill(mode: .sequential)) { e in XCTAssertTrue("\(e)".contains("needs a budget"), "\(e)") }
  }

  /// Full → budgeted with the same context gives the same next-token logits as a session that was
  /// budgeted from the start, when the budget covers the context.
  func testRebuildMatchesBudgetedFromStart() throws {
    let path = try TestPaths.requireModel()
    let a = Session(options: EngineOptions(threads: 2, prefillChunk: 32))
    _ = try a.load(path)
    try a.feedText("Hello there, how are you today?", raw: false)
    try a.configureBudget(.tokens(200))
    try a.configurePrefill(mode: .capped, block: 32)
    let b = Session(options: EngineOptions(threads: 2, prefillChunk: 32))
    try b.configureBudget(.tokens(200))
    try b.configurePrefill(mode: .capped, block: 32)
    _ = try b.load(path)
    try b.feedText("Hello there, how are you today?", raw: false)
    let ra = try a.generate(options: GenerationOptions(maxTokens: 5), onText: { _ in })
    let rb = try b.generate(options: GenerationOptions(maxTokens: 5), onText: { _ in })
    XCTAssertEqual(ra.tokens, rb.tokens)
  }
}

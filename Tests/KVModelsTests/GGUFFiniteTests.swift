import Foundation
import XCTest

@testable import KVModels

/// The load-time scan for non-finite weights, on the real model: clean as published, and a NaN
/// written into a copy (a Q8_0/Q4_1 block's scale, a float32 norm weight) is found where it is.
final class GGUFFiniteTests: XCTestCase {
  func copyWith(_ bytes: [UInt8], at offset: Int) throws -> String {
    let path = try makeTemporaryFolder(self) + "/m.gguf"
    try FileManager.default.copyItem(atPath: GGUFRealModelTests.modelPath, toPath: path)
    let h = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
    try h.seek(toOffset: UInt64(offset))
    h.write(Data(bytes))
    try h.close()
    return path
  }

  func testTheRealModelIsFiniteAndACorruptCopyIsNot() throws {
    guard FileManager.default.fileExists(atPath: GGUFRealModelTests.modelPath) else {
      throw XCTSkip("the SmolLM2 GGUF is missing (scripts/setup.sh)")
    }
    let clean = try GGUFFile(path: GGUFRealModelTests.modelPath)
    let start = Date()
    XCTAssertNil(try clean.firstNonFinite())
    print("GGUF finite scan of SmolLM2-135M Q4_1: \(Date().timeIntervalSince(start)) s")

    let embd = try XCTUnwrap(clean.tensors["token_embd.weight"])
    XCTAssertNotNil(GGUFFile.halfOffsets(embd.type), "\(embd.type)")
    // Block 2's first half (its scale d) becomes a NaN.
    let scaled = try GGUFFile(path: try copyWith([0x00, 0x7E], at: embd.offset + 2 * embd.type.bytesPerBlock))
    let found = try XCTUnwrap(try scaled.firstNonFinite())
    XCTAssertEqual(found.tensor, "'token_embd.weight'")
    XCTAssertEqual(found.index, 2)
    XCTAssertEqual(found.kind, "block scale")

    let norm = try XCTUnwrap(clean.tensorNames.compactMap { clean.tensors[$0] }.first { $0.type == .f32 })
    // Element 3 becomes +infinity.
    let inf = try GGUFFile(path: try copyWith([0x00, 0x00, 0x80, 0x7F], at: norm.offset + 12))
    let f = try XCTUnwrap(try inf.firstNonFinite())
    XCTAssertEqual(f.tensor, GGUFFile.quoted(norm.name))
    XCTAssertEqual(f.index, 3)
    XCTAssertEqual(f.kind, "element")
  }
}

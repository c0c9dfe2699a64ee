import Foundation
import KVModels
import KVTensor
import XCTest

// Fixtures come from scripts/gen_gguf_fixtures.py (the `gguf` Python package writes the files and
// dequantizes their bytes); see that script for what each holds.

private func fixtureURL(_ name: String) -> URL {
  Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    .appendingPathComponent("gguf").appendingPathComponent(name)
}

private struct ExpectedFile: Decodable {
  struct Tensor: Decodable {
    let name: String
    let type: UInt32
    let dims: [Int]
    let offset: Int
    let bits: [UInt32]
  }
  let version: UInt32
  let alignment: Int
  let tensors: [Tensor]
}

private struct SpotCheck: Decodable {
  let type: UInt32
  let dims: [Int]
  let indices: [Int]
  let bits: [UInt32]
  let sum: Double
  let abs_sum: Double
}

private func decode<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
  try JSONDecoder().decode(T.self, from: Data(contentsOf: fixtureURL(name)))
}

private func hex(_ bits: UInt32) -> String { "0x" + String(bits, radix: 16) }

/// Opens a fixture, dequantizes every tensor and compares, bit for bit (NaN payloads included),
/// with what `gguf.quants.dequantize` produced for the same bytes.
private func checkAgainstPython(_ fixture: String, file: StaticString = #filePath, line: UInt = #line)
  throws -> GGUFFile
{
  let gguf = try GGUFFile(path: fixtureURL(fixture + ".gguf").path)
  let expected = try decode(ExpectedFile.self, fixture + ".expected.json")
  XCTAssertEqual(gguf.version, expected.version, file: file, line: line)
  XCTAssertEqual(gguf.alignment, expected.alignment, file: file, line: line)
  XCTAssertEqual(gguf.tensorNames, expected.tensors.map(\.name), file: file, line: line)
  for t in expected.tensors {
    let info = try gguf.tensor(t.name)
    XCTAssertEqual(info.type.rawValue, t.type, t.name, file: file, line: line)
    XCTAssertEqual(info.dims, t.dims, t.name, file: file, line: line)
    XCTAssertEqual(info.offset, t.offset, t.name, file: file, line: line)
    XCTAssertEqual(info.elementCount, t.bits.count, t.name, file: file, line: line)
    let out = try gguf.dequantized(t.name, category: .weights, meter: nil)
    var mismatches = 0
    for i in 0..<t.bits.count where out.pointer[i].bitPattern != t.bits[i] {
      if mismatches < 5 {
        XCTFail(
          "\(t.name)[\(i)]: got \(out.pointer[i]) (\(hex(out.pointer[i].bitPattern))), "
            + "python gives \(Float(bitPattern: t.bits[i])) (\(hex(t.bits[i])))",
          file: file, line: line)
      }
      mismatches += 1
    }
    XCTAssertEqual(mismatches, 0, "\(t.name): \(mismatches) mismatching elements", file: file, line: line)
  }
  return gguf
}

final class GGUFTests: XCTestCase {
  func testEveryQuantTypeMatchesPythonBitwise() throws {
    let gguf = try checkAgainstPython("all_types")
    // The fixture really covers every supported type (and the quantized ones twice: quantized
    // from data by the gguf package, and random bytes).
    let covered = Set(gguf.tensors.values.map(\.type))
    XCTAssertEqual(covered, Set(GGMLType.dequantizable))
    XCTAssertEqual(gguf.tensorNames.count, 12)
  }

  func testUnalignedDataWithAlignmentOne() throws {
    let gguf = try checkAgainstPython("align1")
    XCTAssertEqual(gguf.alignment, 1)
    XCTAssertEqual(try gguf.tensor("f32").offset % 4, 2)  // really misaligned in memory
  }

  func testTensorShapes() throws {
    let gguf = try GGUFFile(path: fixtureURL("all_types.gguf").path)
    let f32 = try gguf.tensor("f32_4d")  // numpy shape (2, 3, 1, 4)
    XCTAssertEqual(f32.dims, [4, 1, 3, 2])
    XCTAssertEqual(f32.elementCount, 24)
    XCTAssertEqual(f32.byteCount, 96)
    XCTAssertEqual(f32.rowLength, 4)
    XCTAssertEqual(f32.rowCount, 6)
    let q4k = try gguf.tensor("q4_k_raw")
    XCTAssertEqual(q4k.type, .q4_K)
    XCTAssertEqual(q4k.dims, [256, 3])
    XCTAssertEqual(q4k.byteCount, 3 * 144)
    XCTAssertEqual(GGMLType.q6_K.bytesPerBlock, 210)
    XCTAssertEqual(GGMLType.q4_1.bytesPerBlock, 20)
    XCTAssertEqual(GGMLType.q4_K.name, "Q4_K")
  }

  func testMetadataOfEveryValueType() throws {
    let gguf = try GGUFFile(path: fixtureURL("all_types.gguf").path)
    let m = gguf.metadata
    XCTAssertEqual(gguf.version, 3)
    XCTAssertEqual(gguf.metadataKeys.first, "general.architecture")
    XCTAssertEqual(gguf.metadataKeys.last, "llama.block_count")
    XCTAssertEqual(gguf.metadataKeys.count, 25)
    XCTAssertEqual(Set(gguf.metadataKeys), Set(m.keys))

    XCTAssertEqual(m["general.architecture"], .string("llama"))
    XCTAssertEqual(m["test.uint8"], .uint8(200))
    XCTAssertEqual(m["test.int8"], .int8(-100))
    XCTAssertEqual(m["test.uint16"], .uint16(60000))
    XCTAssertEqual(m["test.int16"], .int16(-30000))
    XCTAssertEqual(m["test.uint32"], .uint32(4_000_000_000))
    XCTAssertEqual(m["test.int32"], .int32(-2_000_000_000))
    XCTAssertEqual(m["test.uint64"], .uint64(1 << 63 + 5))
    XCTAssertEqual(m["test.int64"], .int64(-(1 << 62) - 3))
    XCTAssertEqual(m["test.float32"], .float32(0.1))
    XCTAssertEqual(m["test.float64"], .float64(0.1))
    XCTAssertEqual(m["test.bool_true"], .bool(true))
    XCTAssertEqual(m["test.bool_false"], .bool(false))
    XCTAssertEqual(m["test.string"], .string("héllo, ✓ wörld"))
    XCTAssertEqual(m["test.empty_string"], .string(""))
    XCTAssertEqual(m["test.array_int32"], .array([.int32(1), .int32(-2), .int32(3)]))
    XCTAssertEqual(m["test.array_uint8"], .array([.uint8(0), .uint8(255), .uint8(7)]))
    XCTAssertEqual(m["test.array_uint64"], .array([.uint64(1), .uint64(.max)]))
    XCTAssertEqual(m["test.array_float32"], .array([.float32(0.5), .float32(-1.25), .float32(3)]))
    XCTAssertEqual(m["test.array_float64"], .array([.float64(0.1), .float64(-2.5)]))
    XCTAssertEqual(m["test.array_bool"], .array([.bool(true), .bool(false), .bool(true)]))
    XCTAssertEqual(
      m["test.array_nested"], .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
    XCTAssertEqual(
      m["test.array_nested_string"],
      .array([.array([.string("x")]), .array([.string("y"), .string("z")])]))

    // Accessors.
    XCTAssertEqual(m["test.uint32"]?.int, 4_000_000_000)
    XCTAssertEqual(m["test.int8"]?.int, -100)
    XCTAssertNil(m["test.uint64"]?.int, "2^63+5 does not fit in Int")
    XCTAssertEqual(m["test.int64"]?.int, -(1 << 62) - 3)
    XCTAssertEqual(m["test.float32"]?.double, Double(Float(0.1)))
    XCTAssertEqual(m["test.uint16"]?.double, 60000)
    XCTAssertNil(m["test.string"]?.int)
    XCTAssertEqual(m["test.bool_true"]?.bool, true)
    XCTAssertEqual(m["test.string"]?.string, "héllo, ✓ wörld")
    XCTAssertEqual(m["test.array_string"]?.stringArray, ["a", "bb", "", "ccc"])
    XCTAssertEqual(m["test.array_int32"]?.intArray, [1, -2, 3])
    XCTAssertEqual(m["test.array_uint8"]?.intArray, [0, 255, 7])
    XCTAssertNil(m["test.array_uint64"]?.intArray, "UInt64.max does not fit in Int")
    XCTAssertEqual(m["test.array_float32"]?.floatArray, [0.5, -1.25, 3])
    XCTAssertEqual(m["test.array_int32"]?.floatArray, [1, -2, 3])
    XCTAssertNil(m["test.array_string"]?.intArray)
    XCTAssertNil(m["test.array_nested"]?.intArray)
    XCTAssertNil(m["test.int32"]?.stringArray)
    XCTAssertEqual(m["test.array_nested"]?.typeName, "array[array[int32]]")
    XCTAssertEqual(m["test.array_string"]?.description, "['a', 'bb', '', 'ccc']")
  }

  func testDequantizedBufferIsMetered() throws {
    let gguf = try GGUFFile(path: fixtureURL("all_types.gguf").path)
    let meter = MemoryMeter()
    do {
      let buffer = try gguf.dequantized("q6_k_raw", category: .weights, meter: meter)
      XCTAssertEqual(buffer.count, 768)
      XCTAssertEqual(meter.reading(.weights).current, 768 * 4)
    }
    XCTAssertEqual(meter.reading(.weights).current, 0)
    XCTAssertEqual(meter.reading(.weights).highWater, 768 * 4)
  }

  func testDequantizeRowsMatchesWholeTensor() throws {
    let gguf = try GGUFFile(path: fixtureURL("all_types.gguf").path)
    for name in ["q4_k_raw", "q8_0_raw", "f16", "bf16"] {
      let info = try gguf.tensor(name)
      let whole = try gguf.dequantized(name, category: .weights, meter: nil)
      var rows = [Float](repeating: .nan, count: info.rowLength)
      try gguf.dequantizeRows(name, rows: 1..<2, into: &rows, count: rows.count)
      let expected = Array(whole.buffer[info.rowLength..<2 * info.rowLength])
      XCTAssertEqual(rows.map(\.bitPattern), expected.map(\.bitPattern), name)
    }
    var one = [Float](repeating: 0, count: 256)
    XCTAssertThrowsError(try gguf.dequantizeRows("q4_k_raw", rows: 2..<4, into: &one, count: 512)) {
      XCTAssertEqual(($0 as? GGUFError)?.message, "tensor 'q4_k_raw': rows 2..<4 out of 0..<3")
    }
    XCTAssertThrowsError(try gguf.dequantizeRows("q4_k_raw", rows: 0..<2, into: &one, count: 256)) {
      XCTAssertEqual(
        ($0 as? GGUFError)?.message,
        "tensor 'q4_k_raw': destination holds 256 floats but 2 rows need 512")
    }
  }

  /// The f16 converter against the hardware/library conversion for all 65536 inputs.
  func testHalfToFloatIsExactForEveryBitPattern() {
    for bits in 0...UInt16.max {
      let mine = WeightFormat.halfToFloat(bits)
      let reference = Float(Float16(bitPattern: bits))
      if reference.isNaN {
        XCTAssertTrue(mine.isNaN)
        // Payload kept in place, as numpy does: mantissa << 13.
        XCTAssertEqual(mine.bitPattern & 0x007F_FFFF, UInt32(bits & 0x3FF) << 13)
        XCTAssertEqual(mine.sign, reference.sign)
      } else if mine.bitPattern != reference.bitPattern {
        XCTFail("f16 \(hex(UInt32(bits))): \(mine) vs \(reference)")
        return
      }
    }
  }
}

// MARK: - The real model

final class GGUFRealModelTests: XCTestCase {
  static let modelPath: String = {
    // Tests/KVModelsTests/GGUFTests.swift → repository root
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
  }()

  private func openModel() throws -> GGUFFile {
    guard FileManager.default.fileExists(atPath: Self.modelPath) else {
      throw XCTSkip("\(Self.modelPath) is missing; scripts/setup.sh fetches it")
    }
    return try GGUFFile(path: Self.modelPath)
  }

  func testMetadata() throws {
    let gguf = try openModel()
    let m = gguf.metadata
    XCTAssertEqual(gguf.version, 3)
    XCTAssertEqual(m["general.architecture"]?.string, "llama")
    XCTAssertEqual(m["llama.block_count"]?.int, 30)
    XCTAssertEqual(m["llama.embedding_length"]?.int, 576)
    XCTAssertEqual(m["llama.feed_forward_length"]?.int, 1536)
    XCTAssertEqual(m["llama.attention.head_count"]?.int, 9)
    XCTAssertEqual(m["llama.attention.head_count_kv"]?.int, 3)
    XCTAssertEqual(m["llama.rope.freq_base"]?.double, 100_000)
    XCTAssertEqual(m["llama.attention.layer_norm_rms_epsilon"]?.double, Double(Float(1e-5)))
    XCTAssertEqual(m["tokenizer.ggml.model"]?.string, "gpt2")
    XCTAssertEqual(m["tokenizer.ggml.pre"]?.string, "smollm")
    let tokens = try XCTUnwrap(m["tokenizer.ggml.tokens"]?.stringArray)
    XCTAssertEqual(tokens.count, 49152)
    XCTAssertEqual(tokens[1], "<|im_start|>")
    XCTAssertEqual(m["tokenizer.ggml.merges"]?.stringArray?.count, 48900)
    XCTAssertEqual(m["tokenizer.ggml.token_type"]?.intArray?.count, 49152)
    XCTAssertEqual(gguf.metadataKeys.count, 33)
    XCTAssertEqual(gguf.tensorNames.count, 272)
    XCTAssertEqual(gguf.tensorNames.first, "token_embd.weight")
    XCTAssertEqual(try gguf.tensor("token_embd.weight").dims, [576, 49152])
    XCTAssertEqual(try gguf.tensor("token_embd.weight").type, .q8_0)
    XCTAssertEqual(try gguf.tensor("blk.0.attn_k.weight").dims, [576, 192])
    XCTAssertEqual(try gguf.tensor("blk.0.attn_k.weight").type, .q4_1)
    XCTAssertEqual(try gguf.tensor("blk.0.attn_k.weight").offset, 33_530_176)
  }

  /// A few values and whole-tensor sums of four tensors (Q8_0, Q4_1, F32) against python.
  func testSpotValuesMatchPython() throws {
    let gguf = try openModel()
    let spots = try decode([String: SpotCheck].self, "smollm2_spotcheck.json")
    XCTAssertEqual(spots.count, 4)
    for (name, spot) in spots.sorted(by: { $0.key < $1.key }) {
      let info = try gguf.tensor(name)
      XCTAssertEqual(info.type.rawValue, spot.type, name)
      XCTAssertEqual(info.dims, spot.dims, name)
      let values = try gguf.dequantized(name, category: .weights, meter: nil)
      for (i, bits) in zip(spot.indices, spot.bits) {
        XCTAssertEqual(hex(values.pointer[i].bitPattern), hex(bits), "\(name)[\(i)]")
      }
      var sum = 0.0
      var absSum = 0.0
      for v in values.buffer {
        sum += Double(v)
        absSum += Double(abs(v))
      }
      XCTAssertEqual(sum, spot.sum, accuracy: 1e-9 * spot.abs_sum, name)
      XCTAssertEqual(absSum, spot.abs_sum, accuracy: 1e-9 * spot.abs_sum, name)
    }
  }

  /// Every tensor dequantizes to finite values; prints the time it takes.
  func testEveryTensorDequantizesToFiniteValues() throws {
    let gguf = try openModel()
    let largest = gguf.tensors.values.map(\.elementCount).max() ?? 0
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: largest)
    defer { scratch.deallocate() }
    var total = 0
    var seconds = 0.0
    for name in gguf.tensorNames {
      let info = try gguf.tensor(name)
      let start = Date()
      try gguf.dequantize(name, into: scratch, count: largest)
      seconds += Date().timeIntervalSince(start)
      total += info.elementCount
      var bad = 0
      for i in 0..<info.elementCount where !scratch[i].isFinite { bad += 1 }
      XCTAssertEqual(bad, 0, "\(name): \(bad) non-finite values")
    }
    XCTAssertEqual(total, 134_515_008)  // includes the 28.3 M tied embedding

    // As a model load does it: a fresh metered buffer per tensor (zero-fill and page faults
    // included), kept until the end.
    let meter = MemoryMeter()
    let start = Date()
    let buffers = try gguf.tensorNames.map { try gguf.dequantized($0, category: .weights, meter: meter) }
    let loadSeconds = Date().timeIntervalSince(start)
    XCTAssertEqual(buffers.count, 272)
    // Release builds may free `buffers` right after their last use: keep them alive here.
    withExtendedLifetime(buffers) { XCTAssertEqual(meter.reading(.weights).current, total * 4) }
    print(
      "GGUF dequantize: \(total) elements (\(gguf.tensorNames.count) tensors): "
        + String(format: "%.3f s into a reused buffer, %.3f s into fresh FloatBuffers", seconds, loadSeconds))
  }
}

// MARK: - Hostile input

/// Writes GGUF bytes by hand, so that each test can break exactly one thing.
private struct GGUFBytes {
  var bytes: [UInt8] = []
  var count: Int { bytes.count }

  mutating func u8(_ v: UInt8) { bytes.append(v) }
  mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
  mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
  mutating func string(_ s: String) {
    u64(UInt64(s.utf8.count))
    bytes += s.utf8
  }
  mutating func header(magic: String = "GGUF", version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
    bytes += magic.utf8
    u32(version)
    u64(tensors)
    u64(kvs)
  }
  mutating func kvString(_ key: String, _ value: String) {
    string(key)
    u32(8)
    string(value)
  }
  mutating func kvU32(_ key: String, _ value: UInt32) {
    string(key)
    u32(4)
    u32(value)
  }
  mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
    string(name)
    u32(UInt32(dims.count))
    for d in dims { u64(d) }
    u32(type)
    u64(offset)
  }
  mutating func pad(to alignment: Int) {
    while bytes.count % alignment != 0 { bytes.append(0) }
  }
  mutating func zeros(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }
}

/// A valid file: one string key; tensor "a" (F32, 4 elements at data offset 0) and "b" (Q8_0,
/// 32×2 at data offset 32). Layout: header 0..<24, metadata 24..<69, tensor table 69..<143,
/// data section at 160 (32-aligned); "b" occupies 192..<260, the file's end.
/// The parameters break one thing each.
private func smallFile(
  version: UInt32 = 3, tensorCount: UInt64 = 2, kvCount: UInt64 = 1,
  extraKV: ((inout GGUFBytes) -> Void)? = nil,
  aDims: [UInt64] = [4], bName: String = "b", bDims: [UInt64] = [32, 2], bType: UInt32 = 8,
  bOffset: UInt64 = 32
) -> [UInt8] {
  var b = GGUFBytes()
  b.header(version: version, tensors: tensorCount, kvs: kvCount + (extraKV == nil ? 0 : 1))
  b.kvString("general.architecture", "llama")
  extraKV?(&b)
  b.tensor("a", dims: aDims, type: 0, offset: 0)
  b.tensor(bName, dims: bDims, type: bType, offset: bOffset)
  b.pad(to: 32)
  // a: 1, 2, 3, 4 as F32; then padding; b: 2 blocks of d = 1.0 (f16 0x3C00), qs = 0...31.
  for v: Float in [1, 2, 3, 4] { b.u32(v.bitPattern) }
  b.zeros(16)
  for _ in 0..<2 {
    b.u8(0x00)
    b.u8(0x3C)
    for q in 0..<32 { b.u8(UInt8(q)) }
  }
  return b.bytes
}

final class GGUFHostileInputTests: XCTestCase {
  private var dir: URL!

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory
      .appendingPathComponent("kvlab-gguf-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(at: dir)
  }

  private func write(_ bytes: [UInt8], _ name: String) throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url.path
  }

  /// Opening must fail with exactly `message`, naming the file, on one line.
  private func assertRejected(
    _ bytes: [UInt8], _ message: String, case name: String,
    file: StaticString = #filePath, line: UInt = #line
  ) throws {
    let path = try write(bytes, name + ".gguf")
    do {
      _ = try GGUFFile(path: path)
      XCTFail("\(name): opened without error", file: file, line: line)
    } catch let error as GGUFError {
      XCTAssertEqual(error.path, path, file: file, line: line)
      XCTAssertEqual(error.message, message, name, file: file, line: line)
      XCTAssertEqual(error.description, "\(path): \(error.message)", file: file, line: line)
      XCTAssertFalse(error.description.contains("\n"), file: file, line: line)
      print("GGUF-HOSTILE | \(name) | \(error.message)")
    }
  }

  func testTheSmallFileIsValid() throws {
    for version: UInt32 in [2, 3] {
      let gguf = try GGUFFile(path: write(smallFile(version: version), "ok\(version).gguf"))
      XCTAssertEqual(gguf.version, version)
      XCTAssertEqual(gguf.fileSize, 260)
      XCTAssertEqual(gguf.dataOffset, 160)
      XCTAssertEqual(try gguf.tensor("b").offset, 192)
      XCTAssertEqual(try gguf.dequantized("a", category: .weights, meter: nil).array, [1, 2, 3, 4])
      XCTAssertEqual(
        try gguf.dequantized("b", category: .weights, meter: nil).array,
        (0..<64).map { Float($0 % 32) })
    }
  }

  func testHeaderErrors() throws {
    try assertRejected([], "file too short to be GGUF: 0 bytes, the header alone is 24", case: "empty file")
    try assertRejected(
      Array(smallFile().prefix(10)), "file too short to be GGUF: 10 bytes, the header alone is 24",
      case: "shorter than the header")
    var magic = smallFile()
    magic[2] = UInt8(ascii: "M")
    magic[3] = UInt8(ascii: "L")
    try assertRejected(
      magic, "not a GGUF file: magic is \"GGML\" (47 47 4d 4c), expected \"GGUF\"", case: "bad magic")
    try assertRejected(
      smallFile(version: 1), "unsupported GGUF version 1 (GGUF v1 is obsolete); supported: 2, 3",
      case: "version 1")
    try assertRejected(
      smallFile(version: 4), "unsupported GGUF version 4; supported: 2, 3", case: "version 4")
    try assertRejected(
      smallFile(version: UInt32(3).byteSwapped),
      "unsupported GGUF version 50331648 (a big-endian file?); supported: 2, 3", case: "big-endian file")
    try assertRejected(
      smallFile(tensorCount: 1 << 40),
      "tensor count 1099511627776 is impossible in a 260-byte file (each entry needs at least 24 bytes)",
      case: "huge tensor count")
    try assertRejected(
      smallFile(kvCount: .max),
      "metadata count 18446744073709551615 is impossible in a 260-byte file "
        + "(each entry needs at least 13 bytes)",
      case: "huge metadata count")
    try assertRejected(
      Array(smallFile().prefix(24)),
      "metadata count 1 is impossible in a 24-byte file (each entry needs at least 13 bytes)",
      case: "header only")
  }

  func testMetadataErrors() throws {
    var longKey = smallFile()
    longKey.replaceSubrange(24..<32, with: [0, 0, 16, 0, 0, 0, 0, 0])  // key length 1 MiB
    try assertRejected(
      longKey,
      "metadata key #0 at offset 24 claims 1048576 bytes, past the end of the file (228 bytes left)",
      case: "string length past EOF")
    var hugeKey = smallFile()
    hugeKey.replaceSubrange(24..<32, with: [UInt8](repeating: 0xFF, count: 8))
    try assertRejected(
      hugeKey, "metadata key #0 length is 18446744073709551615, larger than any file",
      case: "string length ≥ 2^63")
    var unknownType = smallFile()
    unknownType[52] = 13  // the value type of general.architecture (24 + 8 + 20)
    try assertRejected(
      unknownType, "metadata 'general.architecture': unknown value type 13",
      case: "unknown metadata value type")
    try assertRejected(
      smallFile(extraKV: { $0.kvString("general.architecture", "x") }),
      "duplicate metadata key 'general.architecture'", case: "duplicate metadata key")
    try assertRejected(
      smallFile(extraKV: {
        $0.string("big")
        $0.u32(9)  // array
        $0.u32(6)  // of float32
        $0.u64(1 << 40)
      }),
      "metadata 'big': array of 1099511627776 elements at offset 88 runs past the end of the file "
        + "(196 bytes left)",
      case: "huge array count")
    try assertRejected(
      smallFile(extraKV: {
        $0.string("arr")
        $0.u32(9)
        $0.u32(42)
        $0.u64(1)
      }),
      "metadata 'arr': unknown array element type 42", case: "unknown array element type")
    func nested(_ levels: Int) -> (inout GGUFBytes) -> Void {
      return { b in
        b.string("deep")
        b.u32(9)
        for _ in 1..<levels {  // each array holds one array...
          b.u32(9)
          b.u64(1)
        }
        b.u32(4)  // ...down to one array of one uint32
        b.u64(1)
        b.u32(7)
      }
    }
    let eight = try GGUFFile(path: write(smallFile(extraKV: nested(8)), "deep8.gguf"))
    var v = eight.metadata["deep"]
    for _ in 1..<8 { v = v?.array?.first }
    XCTAssertEqual(v, .array([.uint32(7)]))
    try assertRejected(
      smallFile(extraKV: nested(9)),
      "metadata 'deep': element 0: arrays nested deeper than 8 levels", case: "arrays nested 9 deep")
    try assertRejected(
      smallFile(extraKV: { $0.kvU32("general.alignment", 48) }),
      "general.alignment must be a power of two integer, got 48 (uint32)", case: "alignment 48")
    try assertRejected(
      smallFile(extraKV: { $0.kvString("general.alignment", "32") }),
      "general.alignment must be a power of two integer, got '32' (string)",
      case: "alignment not an integer")
    // Control characters in names stay escaped: the message stays on one line.
    try assertRejected(
      smallFile(extraKV: { $0.kvString("general.architecture", "x") }).map { $0 == 0x2E ? 0x0A : $0 },
      "duplicate metadata key 'general\\narchitecture'", case: "newline in a key")
  }

  func testTensorTableErrors() throws {
    try assertRejected(
      smallFile(bType: 99), "tensor 'b': unknown ggml type 99", case: "unknown ggml type")
    try assertRejected(
      smallFile(aDims: [0]), "tensor 'a': dimension 0 is 0 (must be between 1 and 9223372036854775807)",
      case: "zero dimension")
    try assertRejected(
      smallFile(aDims: [1 << 63]),
      "tensor 'a': dimension 0 is 9223372036854775808 (must be between 1 and 9223372036854775807)",
      case: "dimension ≥ 2^63")
    try assertRejected(
      smallFile(aDims: [1, 1, 1, 1, 4]), "tensor 'a': 5 dimensions (at most 4)", case: "5 dimensions")
    try assertRejected(
      smallFile(aDims: [1 << 32, 1 << 32]),
      "tensor 'a': element count overflows (dims [4294967296, 4294967296])", case: "element count overflow")
    try assertRejected(
      smallFile(aDims: [1 << 62]),
      "tensor 'a': byte size overflows (dims [4611686018427387904], type F32)",
      case: "byte size overflow")
    try assertRejected(
      smallFile(bDims: [33, 2]), "tensor 'b': row length 33 is not a multiple of Q8_0's block size 32",
      case: "row not a whole number of blocks")
    try assertRejected(
      smallFile(bOffset: 1 << 20),
      "tensor 'b': data at bytes 1048736..<1048804 runs past the end of the file (260 bytes)",
      case: "tensor data past EOF")
    try assertRejected(
      smallFile(bOffset: UInt64(Int.max) - 31),
      "tensor 'b': data offset 9223372036854775776 runs past the end of the file (260 bytes)",
      case: "tensor offset overflows")
    try assertRejected(
      smallFile(bOffset: .max), "tensor 'b': data offset is 18446744073709551615, larger than any file",
      case: "tensor offset ≥ 2^63")
    try assertRejected(
      smallFile(bOffset: 20), "tensor 'b': data offset 20 is not a multiple of the alignment 32",
      case: "misaligned tensor offset")
    try assertRejected(smallFile(bName: "a"), "duplicate tensor name 'a'", case: "duplicate tensor name")
    try assertRejected(
      Array(smallFile().prefix(120)),
      "tensor 'b': truncated: dimension 0 needs 8 bytes at offset 115, but the file ends at 120",
      case: "truncated in the tensor table")
    try assertRejected(
      Array(smallFile().prefix(200)),
      "tensor 'b': data at bytes 192..<260 runs past the end of the file (200 bytes)",
      case: "truncated in the tensor data")
  }

  func testOpenAndDequantizeErrors() throws {
    let missing = dir.appendingPathComponent("missing.gguf").path
    XCTAssertThrowsError(try GGUFFile(path: missing)) {
      XCTAssertEqual("\($0)", "\(missing): cannot open: No such file or directory")
    }
    XCTAssertThrowsError(try GGUFFile(path: dir.path)) {
      XCTAssertEqual("\($0)", "\(dir.path): not a regular file")
    }

    let path = try write(smallFile(), "small.gguf")
    let gguf = try GGUFFile(path: path)
    var small = [Float](repeating: 0, count: 10)
    XCTAssertThrowsError(try gguf.dequantize("b", into: &small, count: 10)) {
      XCTAssertEqual("\($0)", "\(path): tensor 'b': destination holds 10 floats but the tensor has 64 elements")
    }
    XCTAssertThrowsError(try gguf.tensor("zzz")) {
      XCTAssertEqual("\($0)", "\(path): no tensor named 'zzz'")
    }
    let meter = MemoryMeter()
    XCTAssertThrowsError(try gguf.dequantized("zzz", category: .weights, meter: meter))
    XCTAssertEqual(meter.reading(.weights).highWater, 0, "nothing allocated for a failed load")

    // A type ggml knows but kvlab does not dequantize: the file opens, dequantizing names it.
    let q5Path = try write(smallFile(bType: 6), "q5_0.gguf")
    let q5 = try GGUFFile(path: q5Path)
    XCTAssertEqual(try q5.tensor("b").type, .q5_0)
    XCTAssertThrowsError(try q5.dequantized("b", category: .weights, meter: meter)) {
      XCTAssertEqual(
        "\($0)",
        "\(q5Path): tensor 'b': ggml type Q5_0 (6) cannot be dequantized "
          + "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)")
    }
    XCTAssertEqual(meter.reading(.weights).highWater, 0)
  }

  /// The real fixture cut at every length short of its last tensor's end (after that only
  /// padding goes): each must fail with a one-line GGUFError, never trap.
  func testEveryTruncationOfTheFixtureFails() throws {
    let url = fixtureURL("all_types.gguf")
    let bytes = try [UInt8](Data(contentsOf: url))
    let good = try GGUFFile(path: url.path)
    let end = good.tensors.values.map { $0.offset + $0.byteCount }.max()!
    XCTAssertEqual(end, 3990)
    var messages: [String: Int] = [:]
    for n in 0..<end {
      let path = try write(Array(bytes.prefix(n)), "cut.gguf")
      do {
        _ = try GGUFFile(path: path)
        XCTFail("a \(n)-byte prefix opened")
      } catch let error as GGUFError {
        XCTAssertEqual(error.path, path)
        XCTAssertFalse(error.message.contains("\n"))
        let kind = error.message.contains("truncated") || error.message.contains("past the end")
          || error.message.contains("too short") || error.message.contains("impossible")
        XCTAssertTrue(kind, "\(n) bytes: \(error.message)")
        messages[String(error.message.prefix(30)), default: 0] += 1
      }
    }
    XCTAssertGreaterThan(messages.count, 5)
  }

  /// Random byte corruption of the real fixture (seeded): every result either opens, with every
  /// tensor then dequantizing within bounds, or fails with a GGUFError.
  func testRandomCorruptionNeverCrashes() throws {
    let original = try [UInt8](Data(contentsOf: fixtureURL("all_types.gguf")))
    var rng = SplitMix64(seed: 42)
    var opened = 0
    var rejected = 0
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 1 << 16)
    defer { scratch.deallocate() }
    for i in 0..<1500 {
      var bytes = original
      // Corrupt the header and tables mostly (the data section has no structure to break).
      let flips = 1 + Int(rng.next() % 4)
      for _ in 0..<flips {
        let at = Int(rng.next() % UInt64(i % 3 == 0 ? bytes.count : 1664))
        bytes[at] = i % 2 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : bytes[at] ^ (1 << (rng.next() % 8))
      }
      let path = try write(bytes, "fuzz.gguf")
      do {
        let gguf = try GGUFFile(path: path)
        opened += 1
        for name in gguf.tensorNames {
          let info = try gguf.tensor(name)
          XCTAssertLessThanOrEqual(info.offset + info.byteCount, gguf.fileSize)
          if info.type.isDequantizable && info.elementCount <= 1 << 16 {
            try gguf.dequantize(name, into: scratch, count: 1 << 16)
          }
        }
      } catch let error as GGUFError {
        rejected += 1
        XCTAssertFalse(error.description.contains("\n"))
      }
    }
    XCTAssertGreaterThan(rejected, 100)
    XCTAssertGreaterThan(opened, 100)
  }
}

/// A tiny seeded generator, so that the fuzz test is reproducible.
private struct SplitMix64 {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

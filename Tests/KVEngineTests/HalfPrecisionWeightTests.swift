import Foundation
import KVEngine
import KVModels
import KVTensor
import XCTest

/// Safetensors weights stored as BF16 or F16 stay 16-bit once loaded (their matrices read where
/// they lie in the file's mapping), and say what the same values say as float32: every family's
/// fixture is written twice, its float tensors rounded to 16 bits in one folder and those
/// rounded values as F32 in the other (loaded as float32 `Matrix`es, the reference path). Both
/// conversions are exact, so the two loads differ only in the order of the sums of the
/// matrix-vector products.
final class HalfPrecisionWeightTests: XCTestCase {
  static let fixtures = [
    "decoders/llama_folder", "decoders/qwen2_folder", "qwen3/qwen3_gqa2", "vlm/idefics3/model",
    "vlm/llava/model", "vlm/qwen2_vl/model", "vlm/qwen2_5_vl/model", "vlm/internvl/model",
  ]

  /// The storage a twin is written in: BF16 with an 8-byte aligned data section (every matrix
  /// mapped), or F16 behind a header of odd length (every matrix copied to the heap).
  enum Storage: String, CaseIterable {
    case bf16Aligned = "BF16", f16Unaligned = "F16"

    /// The 16 bits of `x` (round to nearest even), and the float32 they stand for.
    func round(_ x: Float) -> (bits: UInt16, value: Float) {
      switch self {
      case .bf16Aligned:
        let b = x.bitPattern
        let bits = UInt16((b + 0x7FFF + ((b >> 16) & 1)) >> 16)
        return (bits, Float(bitPattern: UInt32(bits) << 16))
      case .f16Unaligned:
        let h = Float16(x)
        return (h.bitPattern, Float(h))
      }
    }
  }

  struct Twins {
    let half: String
    let float: String
    /// Bytes of the 16-bit file's tensors.
    let halfTensorBytes: Int
  }

  /// Copies `fixture` (a folder with one model.safetensors, all F32) twice under a temporary
  /// folder: its float tensors in `storage`, and the same rounded values as F32.
  func twins(_ fixture: String, _ storage: Storage) throws -> Twins {
    let source = TestPaths.fixtures + "/" + fixture
    let file = try SafetensorsFile(path: source + "/model.safetensors")
    let root = NSTemporaryDirectory() + "kvlab-half-\(getpid())-\(UUID().uuidString.prefix(8))"
    addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
    let fm = FileManager.default
    var halfBytes = 0
    for (name, half) in [("half", true), ("float", false)] {
      let dir = root + "/" + name
      try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
      for entry in try fm.contentsOfDirectory(atPath: source) where entry != "model.safetensors" {
        try fm.copyItem(atPath: source + "/" + entry, toPath: dir + "/" + entry)
      }
      var header: [String] = []
      var data: [UInt8] = []
      for info in file.tensorInfos {
        XCTAssertEqual(info.dtype, .F32, "\(fixture): \(info.name)")
        let values = try file.floats(info.name)
        let start = data.count
        for v in values {
          let (bits, value) = storage.round(v)
          if half {
            data += [UInt8(bits & 0xFF), UInt8(bits >> 8)]
          } else {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data += $0 }
          }
        }
        header.append(
          "\"\(info.name)\": {\"dtype\": \"\(half ? storage.rawValue : "F32")\", "
            + "\"shape\": \(info.shape), \"data_offsets\": [\(start), \(data.count)]}")
      }
      var json = Array(("{" + header.joined(separator: ", ") + "}").utf8)
      // Real files pad the header to 8 bytes; the unaligned twin's is odd (its 16-bit
      // elements then lie at odd addresses).
      if half && storage == .f16Unaligned {
        if json.count % 2 == 0 { json.append(0x20) }
      } else {
        while json.count % 8 != 0 { json.append(0x20) }
      }
      let length = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(json.count) >> (8 * UInt64($0))) }
      try Data(length + json + data).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
      if half { halfBytes = data.count }
    }
    return Twins(half: root + "/half", float: root + "/float", halfTensorBytes: halfBytes)
  }

  /// The logits after the fixture's input (an image then text for a vision model).
  func logits(_ folder: String) throws -> (logits: [Float], session: Session) {
    let session = Session(options: EngineOptions(threads: 2, prefillChunk: 16))
    _ = try session.load(folder)
    if session.vision != nil {
      _ = try session.feedImage(TestPaths.fixtures + "/vlm/images/img_45x61.png")
    }
    _ = try session.feedText("a red square on a blue field", raw: true)
    return (try XCTUnwrap(session.nextTokenLogits, folder), session)
  }

  func testSixteenBitWeightsGiveTheFloat32Logits() throws {
    for fixture in Self.fixtures {
      for storage in Storage.allCases {
        let t = try twins(fixture, storage)
        let (half, halfSession) = try logits(t.half)
        let (float, floatSession) = try logits(t.float)
        let what = "\(fixture) as \(storage.rawValue)"
        XCTAssertEqual(floatSession.model?.weightFormat, "F32", what)
        XCTAssertEqual(halfSession.model?.weightFormat, storage.rawValue, what)
        XCTAssertEqual(half.count, float.count, what)
        let scale = max(1, float.map(abs).max() ?? 0)
        let worst = zip(half, float).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(worst, 1e-6 * scale, "\(what): worst \(worst), scale \(scale)")
      }
    }
  }

  /// The meter counts the weights as they are resident: the 16-bit matrices at their stored
  /// bytes (mapped, or on the heap where the file's alignment forces a copy), only the
  /// vectors and element-wise tables as float32 — never the float32 bytes of the whole model.
  func testMeterCountsStoredBytes() throws {
    for fixture in ["vlm/idefics3/model", "decoders/qwen2_folder"] {
      let aligned = try twins(fixture, .bf16Aligned)
      let unaligned = try twins(fixture, .f16Unaligned)
      let sessions = try [aligned.float, aligned.half, unaligned.half].map { try logits($0).session }
      // The sessions hold the weights: alive (release builds end a lifetime at its last use)
      // until their meters have been read.
      defer { withExtendedLifetime(sessions) {} }
      let (float, mapped, copied) = (sessions[0].meter, sessions[1].meter, sessions[2].meter)
      let floatTotal = float.reading(.weights).current
      XCTAssertEqual(float.reading(.mapped).current, 0, fixture)
      // Every tensor as float32 (less any the model does not read).
      XCTAssertLessThanOrEqual(floatTotal, 2 * aligned.halfTensorBytes, fixture)
      XCTAssertGreaterThan(floatTotal, aligned.halfTensorBytes, fixture)

      let m = mapped.reading(.mapped).current
      let heap = mapped.reading(.weights).current
      XCTAssertGreaterThan(m, 0, fixture)
      // Each mapped byte is a file byte, half a float32 one: the matrices take their stored
      // bytes, the rest (norms, biases, tables) what float32 takes.
      XCTAssertEqual(2 * m + heap, floatTotal, fixture)
      XCTAssertLessThan(m + heap, floatTotal, fixture)

      // Unaligned: the same matrices, copied to the heap at their stored size.
      XCTAssertEqual(copied.reading(.mapped).current, 0, fixture)
      XCTAssertEqual(copied.reading(.weights).current, m + heap, fixture)
    }
  }
}

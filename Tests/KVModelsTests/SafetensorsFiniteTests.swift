import Foundation
import XCTest

@testable import KVModels

/// The load-time scan for safetensors weights that are not finite numbers: every float type,
/// NaN and both infinities, at the first element, inside and past the scan's chunks; integers
/// are not floats and are not read.
final class SafetensorsFiniteTests: XCTestCase {
  /// A file holding `tensors` (name, dtype, element count), in order, every value 1.0 but the
  /// one `bad` puts at (tensor, element) with these bytes.
  func file(
    _ tensors: [(String, String, Int)], bad: (tensor: String, element: Int, bytes: [UInt8])?
  ) throws -> String {
    var header: [String] = []
    var data: [UInt8] = []
    for (name, dtype, n) in tensors {
      let one: [UInt8] =
        switch dtype {
        case "F32": [0x00, 0x00, 0x80, 0x3F]
        case "F16": [0x00, 0x3C]
        case "BF16": [0x80, 0x3F]
        default: [0x01, 0x00, 0x00, 0x00]  // I32
        }
      var bytes = Array([[UInt8]](repeating: one, count: n).joined())
      if let bad, bad.tensor == name {
        bytes.replaceSubrange(
          (bad.element * one.count)..<((bad.element + 1) * one.count), with: bad.bytes)
      }
      header.append(
        #""\#(name)": {"dtype": "\#(dtype)", "shape": [\#(n)], "data_offsets": [\#(data.count), \#(data.count + bytes.count)]}"#
      )
      data += bytes
    }
    // An odd header length: the floats are not aligned to their size.
    let h = Array(("{" + header.joined(separator: ", ") + "} ").utf8)
    let bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h + data
    let path = try makeTemporaryFolder(self) + "/model.safetensors"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
  }

  func testEveryFloatTypeIsScanned() throws {
    let tensors = [("a", "F32", 5000), ("b", "F16", 9000), ("c", "BF16", 4097), ("d", "I32", 10)]
    XCTAssertNil(try SafetensorsFile(path: try file(tensors, bad: nil)).firstNonFinite())
    let cases: [(String, Int, [UInt8])] = [
      ("a", 0, [0x00, 0x00, 0xC0, 0x7F]),  // F32 NaN
      ("a", 4999, [0x00, 0x00, 0x80, 0xFF]),  // F32 -infinity, in the second chunk
      ("b", 4096, [0x00, 0x7C]),  // F16 +infinity, the second chunk's first
      ("b", 17, [0x01, 0xFE]),  // F16 NaN
      ("c", 4096, [0xC1, 0x7F]),  // BF16 NaN, alone in the last chunk
      ("c", 3, [0x80, 0xFF]),  // BF16 -infinity
    ]
    for (tensor, element, bytes) in cases {
      let found = try SafetensorsFile(path: try file(tensors, bad: (tensor, element, bytes)))
        .firstNonFinite()
      XCTAssertEqual(found?.tensor, tensor, "\(tensor)[\(element)] = \(bytes)")
      XCTAssertEqual(found?.index, element, "\(tensor)[\(element)] = \(bytes)")
    }
    // The largest finite values and an I32 whose bits would be a NaN as F32 pass.
    let finite: [(String, Int, [UInt8])] = [
      ("a", 7, [0xFF, 0xFF, 0x7F, 0x7F]), ("b", 7, [0xFF, 0xFB]), ("c", 7, [0x7F, 0xFF]),
      ("d", 2, [0x00, 0x00, 0xC0, 0x7F]),
    ]
    for (tensor, element, bytes) in finite {
      XCTAssertNil(
        try SafetensorsFile(path: try file(tensors, bad: (tensor, element, bytes))).firstNonFinite(),
        "\(tensor)[\(element)] = \(bytes)")
    }
  }

  func testAFolderWithANaNIsRefusedNamingTheFileAndTensor() throws {
    let path = try file([("w", "F32", 8)], bad: ("w", 5, [0x00, 0x00, 0xC0, 0x7F]))
    let dir = (path as NSString).deletingLastPathComponent
    try Data("{\"model_type\": \"llama\"}".utf8).write(
      to: URL(fileURLWithPath: dir + "/config.json"))
    XCTAssertThrowsError(try HFModelFolder(path: dir).requireFiniteWeights()) {
      XCTAssertEqual(
        "\($0)", "\(path): tensor 'w': element 5 is not a finite number (NaN or infinity)")
    }
  }
}

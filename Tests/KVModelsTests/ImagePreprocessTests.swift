import Foundation
import KVTensor
import XCTest

@testable import KVModels

// Pillow's Image.resize and transformers' PIL-backend processors, from
// scripts/gen_image_fixtures.py (resize.json + resize.rgb, processors.json + proc_*.npy).

private struct ResizeManifest: Decodable {
  struct Case: Decodable {
    let filter: String
    let width: Int
    let height: Int
    let offset: Int
  }
  let source: String
  let cases: [Case]
}

private struct ProcessorManifest: Decodable {
  struct Case: Decodable {
    let name: String
    let image: String
    let shape: [Int]
    let config: JSONValue
  }
  let transformers: String
  let cases: [Case]
}

final class ImagePreprocessTests: XCTestCase {
  func testResizeMatchesPillowForEveryFilter() throws {
    let manifest = try JSONDecoder().decode(
      ResizeManifest.self, from: imageFixtureData("resize.json"))
    let blob = [UInt8](try imageFixtureData("resize.rgb"))
    let source = try ImageDecoder.decode(path: imageFixture(manifest.source))
    var seen = Set<String>()
    for c in manifest.cases {
      let filter = try XCTUnwrap(ResampleFilter(name: c.filter), c.filter)
      seen.insert(c.filter)
      let out = source.resized(width: c.width, height: c.height, filter: filter)
      XCTAssertEqual(out.width, c.width)
      XCTAssertEqual(out.height, c.height)
      let reference = blob[c.offset..<(c.offset + c.width * c.height * 3)]
      let gap = maxByteGap(out.pixels, reference)
      let differing = zip(out.pixels, reference).filter { $0 != $1 }.count
      print(
        "resize \(source.width)×\(source.height) → \(c.width)×\(c.height) \(c.filter): max gap \(gap), "
          + "\(differing) of \(reference.count) bytes differ")
      XCTAssertEqual(gap, 0, "\(c.filter) \(c.width)×\(c.height)")
    }
    XCTAssertEqual(seen, Set(ResampleFilter.allCases.map(\.name)))
  }

  func testPassOrderFollowsPillow13() throws {
    struct Manifest: Decodable {
      struct Case: Decodable {
        let filter: String
        let width: Int
        let height: Int
        let vertical_first: Bool
        let sha256: String
      }
      let source: String
      let pillow: String
      let cases: [Case]
    }
    let m = try JSONDecoder().decode(Manifest.self, from: imageFixtureData("pass_order.json"))
    let source = try ImageDecoder.decode(path: imageFixture(m.source))
    var orders = Set<Bool>()
    for c in m.cases {
      let vFirst = RGBImage.pillowResizesVerticallyFirst(
        width: source.width, height: source.height, outWidth: c.width, outHeight: c.height)
      XCTAssertEqual(vFirst, c.vertical_first)
      orders.insert(vFirst)
      let out = source.resized(
        width: c.width, height: c.height, filter: try XCTUnwrap(ResampleFilter(name: c.filter)))
      XCTAssertEqual(
        sha256Hex(out.pixels), c.sha256,
        "\(c.filter) → \(c.width)×\(c.height), vertical first: \(vFirst)")
    }
    XCTAssertEqual(orders, [true, false])
    print(
      "pass order: \(m.cases.count) resizes (\(m.cases.filter(\.vertical_first).count) vertical-first) equal Pillow \(m.pillow)'s bytes"
    )
  }

  func testResizeToTheSameSizeIsACopy() throws {
    let img = try ImageDecoder.decode(path: imageFixture("rgba_41x27.png"))
    XCTAssertEqual(img.resized(width: 41, height: 27, filter: .lanczos), img.droppingAlpha())
  }

  /// Each processor's to_dict() configures kvlab; the float32 tensors must match bit for bit.
  func testProcessorsMatchTransformersBitwise() throws {
    let manifest = try JSONDecoder().decode(
      ProcessorManifest.self, from: imageFixtureData("processors.json"))
    XCTAssertEqual(manifest.transformers, "5.24.0")
    for c in manifest.cases {
      let pre = try ImagePreprocessor(config: try XCTUnwrap(c.config.object), path: c.name)
      let image = try ImageDecoder.decode(path: imageFixture(c.image))
      let out = try pre(image)
      XCTAssertEqual([out.channels, out.height, out.width], c.shape, c.name)
      let (shape, expected) = try NPYReader.read(imageFixture("proc_\(c.name).npy"))
      XCTAssertEqual(shape, c.shape)
      guard out.values.count == expected.count else { continue }
      var gap: Float = 0
      var bitwise = 0
      for (a, b) in zip(out.values, expected) {
        gap = max(gap, abs(a - b))
        if a.bitPattern == b.bitPattern { bitwise += 1 }
      }
      print(
        "processor \(c.name) (\(c.image), \(c.shape)): max abs gap \(gap), \(bitwise)/\(expected.count) bitwise equal"
      )
      XCTAssertEqual(bitwise, expected.count, c.name)
      XCTAssertLessThanOrEqual(gap, 1e-5, c.name)
    }
  }

  func testSizeRulesFollowTransformers() throws {
    // get_resize_output_image_size(default_to_square=False): truncation, short side fixed.
    XCTAssertTrue(
      try ResizeRule.shortestEdge(224).outputSize(height: 300, width: 451) == (224, 336))
    XCTAssertTrue(
      try ResizeRule.shortestEdge(224).outputSize(height: 451, width: 300) == (336, 224))
    XCTAssertTrue(try ResizeRule.shortestEdge(12).outputSize(height: 21, width: 29) == (12, 16))
    // get_size_with_aspect_ratio with a longest edge.
    XCTAssertTrue(
      try ResizeRule.shortestLongestEdge(shortest: 800, longest: 1333).outputSize(
        height: 480, width: 640) == (800, 1066))
    XCTAssertTrue(
      try ResizeRule.shortestLongestEdge(shortest: 800, longest: 1000).outputSize(
        height: 300, width: 900) == (333, 1000))
    XCTAssertTrue(
      try ResizeRule.maxHeightWidth(maxHeight: 50, maxWidth: 50).outputSize(height: 100, width: 200)
        == (25, 50))
    XCTAssertTrue(
      try ResizeRule.maxHeightWidth(maxHeight: 200, maxWidth: 500).outputSize(
        height: 100, width: 200) == (200, 400))
    // Qwen2-VL smart_resize (values from transformers' function: see skimage.json's shapes too).
    let q = ResizeRule.qwen2VL(factor: 28, minPixels: 56 * 56, maxPixels: 28 * 28 * 1280)
    XCTAssertTrue(try q.outputSize(height: 512, width: 512) == (504, 504))
    XCTAssertTrue(try q.outputSize(height: 300, width: 451) == (308, 448))
    XCTAssertTrue(try q.outputSize(height: 500, width: 741) == (504, 728))
    XCTAssertTrue(try q.outputSize(height: 10, width: 10) == (56, 56))
    XCTAssertTrue(try q.outputSize(height: 4000, width: 3000) == (1148, 840))
    // round() is half to even: 42/28 = 1.5 → 2, 70/28 = 2.5 → 2.
    XCTAssertTrue(
      try ResizeRule.qwen2VL(factor: 28, minPixels: 1, maxPixels: 1 << 30).outputSize(
        height: 42, width: 70) == (56, 56))
    XCTAssertThrowsError(try q.outputSize(height: 1, width: 300)) { error in
      XCTAssertEqual(
        "\(error)",
        "300×1 image: absolute aspect ratio must be smaller than 200 for Qwen2-VL, got 300.0")
    }
  }

  func testCenterCropPadsWithZeros() {
    let img = RGBImage(width: 2, height: 1, pixels: [10, 20, 30, 40, 50, 60])
    let c = img.centerCropped(height: 3, width: 4)
    // top = floor((1-3)/2) + ceil((3-1)/2) = 0, rows: [pad, image, pad]; left: pad 1.
    XCTAssertEqual(
      c.pixels,
      [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 10, 20, 30, 40, 50, 60, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      ])
    let big = RGBImage(width: 5, height: 4, pixels: (0..<60).map { UInt8($0) })
    let inner = big.centerCropped(height: 2, width: 2)  // top = 1, left = 1
    XCTAssertEqual(inner.pixels, [18, 19, 20, 21, 22, 23, 33, 34, 35, 36, 37, 38])
  }

  func testPresetsEqualTheirConfigs() throws {
    func config(_ json: String) throws -> ImagePreprocessor {
      try ImagePreprocessor(configJSON: Data(json.utf8))
    }
    XCTAssertEqual(try config(#"{"image_processor_type": "SiglipImageProcessor"}"#), .siglip())
    XCTAssertEqual(
      try config(#"{"image_processor_type": "CLIPImageProcessor", "size": 224, "crop_size": 224}"#),
      .clip())
    // Qwen2-VL-2B-Instruct's published file uses top-level min_pixels / max_pixels.
    XCTAssertEqual(
      try config(
        #"{"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 12845056, "#
          + #""patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}"#),
      .qwen2VL(maxPixels: 12_845_056))
    // Qwen2.5-VL's processor is Qwen2-VL's, under either name.
    XCTAssertEqual(
      try config(#"{"image_processor_type": "Qwen2_5_VLImageProcessor", "max_pixels": 12845056}"#),
      .qwen2VL(maxPixels: 12_845_056))
    XCTAssertThrowsError(
      try config(#"{"image_processor_type": "SiglipImageProcessor", "resample": 9}"#)
    ) {
      XCTAssertEqual("\($0)", "preprocessor_config.json: unknown resample filter 9")
    }
    XCTAssertThrowsError(
      try config(#"{"image_processor_type": "SiglipImageProcessor", "image_mean": [1, 2]}"#)
    ) {
      XCTAssertEqual(
        "\($0)",
        "preprocessor_config.json: \"image_mean\" must be a number or a list of 3 numbers, got [1, 2]"
      )
    }
    XCTAssertThrowsError(try config("[1]")) {
      XCTAssertEqual("\($0)", "preprocessor_config.json: not a JSON object")
    }
  }
}

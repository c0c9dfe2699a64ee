import Foundation
import XCTest

@testable import KVModels

// The scikit-image photographs (scripts/fetch_images.sh puts them in data/images/, git-ignored;
// KVLAB_IMAGES_DIR overrides) against skimage.json from scripts/gen_image_fixtures.py: Pillow's
// decode (sha256 of the RGB bytes) and SigLIP / CLIP / Qwen2-VL PIL-backend preprocessing
// (sha256 of the float32 tensor, per-channel sums and means, 100 sampled values).

private struct PhotoManifest: Decodable {
  struct Processor: Decodable {
    let name: String
    let shape: [Int]
    let sha256: String
    let channel_sums: [Double]
    let channel_means: [Double]
    let sample_indices: [Int]
    let sample_values: [Float]
  }
  struct Photo: Decodable {
    let file: String
    let width: Int
    let height: Int
    let pil_mode: String
    let has_alpha: Bool
    let rgb_sha256: String
    let processors: [Processor]
  }
  let scikit_image: String
  let processors: [String: JSONValue]
  let photos: [Photo]
}

final class ImagePhotoTests: XCTestCase {
  static var photoFolder: String {
    if let env = ProcessInfo.processInfo.environment["KVLAB_IMAGES_DIR"] { return env }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent()
      .deletingLastPathComponent()
    return root.appendingPathComponent("data/images").path
  }

  func testPhotographsDecodeAndPreprocessLikeTransformers() throws {
    let manifest = try JSONDecoder().decode(
      PhotoManifest.self, from: imageFixtureData("skimage.json"))
    let folder = Self.photoFolder
    let first = (folder as NSString).appendingPathComponent(manifest.photos[0].file)
    guard FileManager.default.fileExists(atPath: first) else {
      throw XCTSkip("\(folder) has no scikit-image photographs: run scripts/fetch_images.sh")
    }
    // Each processor as a function from an image to (shape, channel-first values); Idefics3's
    // gives tiles × C × H × W (its rows × cols tiles, then the global image).
    var preprocessors: [String: (RGBImage) throws -> (shape: [Int], values: [Float])] = [:]
    for (name, cfg) in manifest.processors {
      let config = try XCTUnwrap(cfg.object)
      if name == "idefics3" {
        let splitter = try Idefics3ImageSplitter(config: config, path: name)
        preprocessors[name] = { img in
          let tiles = try splitter.split(img).tiles
          return ([tiles.count, 3, tiles[0].height, tiles[0].width], tiles.flatMap(\.values))
        }
      } else {
        let pre = try ImagePreprocessor(config: config, path: name)
        preprocessors[name] = { img in
          let out = try pre(img)
          return ([out.channels, out.height, out.width], out.values)
        }
      }
    }
    let required = [
      "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
    ]
    XCTAssertTrue(Set(required).isSubset(of: manifest.photos.map(\.file)))

    for photo in manifest.photos {
      let img = try ImageDecoder.decode(
        path: (folder as NSString).appendingPathComponent(photo.file))
      XCTAssertEqual(img.width, photo.width, photo.file)
      XCTAssertEqual(img.height, photo.height, photo.file)
      XCTAssertEqual(img.alpha != nil, photo.has_alpha, photo.file)
      let rgb = img.compositedOverWhite()
      let decodeOK = sha256Hex(rgb.pixels) == photo.rgb_sha256
      XCTAssertTrue(decodeOK, "\(photo.file): decoded RGB differs from Pillow's")
      for p in photo.processors {
        let pre = try XCTUnwrap(preprocessors[p.name])
        let out = try pre(img)
        XCTAssertEqual(out.shape, p.shape, "\(photo.file) \(p.name)")
        guard out.values.count == p.shape.reduce(1, *) else { continue }
        var gap: Float = 0
        for (i, v) in zip(p.sample_indices, p.sample_values) {
          gap = max(gap, abs(out.values[i] - v))
        }
        var sumGap = 0.0
        var meanGap = 0.0
        let plane = out.shape[out.shape.count - 2] * out.shape[out.shape.count - 1]
        let tiles = out.shape.count == 4 ? out.shape[0] : 1
        for c in 0..<3 {
          var sum = 0.0
          for t in 0..<tiles {
            let base = (t * 3 + c) * plane
            for i in base..<(base + plane) { sum += Double(out.values[i]) }
          }
          sumGap = max(sumGap, abs(sum - p.channel_sums[c]))
          meanGap = max(meanGap, abs(sum / Double(plane * tiles) - p.channel_means[c]))
        }
        let bitwise = sha256Hex(out.values) == p.sha256
        print(
          "photo \(photo.file) (\(photo.pil_mode) \(photo.width)×\(photo.height)) \(p.name) \(p.shape): "
            + "decode \(decodeOK ? "bit-exact" : "DIFFERS"), tensor \(bitwise ? "bit-exact" : "DIFFERS"), "
            + "max sample gap \(gap), channel-sum gap \(sumGap), channel-mean gap \(meanGap)")
        XCTAssertTrue(bitwise, "\(photo.file) \(p.name): tensor differs from transformers'")
        XCTAssertLessThanOrEqual(gap, 1e-5, "\(photo.file) \(p.name)")
        XCTAssertLessThanOrEqual(meanGap, 1e-5, "\(photo.file) \(p.name)")
        // Sums of ~10⁵ float32 values: numpy's pairwise order vs ours differs in the last bits.
        XCTAssertLessThanOrEqual(sumGap, 1e-6 * Double(plane * tiles), "\(photo.file) \(p.name)")
      }
    }
  }
}

import Foundation
import XCTest

@testable import KVModels

private struct EXIFManifest: Decodable {
  struct Entry: Decodable {
    let file: String
    let orientation: Int
    let width: Int
    let height: Int
    let sha256: String
  }
  let images: [Entry]
}

/// A JPEG's EXIF orientation is applied as transformers' `load_image` applies it
/// (`PIL.ImageOps.exif_transpose`): fixtures from scripts/gen_exif_fixtures.py, every
/// orientation 1…8 (one in a big-endian EXIF block) and a JPEG without EXIF.
final class EXIFOrientationTests: XCTestCase {
  func testEveryOrientationGivesPillowsUprightPixels() throws {
    let manifest = try JSONDecoder().decode(
      EXIFManifest.self, from: imageFixtureData("exif/exif.json"))
    XCTAssertEqual(manifest.images.count, 9)
    var distinct = Set<String>()
    for e in manifest.images {
      let data = [UInt8](try imageFixtureData("exif/" + e.file))
      XCTAssertEqual(data.withUnsafeBytes { EXIFOrientation.read(jpeg: $0) }, e.orientation, e.file)
      let img = try ImageDecoder.decode(path: imageFixture("exif/" + e.file))
      XCTAssertEqual(img.width, e.width, e.file)
      XCTAssertEqual(img.height, e.height, e.file)
      XCTAssertEqual(sha256Hex(img.pixels), e.sha256, e.file)
      distinct.insert(e.sha256)
    }
    // The picture has no symmetry: the eight orientations give eight different images.
    XCTAssertEqual(distinct.count, 8)
  }

  /// A damaged EXIF block (cut short, a wrong byte order, an IFD offset past the end, a tag of
  /// the wrong type) leaves the picture as stored, as Pillow ignores what it cannot read.
  func testDamagedEXIFMeansAsStored() throws {
    let good = [UInt8](try imageFixtureData("exif/orient_6.jpg"))
    let plain = try ImageDecoder.decode(path: imageFixture("exif/orient_none.jpg"))
    guard let app1 = (0..<(good.count - 1)).first(where: { good[$0] == 0xFF && good[$0 + 1] == 0xE1 })
    else { return XCTFail("no APP1 in orient_6.jpg") }
    let tiff = app1 + 10  // marker, length, "Exif\0\0"
    var variants: [(String, [UInt8])] = []
    var order = good
    order[tiff] = 0x58  // "XM": neither II nor MM
    variants.append(("byte order", order))
    var offset = good
    offset[tiff + 4] = 0x7F  // IFD0 far past the block
    variants.append(("IFD offset", offset))
    var type = good
    type[tiff + 8 + 2 + 3] = 4  // the tag as LONG instead of SHORT (big-endian block)
    variants.append(("tag type", type))
    for (what, bytes) in variants {
      XCTAssertEqual(bytes.withUnsafeBytes { EXIFOrientation.read(jpeg: $0) }, 1, what)
      let img = try ImageDecoder.decode(bytes, name: "damaged.jpg")
      XCTAssertEqual(img, plain, what)
    }
    // Cut anywhere inside the EXIF block: not a JPEG that decodes, but the orientation read
    // stays in bounds and says 1.
    let app1End = app1 + 2 + (Int(good[app1 + 2]) << 8 | Int(good[app1 + 3]))
    for cut in app1..<app1End {
      XCTAssertEqual(Array(good[..<cut]).withUnsafeBytes { EXIFOrientation.read(jpeg: $0) }, 1)
    }
  }
}

import Foundation
import XCTest

@testable import KVModels

// Fixtures come from scripts/gen_image_fixtures.py: the expected bytes are Pillow's
// (Image.convert("RGB")) and transformers' (convert_to_rgb: alpha composited over white).

func imageFixture(_ name: String) -> String {
  Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    .appendingPathComponent("images").appendingPathComponent(name).path
}

func imageFixtureData(_ name: String) throws -> Data {
  try Data(contentsOf: URL(fileURLWithPath: imageFixture(name)))
}

/// A fresh empty folder under the temporary directory, removed by the test's teardown block.
func makeTemporaryFolder(_ test: XCTestCase) throws -> String {
  let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent(
    "kvlab-test-\(UUID().uuidString)")
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
  return dir
}

/// Largest absolute difference between two equally long byte sequences.
func maxByteGap<A: Collection, B: Collection>(_ a: A, _ b: B) -> Int
where A.Element == UInt8, B.Element == UInt8 {
  precondition(a.count == b.count)
  var gap = 0
  for (x, y) in zip(a, b) { gap = max(gap, abs(Int(x) - Int(y))) }
  return gap
}

/// SHA-256 (FIPS 180-4), hex: the fixtures name expected bytes by their digest.
func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
  let k: [UInt32] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585,
    0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7,
    0xc671_78f2,
  ]
  var h: [UInt32] = [
    0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab,
    0x5be0_cd19,
  ]
  var tail = Array(bytes.suffix(bytes.count % 64))
  tail.append(0x80)
  while tail.count % 64 != 56 { tail.append(0) }
  let bitLength = UInt64(bytes.count) * 8
  for i in (0..<8).reversed() {
    tail.append(UInt8(truncatingIfNeeded: bitLength >> (UInt64(i) * 8)))
  }
  var w = [UInt32](repeating: 0, count: 64)
  func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
  func block(_ p: UnsafeRawBufferPointer) {
    for t in 0..<16 {
      w[t] =
        UInt32(p[4 * t]) << 24 | UInt32(p[4 * t + 1]) << 16 | UInt32(p[4 * t + 2]) << 8
        | UInt32(p[4 * t + 3])
    }
    for t in 16..<64 {
      let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
      let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
      w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
    }
    var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
    for t in 0..<64 {
      let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
      let ch = (e & f) ^ (~e & g)
      let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
      let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
      let maj = (a & b) ^ (a & c) ^ (b & c)
      let t2 = s0 &+ maj
      (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
    }
    h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d
    h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
  }
  let whole = bytes.count - bytes.count % 64
  var offset = 0
  while offset < whole {
    block(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + 64)]))
    offset += 64
  }
  tail.withUnsafeBytes { t in
    for o in stride(from: 0, to: t.count, by: 64) {
      block(UnsafeRawBufferPointer(rebasing: t[o..<(o + 64)]))
    }
  }
  return h.map { String(format: "%08x", $0) }.joined()
}

func sha256Hex(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { sha256Hex($0) } }
func sha256Hex(_ floats: [Float]) -> String { floats.withUnsafeBytes { sha256Hex($0) } }

private struct DecodedManifest: Decodable {
  struct Entry: Decodable {
    let file: String
    let width: Int
    let height: Int
    let pil_mode: String
    let has_alpha: Bool
    let dropped_sha256: String
    let composited_sha256: String
    let offset: Int
    let tolerance: Int
  }
  let pillow: String
  let images: [Entry]
}

final class ImageDecoderTests: XCTestCase {
  func testSHA256() {
    XCTAssertEqual(
      sha256Hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    XCTAssertEqual(
      sha256Hex(Array("abc".utf8)),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    XCTAssertEqual(
      sha256Hex(Array(repeating: UInt8(ascii: "a"), count: 1_000)),
      "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
  }

  /// Every fixture decodes to Pillow's bytes: exactly, except the documented 1-LSB rounding of
  /// 16-bit PNGs with alpha.
  func testDecodesLikePillow() throws {
    let manifest = try JSONDecoder().decode(
      DecodedManifest.self, from: imageFixtureData("decoded.json"))
    let blob = [UInt8](try imageFixtureData("decoded.rgb"))
    XCTAssertGreaterThanOrEqual(manifest.images.count, 27)
    for e in manifest.images {
      let img = try ImageDecoder.decode(path: imageFixture(e.file))
      XCTAssertEqual(img.width, e.width, e.file)
      XCTAssertEqual(img.height, e.height, e.file)
      XCTAssertEqual(img.alpha != nil, e.has_alpha, "\(e.file): alpha")
      let composited = img.compositedOverWhite()
      XCTAssertNil(composited.alpha)
      let reference = blob[e.offset..<(e.offset + e.width * e.height * 3)]
      let gap = maxByteGap(composited.pixels, reference)
      print("decode \(e.file) (Pillow mode \(e.pil_mode)): max gap \(gap) (allowed \(e.tolerance))")
      XCTAssertLessThanOrEqual(gap, e.tolerance, e.file)
      if e.tolerance == 0 {
        XCTAssertEqual(sha256Hex(composited.pixels), e.composited_sha256, e.file)
        XCTAssertEqual(
          sha256Hex(img.droppingAlpha().pixels), e.dropped_sha256, "\(e.file): alpha dropped")
      }
    }
  }

  func testFormatDetectionIgnoresTheFileName() throws {
    let dir = try makeTemporaryFolder(self)
    let png = try imageFixtureData("rgb_61x45.png")
    let misnamed = (dir as NSString).appendingPathComponent("photo.jpg")
    try png.write(to: URL(fileURLWithPath: misnamed))
    let a = try ImageDecoder.decode(path: misnamed)
    let b = try ImageDecoder.decode(path: imageFixture("rgb_61x45.png"))
    XCTAssertEqual(a, b)
    XCTAssertEqual(ImageFormat.detect([UInt8](png)), .png)
    XCTAssertEqual(ImageFormat.detect([UInt8](try imageFixtureData("jpeg_gray_23x31.jpg"))), .jpeg)
    XCTAssertEqual(ImageFormat.detect([UInt8](try imageFixtureData("p5_17x11.pgm"))), .pnm)
    XCTAssertNil(ImageFormat.detect(Array("P3\n1 1\n255\n0 0 0\n".utf8)))
    XCTAssertNil(ImageFormat.detect([0x89, 0x50]))
  }

  func testAlphaCompositingMatchesPillowForEveryValue() {
    // Pillow's alpha_composite over white, all 256 × 256 (colour, alpha) pairs; the reference is
    // Pillow's integer formula (checked against Pillow itself by gen_image_fixtures' rgba
    // fixtures above).
    var pixels: [UInt8] = []
    var alpha: [UInt8] = []
    for a in 0..<256 {
      for c in 0..<256 {
        pixels += [UInt8(c), UInt8(255 - c), UInt8(c / 2)]
        alpha.append(UInt8(a))
      }
    }
    let img = RGBImage(width: 256, height: 256, pixels: pixels, alpha: alpha)
    let out = img.compositedOverWhite()
    for a in [0, 1, 127, 128, 254, 255] {
      for c in [0, 1, 100, 254, 255] {
        let expected: Int
        if a == 0 {
          expected = 255
        } else {
          let t = c * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7)
          expected = (((t >> 8) + t) >> 8) >> 7
        }
        XCTAssertEqual(Int(out.pixels[(a * 256 + c) * 3]), expected, "c=\(c) a=\(a)")
      }
    }
    XCTAssertEqual(out.pixels[(255 * 256 + 77) * 3], 77)  // opaque: unchanged
    XCTAssertEqual(img.droppingAlpha().pixels, pixels)
  }

  // MARK: - bad inputs (each message is one line naming the file)

  private func message(_ body: () throws -> Any) -> String? {
    do {
      _ = try body()
      return nil
    } catch let e as ImageError {
      XCTAssertFalse(e.description.contains("\n"), e.description)
      return e.description
    } catch {
      return "unexpected \(type(of: error)): \(error)"
    }
  }

  private func decodeBytes(
    _ bytes: [UInt8], _ name: String, maxPixels: Int = ImageDecoder.defaultMaxPixels
  )
    throws -> String?
  {
    let dir = try makeTemporaryFolder(self)
    let path = (dir as NSString).appendingPathComponent(name)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return message { try ImageDecoder.decode(path: path, maxPixels: maxPixels) }.map {
      $0.replacingOccurrences(of: path, with: name)
    }
  }

  /// PNG chunk with a correct CRC.
  private func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in Array(type.utf8) + data {
      crc ^= UInt32(b)
      for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    crc ^= 0xFFFF_FFFF
    func be(_ v: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
    return be(UInt32(data.count)) + Array(type.utf8) + data + be(crc)
  }

  private func pngHeader(width: UInt32, height: UInt32) -> [UInt8] {
    func be(_ v: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
      + chunk("IHDR", be(width) + be(height) + [8, 2, 0, 0, 0])
  }

  func testMissingEmptyAndNonImageFiles() throws {
    XCTAssertEqual(
      message { try ImageDecoder.decode(path: "/no/such/image.png") },
      "/no/such/image.png: cannot open: No such file or directory")
    let dir = try makeTemporaryFolder(self)
    XCTAssertEqual(
      message { try ImageDecoder.decode(path: dir) }, "\(dir): is a folder, not an image file")
    XCTAssertEqual(try decodeBytes([], "empty.png"), "empty.png: empty file")
    XCTAssertEqual(
      try decodeBytes(Array("hello, world\n".utf8), "notes.png"),
      "notes.png: not a PNG, JPEG or binary PPM/PGM image (first bytes: 68 65 6c 6c 6f 2c 20 77 \"hello, w\")"
    )
    XCTAssertEqual(
      try decodeBytes(Array("P3\n1 1\n255\n0 0 0\n".utf8), "plain.ppm"),
      "plain.ppm: plain (ASCII) or bitmap PNM (P3) is not supported; only binary P5 and P6")
  }

  func testCorruptAndTruncatedPNG() throws {
    let png = [UInt8](try imageFixtureData("rgb_61x45.png"))
    XCTAssertEqual(
      try decodeBytes(Array(png.prefix(png.count / 2)), "half.png"),
      "half.png: corrupt or truncated PNG: read beyond end of data")
    XCTAssertEqual(
      try decodeBytes(Array(png.prefix(30)), "header.png"),
      "header.png: corrupt or truncated PNG: read beyond end of data")
    var badCRC = png
    badCRC[29] ^= 1  // IHDR's CRC
    XCTAssertEqual(
      try decodeBytes(badCRC, "crc.png"), "crc.png: corrupt or truncated PNG: IHDR: CRC error")
    var flipped = png
    for i in 200..<260 { flipped[i] ^= 0x5A }  // inside IDAT: zlib data and CRC no longer agree
    let m = try decodeBytes(flipped, "flipped.png")
    XCTAssertTrue(m?.hasPrefix("flipped.png: corrupt or truncated PNG: ") == true, m ?? "decoded")
  }

  func testSizeLimitsAreCheckedBeforeAllocating() throws {
    // 100 000 × 100 000 claimed by a 69-byte file: refused from the header.
    let idat = chunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])  // zlib of nothing
    let huge = pngHeader(width: 100_000, height: 100_000) + idat + chunk("IEND", [])
    XCTAssertEqual(
      try decodeBytes(huge, "huge.png"),
      "huge.png: image is 100000×100000 = 10000000000 pixels, more than the limit of 100000000")
    XCTAssertEqual(
      try decodeBytes(pngHeader(width: 0, height: 5) + idat + chunk("IEND", []), "zero.png"),
      "zero.png: zero-size image (0×5)")
    // Past libpng's own 1 000 000-column limit: still our message, not "Invalid IHDR data".
    XCTAssertEqual(
      try decodeBytes(
        pngHeader(width: 2_000_000, height: 100) + idat + chunk("IEND", []), "wide.png"),
      "wide.png: image is 2000000×100 = 200000000 pixels, more than the limit of 100000000")
    // The limit is configurable.
    XCTAssertEqual(
      message { try ImageDecoder.decode(path: imageFixture("rgb_61x45.png"), maxPixels: 2_000) }?
        .replacingOccurrences(of: imageFixture("") + "/", with: ""),
      "rgb_61x45.png: image is 61×45 = 2745 pixels, more than the limit of 2000")
    XCTAssertNoThrow(try ImageDecoder.decode(path: imageFixture("rgb_61x45.png"), maxPixels: 2_745))
    // JPEG: a real file whose SOF claims 60 000 × 60 000.
    var jpeg = [UInt8](try imageFixtureData("jpeg_420_37x29.jpg"))
    let sof = try XCTUnwrap(
      (0..<(jpeg.count - 1)).first {
        jpeg[$0] == 0xFF && (jpeg[$0 + 1] == 0xC0 || jpeg[$0 + 1] == 0xC2)
      })
    jpeg[sof + 5] = 0xEA; jpeg[sof + 6] = 0x60  // height 60000
    jpeg[sof + 7] = 0xEA; jpeg[sof + 8] = 0x60  // width 60000
    XCTAssertEqual(
      try decodeBytes(jpeg, "huge.jpg"),
      "huge.jpg: image is 60000×60000 = 3600000000 pixels, more than the limit of 100000000")
    jpeg[sof + 5] = 0; jpeg[sof + 6] = 0  // height 0
    let zero = try decodeBytes(jpeg, "zero.jpg")
    XCTAssertTrue(
      zero?.hasPrefix("zero.jpg: ") == true && zero!.contains("mpty"), zero ?? "decoded")
    XCTAssertEqual(
      try decodeBytes(Array("P6\n100000 100000\n255\n".utf8), "huge.ppm"),
      "huge.ppm: image is 100000×100000 = 10000000000 pixels, more than the limit of 100000000")
    XCTAssertEqual(
      try decodeBytes(Array("P5\n0 7\n255\n".utf8), "zero.pgm"), "zero.pgm: zero-size image (0×7)")
  }

  func testCorruptAndTruncatedJPEG() throws {
    let jpeg = [UInt8](try imageFixtureData("jpeg_progressive_37x29.jpg"))
    XCTAssertEqual(
      try decodeBytes(Array(jpeg.prefix(jpeg.count * 2 / 3)), "cut.jpg"),
      "cut.jpg: corrupt or truncated JPEG: Premature end of JPEG file")
    let garbage = try decodeBytes(
      [0xFF, 0xD8, 0xFF] + Array(repeating: 0x42, count: 40), "garbage.jpg")
    XCTAssertTrue(garbage?.hasPrefix("garbage.jpg: corrupt JPEG: ") == true, garbage ?? "decoded")
    XCTAssertEqual(
      message { try ImageDecoder.decode(path: imageFixture("jpeg_cmyk_16x16.jpg")) }?
        .replacingOccurrences(of: imageFixture("") + "/", with: ""),
      "jpeg_cmyk_16x16.jpg: CMYK JPEG is not supported (only RGB/YCbCr and grayscale JPEGs); "
        + "convert it to RGB first")
  }

  func testBadPNM() throws {
    XCTAssertEqual(
      try decodeBytes(Array("P6\n4 4\n255\n".utf8) + [UInt8](repeating: 9, count: 40), "short.ppm"),
      "short.ppm: truncated PPM: the 4×4 raster needs 48 bytes after the header, the file has 40")
    XCTAssertEqual(
      try decodeBytes(Array("P5\n4 4\n70000\n".utf8), "maxval.pgm"),
      "maxval.pgm: bad PNM header: maxval must be 1...65535, got 70000")
    XCTAssertEqual(
      try decodeBytes(Array("P5\n4 4\n0\n".utf8), "maxval0.pgm"),
      "maxval0.pgm: bad PNM header: maxval must be 1...65535, got 0")
    XCTAssertEqual(
      try decodeBytes(Array("P6 4 x4 255\n".utf8), "token.ppm"),
      "token.ppm: bad PNM header: the height is not a decimal number of at most 10 digits")
    XCTAssertEqual(
      try decodeBytes(Array("P6 4 4".utf8), "eof.ppm"),
      "eof.ppm: truncated PNM header: the file ends before the maxval")
    XCTAssertEqual(
      try decodeBytes(Array("P6 4 4 255".utf8), "eof2.ppm"),
      "eof2.ppm: truncated PPM: the 4×4 raster needs 48 bytes after the header, the file has 0")
    // Comments anywhere in the header, and the 16-bit raster, decode.
    let img = try XCTUnwrap(
      try? ImageDecoder.decode(
        Array("P6 # c\n2 # w\n1\n# m\n65535\n".utf8) + [
          0x12, 0x34, 0xFF, 0xFF, 0, 0, 0, 1, 0x80, 0x00, 0x7F, 0xFF,
        ], name: "x"))
    // Pillow: round(v / 65535 · 255), half to even.
    XCTAssertEqual(img.pixels, [18, 255, 0, 0, 128, 127])
  }
}

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The image formats kvlab decodes, told apart by their first bytes (never by the file name).
public enum ImageFormat: String, Sendable, CaseIterable {
  case png, jpeg
  /// Binary PPM (P6, RGB) and PGM (P5, gray).
  case pnm

  /// The format whose signature `bytes` start with, or nil.
  public static func detect(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
    func starts(_ sig: [UInt8]) -> Bool {
      bytes.count >= sig.count && zip(bytes, sig).allSatisfy { $0 == $1 }
    }
    if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
    if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
    if bytes.count >= 3, bytes[0] == UInt8(ascii: "P"),
      bytes[1] == UInt8(ascii: "5") || bytes[1] == UInt8(ascii: "6"),
      PNMDecoder.isWhitespace(bytes[2])
    {
      return .pnm
    }
    return nil
  }

  public static func detect(_ bytes: [UInt8]) -> ImageFormat? {
    bytes.withUnsafeBytes { detect($0) }
  }
}

/// Decodes PNG (libpng's simplified API), JPEG (TurboJPEG) and binary PPM/PGM into `RGBImage`,
/// giving the same samples as Pillow's `Image.open` — see `PNGDecoder`, `JPEGDecoder` and
/// `PNMDecoder` for what that takes per format. Every error is one line naming the file.
public enum ImageDecoder {
  /// Images whose header claims more pixels than this are refused before anything is allocated
  /// (Pillow's own decompression-bomb limit is 89 478 485 pixels for a warning, twice for an error).
  public static let defaultMaxPixels = 100_000_000
  /// Image files are read whole; larger ones are refused before reading (a 100-megapixel PNG
  /// compresses to far less).
  public static let maxFileBytes = 1 << 30

  /// Decodes the file at `path`; the format comes from its first bytes.
  public static func decode(path: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
    let bytes = try readFile(path)
    return try decode(bytes, name: path, maxPixels: maxPixels)
  }

  /// Decodes an image held in memory; `name` is what errors call it.
  public static func decode(_ bytes: [UInt8], name: String, maxPixels: Int = defaultMaxPixels)
    throws -> RGBImage
  {
    try bytes.withUnsafeBytes { raw in
      guard !raw.isEmpty else { throw ImageError(path: name, message: "empty file") }
      guard let format = ImageFormat.detect(raw) else {
        if raw.count >= 2, raw[0] == UInt8(ascii: "P"),
          (UInt8(ascii: "1")...UInt8(ascii: "4")).contains(raw[1])
        {
          throw ImageError(
            path: name,
            message:
              "plain (ASCII) or bitmap PNM (P\(Character(UnicodeScalar(raw[1])))) is not supported; only binary P5 and P6"
          )
        }
        throw ImageError(
          path: name,
          message: "not a PNG, JPEG or binary PPM/PGM image (first bytes: \(signature(raw)))")
      }
      let limits = Limits(name: name, maxPixels: maxPixels)
      switch format {
      case .png: return try PNGDecoder.decode(raw, limits)
      case .jpeg: return try JPEGDecoder.decode(raw, limits)
      case .pnm: return try PNMDecoder.decode(raw, limits)
      }
    }
  }

  /// Size checks shared by the decoders, made on the header before any pixel buffer exists.
  struct Limits {
    let name: String
    let maxPixels: Int

    func fail(_ message: String) -> ImageError { ImageError(path: name, message: message) }

    func check(width: Int, height: Int) throws {
      guard width > 0, height > 0 else {
        throw fail("zero-size image (\(width)×\(height))")
      }
      let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
      guard !overflow, pixels <= maxPixels else {
        throw fail(
          "image is \(width)×\(height) = \(overflow ? "too many" : String(pixels)) pixels, "
            + "more than the limit of \(maxPixels)")
      }
    }
  }

  /// The first bytes, printable ones as text, for "not an image" messages.
  static func signature(_ raw: UnsafeRawBufferPointer) -> String {
    let head = raw.prefix(8)
    let hex = head.map { String(format: "%02x", $0) }.joined(separator: " ")
    let text = String(head.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." })
    return "\(hex) \"\(text)\""
  }

  /// The whole file, with one-line errors ("no such file", "is a folder", ...).
  static func readFile(_ path: String) throws -> [UInt8] {
    do {
      return try BoundedFile.contents(path, limit: maxFileBytes, kind: "an image")
    } catch let failure as BoundedFile.Failure {
      throw ImageError(path: path, message: failure.message)
    }
  }
}

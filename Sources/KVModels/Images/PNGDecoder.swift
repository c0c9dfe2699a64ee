import CImageCodecs

/// PNG through libpng's simplified API (`png_image_begin_read_from_memory` /
/// `png_image_finish_read`), which reports errors in `png_image.message` instead of longjmp-ing
/// across Swift frames. libpng expands palettes, low bit depths, gray to RGB, tRNS to alpha and
/// undoes Adam7 interlacing.
///
/// To give Pillow's samples (which are the file's samples, untouched):
/// - Colour-management chunks (gAMA, cHRM, sRGB, iCCP) are dropped before libpng sees the file:
///   the simplified API would otherwise convert from the file's gamma to sRGB (a PNG with
///   gAMA 1.0 comes out brighter), and Pillow never does.
/// - 16-bit files without alpha are read as 16-bit "linear" samples, which with no gamma
///   information are the raw values; then RGB keeps the high byte (Pillow's "RGB;16B") and gray
///   is clipped to 255 (Pillow opens it as "I;16" and `convert("RGB")` clips: 16-bit gray PNGs
///   come out nearly white there too, and kvlab matches it).
/// - 16-bit files with alpha are read as 8-bit RGBA with `PNG_IMAGE_FLAG_16BIT_sRGB` (no gamma
///   step, premultiplication avoided); libpng then reduces 16 → 8 bits by rounding,
///   (v·255 + 32895) >> 16, where Pillow keeps the high byte: each channel (alpha too) up to 1
///   apart, so up to 2 after compositing over white. Rare in practice.
enum PNGDecoder {
  static func decode(_ file: UnsafeRawBufferPointer, _ limits: ImageDecoder.Limits) throws
    -> RGBImage
  {
    if let stripped = strippingColourChunks(file) {
      return try stripped.withUnsafeBytes { try decodeAsIs($0, limits) }
    }
    return try decodeAsIs(file, limits)
  }

  private static func message(_ image: png_image) -> String {
    withUnsafeBytes(of: image.message) { raw in
      let bytes = raw.prefix { $0 != 0 }
      let text = String(decoding: bytes, as: UTF8.self)
      return text.isEmpty ? "unknown libpng error" : text
    }
  }

  private static func decodeAsIs(_ file: UnsafeRawBufferPointer, _ limits: ImageDecoder.Limits)
    throws -> RGBImage
  {
    // The size limits first, from IHDR itself (always the first chunk): libpng would otherwise
    // answer a zero or over-large size with its generic "Invalid IHDR data".
    if file.count >= 24, file[12] == 0x49, file[13] == 0x48, file[14] == 0x44, file[15] == 0x52 {
      func be32(_ at: Int) -> Int {
        Int(file[at]) << 24 | Int(file[at + 1]) << 16 | Int(file[at + 2]) << 8 | Int(file[at + 3])
      }
      try limits.check(width: be32(16), height: be32(20))
    }
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    defer { png_image_free(&image) }
    guard png_image_begin_read_from_memory(&image, file.baseAddress, file.count) != 0 else {
      throw limits.fail("corrupt or truncated PNG: \(message(image))")
    }
    let width = Int(image.width)
    let height = Int(image.height)
    try limits.check(width: width, height: height)

    // PNG_FORMAT_RGB etc. are composite macros Swift does not import: build them from the flags.
    let color = UInt32(PNG_FORMAT_FLAG_COLOR)
    let alphaFlag = UInt32(PNG_FORMAT_FLAG_ALPHA)
    let linear = UInt32(PNG_FORMAT_FLAG_LINEAR)
    let source = image.format
    let hasAlpha = source & alphaFlag != 0
    let isColor = source & color != 0
    let sixteenBit = source & linear != 0
    let count = width * height

    func finish(format: UInt32, componentBytes: Int, channels: Int) throws
      -> UnsafeMutableRawBufferPointer
    {
      image.format = format
      let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: count * channels * componentBytes, alignment: 16)
      guard png_image_finish_read(&image, nil, buffer.baseAddress, 0, nil) != 0 else {
        buffer.deallocate()
        throw limits.fail("corrupt or truncated PNG: \(message(image))")
      }
      return buffer
    }

    if sixteenBit && !hasAlpha {
      // Raw 16-bit samples (no gAMA left, so libpng assumes linear in and out: no conversion).
      let channels = isColor ? 3 : 1
      let buffer = try finish(
        format: isColor ? linear | color : linear, componentBytes: 2,
        channels: channels)
      defer { buffer.deallocate() }
      let samples = buffer.bindMemory(to: UInt16.self)
      var pixels = [UInt8](repeating: 0, count: count * 3)
      pixels.withUnsafeMutableBufferPointer { out in
        if isColor {
          for i in 0..<count * 3 { out[i] = UInt8(samples[i] >> 8) }  // Pillow "RGB;16B"
        } else {
          for i in 0..<count {  // Pillow "I;16" → "RGB": clip
            let v = UInt8(min(samples[i], 255))
            out[3 * i] = v
            out[3 * i + 1] = v
            out[3 * i + 2] = v
          }
        }
      }
      return RGBImage(width: width, height: height, pixels: pixels)
    }

    if sixteenBit {
      image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)  // samples are not linear: no gamma step
    }
    let buffer = try finish(
      format: hasAlpha ? color | alphaFlag : color, componentBytes: 1,
      channels: hasAlpha ? 4 : 3)
    defer { buffer.deallocate() }
    let bytes = UnsafeBufferPointer(buffer.bindMemory(to: UInt8.self))
    if !hasAlpha {
      return RGBImage(width: width, height: height, pixels: Array(bytes))
    }
    var pixels = [UInt8](repeating: 0, count: count * 3)
    var alpha = [UInt8](repeating: 0, count: count)
    pixels.withUnsafeMutableBufferPointer { rgb in
      alpha.withUnsafeMutableBufferPointer { a in
        for i in 0..<count {
          rgb[3 * i] = bytes[4 * i]
          rgb[3 * i + 1] = bytes[4 * i + 1]
          rgb[3 * i + 2] = bytes[4 * i + 2]
          a[i] = bytes[4 * i + 3]
        }
      }
    }
    return RGBImage(width: width, height: height, pixels: pixels, alpha: alpha)
  }

  /// The chunk types whose meaning libpng's simplified API would apply to the samples.
  private static let colourChunks: Set<String> = ["gAMA", "cHRM", "sRGB", "iCCP"]

  /// The file without its colour-management chunks, or nil when it has none (or when its chunk
  /// structure is too broken to walk: libpng then reports what is wrong).
  static func strippingColourChunks(_ file: UnsafeRawBufferPointer) -> [UInt8]? {
    var drop: [Range<Int>] = []
    var pos = 8
    while pos + 12 <= file.count {
      let length =
        Int(file[pos]) << 24 | Int(file[pos + 1]) << 16 | Int(file[pos + 2]) << 8
        | Int(file[pos + 3])
      let type = String(decoding: file[(pos + 4)..<(pos + 8)], as: UTF8.self)
      guard length < 0x8000_0000, pos + 12 + length <= file.count else { break }
      if type == "IDAT" || type == "IEND" { break }  // these chunks must precede the image data
      if colourChunks.contains(type) { drop.append(pos..<(pos + 12 + length)) }
      pos += 12 + length
    }
    if drop.isEmpty { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(file.count)
    var from = 0
    for range in drop {
      out.append(contentsOf: file[from..<range.lowerBound])
      from = range.upperBound
    }
    out.append(contentsOf: file[from...])
    return out
  }
}

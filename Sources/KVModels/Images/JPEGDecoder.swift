import CImageCodecs

/// JPEG through TurboJPEG (`tjDecompressHeader3`, `tjDecompress2` to RGB), which reports errors by
/// return value, never by longjmp into Swift. Flags 0 mean the accurate integer IDCT and fancy
/// (smooth) chroma upsampling, which is what Pillow asks libjpeg(-turbo) for: the RGB bytes are the
/// same as Pillow's for baseline, progressive, 4:2:0 / 4:2:2 / 4:4:4 and grayscale files.
/// CMYK / YCCK JPEGs (Adobe) are refused with a clear error. The EXIF orientation is applied
/// (`EXIFOrientation`), as transformers' `load_image` applies it after `Image.open`.
enum JPEGDecoder {
  static func decode(_ file: UnsafeRawBufferPointer, _ limits: ImageDecoder.Limits) throws
    -> RGBImage
  {
    guard let handle = tjInitDecompress() else {
      throw limits.fail("cannot start the JPEG decoder (tjInitDecompress failed)")
    }
    defer { tjDestroy(handle) }
    func why() -> String {
      guard let s = tjGetErrorStr2(handle) else { return "unknown TurboJPEG error" }
      return String(cString: s)
    }
    let src = file.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var width: Int32 = 0
    var height: Int32 = 0
    var subsampling: Int32 = 0
    var colorspace: Int32 = 0
    guard
      tjDecompressHeader3(handle, src, UInt(file.count), &width, &height, &subsampling, &colorspace)
        == 0
    else {
      throw limits.fail("corrupt JPEG: \(why())")
    }
    if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
      throw limits.fail(
        "CMYK JPEG is not supported (only RGB/YCbCr and grayscale JPEGs); convert it to RGB first")
    }
    try limits.check(width: Int(width), height: Int(height))
    var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
    // Warnings (a truncated file: "Premature end of JPEG file") count as errors: stop on them.
    let flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
    let rc = pixels.withUnsafeMutableBufferPointer {
      tjDecompress2(
        handle, src, UInt(file.count), $0.baseAddress, width, 0, height, Int32(TJPF_RGB.rawValue),
        flags)
    }
    guard rc == 0 else { throw limits.fail("corrupt or truncated JPEG: \(why())") }
    return RGBImage(width: Int(width), height: Int(height), pixels: pixels)
      .upright(orientation: EXIFOrientation.read(jpeg: file))
  }
}

/// The EXIF orientation of a JPEG (tag 0x0112 in IFD0 of its APP1 "Exif" block), and the
/// transpose that makes the picture upright. transformers' `load_image` applies it
/// (`PIL.ImageOps.exif_transpose`), so a photo taken on its side reaches the processor upright;
/// kvlab does the same so both see the same pixels. Every read is bounds-checked: a damaged
/// EXIF block means orientation 1 (as Pillow ignores what it cannot parse), never an error.
enum EXIFOrientation {
  /// 1…8 (1: as stored), from the JPEG's bytes.
  static func read(jpeg b: UnsafeRawBufferPointer) -> Int {
    guard b.count >= 4, b[0] == 0xFF, b[1] == 0xD8 else { return 1 }
    var i = 2
    // Markers up to the first scan; APP1 comes early, so this reads a few segment headers.
    while i + 4 <= b.count {
      guard b[i] == 0xFF else { return 1 }
      let marker = b[i + 1]
      if marker == 0xFF {  // fill byte
        i += 1
        continue
      }
      if marker == 0xDA || marker == 0xD9 { return 1 }  // start of scan / end of image
      let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
      guard length >= 2, i + 2 + length <= b.count else { return 1 }
      let body = i + 4
      let end = i + 2 + length
      if marker == 0xE1, end - body >= 6,
        b[body] == 0x45, b[body + 1] == 0x78, b[body + 2] == 0x69, b[body + 3] == 0x66,  // "Exif"
        b[body + 4] == 0, b[body + 5] == 0
      {
        return tiffOrientation(b, start: body + 6, end: end) ?? 1
      }
      i = end
    }
    return 1
  }

  /// The orientation tag of IFD0 in the TIFF structure at `start..<end`.
  private static func tiffOrientation(_ b: UnsafeRawBufferPointer, start: Int, end: Int) -> Int? {
    guard end - start >= 8 else { return nil }
    let little: Bool
    switch (b[start], b[start + 1]) {
    case (0x49, 0x49): little = true  // "II"
    case (0x4D, 0x4D): little = false  // "MM"
    default: return nil
    }
    func u16(_ at: Int) -> Int? {
      guard at >= start, at + 2 <= end else { return nil }
      return little ? Int(b[at]) | Int(b[at + 1]) << 8 : Int(b[at]) << 8 | Int(b[at + 1])
    }
    func u32(_ at: Int) -> Int? {
      guard let hi = u16(little ? at + 2 : at), let lo = u16(little ? at : at + 2) else {
        return nil
      }
      return hi << 16 | lo
    }
    guard u16(start + 2) == 42, let ifd = u32(start + 4), let count = u16(start + ifd) else {
      return nil
    }
    for k in 0..<count {
      let entry = start + ifd + 2 + 12 * k
      guard let tag = u16(entry) else { return nil }
      guard tag == 0x0112 else { continue }
      // SHORT (type 3), one value, stored in the first two bytes of the value field.
      guard u16(entry + 2) == 3, let v = u16(entry + 8), (1...8).contains(v) else { return nil }
      return v
    }
    return nil
  }
}

extension RGBImage {
  /// The picture made upright for an EXIF orientation, as Pillow's `exif_transpose`: 2 mirrors
  /// left-right, 3 turns 180°, 4 mirrors top-bottom, 5 transposes (swaps rows and columns),
  /// 6 turns 90° clockwise, 7 transverses (the other diagonal), 8 turns 90° anticlockwise.
  func upright(orientation: Int) -> RGBImage {
    guard (2...8).contains(orientation) else { return self }
    let w = width
    let h = height
    let swaps = orientation >= 5
    let ow = swaps ? h : w
    let oh = swaps ? w : h
    // For an output pixel (x, y), the source column and row.
    func source(_ x: Int, _ y: Int) -> (Int, Int) {
      switch orientation {
      case 2: return (w - 1 - x, y)
      case 3: return (w - 1 - x, h - 1 - y)
      case 4: return (x, h - 1 - y)
      case 5: return (y, x)
      case 6: return (y, h - 1 - x)
      case 7: return (w - 1 - y, h - 1 - x)
      default: return (w - 1 - y, x)  // 8
      }
    }
    var out = [UInt8](repeating: 0, count: ow * oh * 3)
    var outAlpha = alpha.map { _ in [UInt8](repeating: 0, count: ow * oh) }
    for y in 0..<oh {
      for x in 0..<ow {
        let (sx, sy) = source(x, y)
        let s = sy * w + sx
        let d = y * ow + x
        out[d * 3] = pixels[s * 3]
        out[d * 3 + 1] = pixels[s * 3 + 1]
        out[d * 3 + 2] = pixels[s * 3 + 2]
        if let a = alpha { outAlpha![d] = a[s] }
      }
    }
    return RGBImage(width: ow, height: oh, pixels: out, alpha: outAlpha)
  }
}

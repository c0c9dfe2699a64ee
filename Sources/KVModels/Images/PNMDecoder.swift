/// Binary PPM (P6) and PGM (P5), read by hand as Pillow's PpmImagePlugin reads them:
/// header tokens separated by whitespace, `#` comments to the end of the line, one whitespace byte
/// after maxval, then the raster (1 byte per sample when maxval < 256, else 2, big-endian).
/// Samples become 8-bit as in Pillow:
/// - maxval 255: as they are;
/// - P6 with another maxval, and P5 with maxval < 255: min(255, round(v / maxval · 255)), Python's
///   round (half to even);
/// - P5 with maxval > 255 (mode "I" in Pillow): 65535 keeps raw values, others are scaled to
///   0...65535 the same way; `convert("RGB")` then clips them to 255.
enum PNMDecoder {
  static func isWhitespace(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0B || c == 0x0C || c == 0x0D
  }

  static func decode(_ file: UnsafeRawBufferPointer, _ limits: ImageDecoder.Limits) throws
    -> RGBImage
  {
    let color = file[1] == UInt8(ascii: "6")
    var pos = 3  // "P6" and one whitespace byte (checked by ImageFormat.detect)

    func token(_ what: String) throws -> Int {
      var digits: [UInt8] = []
      while true {
        guard pos < file.count else {
          if !digits.isEmpty { break }  // a token may end at the end of the file
          throw limits.fail("truncated PNM header: the file ends before the \(what)")
        }
        let c = file[pos]
        pos += 1
        if isWhitespace(c) {
          if digits.isEmpty { continue }
          break  // the one whitespace byte after the token is consumed
        }
        if c == UInt8(ascii: "#") {
          while pos < file.count, file[pos] != 0x0A, file[pos] != 0x0D { pos += 1 }
          continue
        }
        guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9"), digits.count < 10 else {
          throw limits.fail(
            "bad PNM header: the \(what) is not a decimal number of at most 10 digits")
        }
        digits.append(c)
      }
      return Int(String(decoding: digits, as: UTF8.self))!
    }

    let width = try token("width")
    let height = try token("height")
    let maxval = try token("maxval")
    guard (1...65535).contains(maxval) else {
      throw limits.fail("bad PNM header: maxval must be 1...65535, got \(maxval)")
    }
    try limits.check(width: width, height: height)
    let channels = color ? 3 : 1
    let sampleBytes = maxval > 255 ? 2 : 1
    let samples = width * height * channels
    let needed = samples * sampleBytes
    guard file.count - pos >= needed else {
      throw limits.fail(
        "truncated \(color ? "PPM" : "PGM"): the \(width)×\(height) raster needs \(needed) bytes "
          + "after the header, the file has \(file.count - pos)")
    }
    let raster = UnsafeRawBufferPointer(rebasing: file[pos..<(pos + needed)])

    @inline(__always) func sample(_ i: Int) -> Int {
      sampleBytes == 1 ? Int(raster[i]) : Int(raster[2 * i]) << 8 | Int(raster[2 * i + 1])
    }
    // Pillow's PpmDecoder: min(out_max, round(value / maxval * out_max)).
    @inline(__always) func scaled(_ v: Int, to outMax: Int) -> Int {
      min(outMax, Int((Double(v) / Double(maxval) * Double(outMax)).rounded(.toNearestOrEven)))
    }
    let to8: (Int) -> UInt8
    if maxval == 255 {
      to8 = { UInt8($0) }
    } else if color || maxval < 255 {
      to8 = { UInt8(scaled($0, to: 255)) }
    } else if maxval == 65535 {
      to8 = { UInt8(min($0, 255)) }  // "I;16B" → "I" → convert("RGB") clips
    } else {
      to8 = { UInt8(min(scaled($0, to: 65535), 255)) }
    }

    let count = width * height
    var pixels = [UInt8](repeating: 0, count: count * 3)
    pixels.withUnsafeMutableBufferPointer { out in
      if color {
        for i in 0..<samples { out[i] = to8(sample(i)) }
      } else {
        for i in 0..<count {
          let v = to8(sample(i))
          out[3 * i] = v
          out[3 * i + 1] = v
          out[3 * i + 2] = v
        }
      }
    }
    return RGBImage(width: width, height: height, pixels: pixels)
  }
}

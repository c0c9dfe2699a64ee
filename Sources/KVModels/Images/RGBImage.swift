/// Why an image (or a folder of frames, or a video) could not be read. `description` is one line:
/// "<path>: <message>".
public struct ImageError: Error, CustomStringConvertible, Sendable, Equatable {
  public let path: String
  public let message: String

  public init(path: String, message: String) {
    self.path = path
    self.message = message
  }

  public var description: String { "\(path): \(message)" }
}

/// A decoded 8-bit image: RGB interleaved, row-major, top row first, plus the alpha plane when the
/// file had transparency (an alpha channel, or a PNG tRNS chunk).
///
/// Decoding gives the samples transformers' `load_image` gives (Pillow's `Image.open(...)`, then
/// the EXIF orientation applied to a JPEG): no colour management. What happens to alpha is the caller's choice; Hugging Face image processors
/// (transformers 5.x `convert_to_rgb`) composite it over white: `compositedOverWhite()`.
public struct RGBImage: Equatable, Sendable {
  public var width: Int
  public var height: Int
  /// `width * height * 3` bytes.
  public var pixels: [UInt8]
  /// `width * height` bytes, or nil for an opaque image.
  public var alpha: [UInt8]?

  public init(width: Int, height: Int, pixels: [UInt8], alpha: [UInt8]? = nil) {
    precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3)
    precondition(alpha == nil || alpha!.count == width * height)
    self.width = width
    self.height = height
    self.pixels = pixels
    self.alpha = alpha
  }

  public var pixelCount: Int { width * height }

  /// The pixel at column `x`, row `y`.
  public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
    let i = (y * width + x) * 3
    return (pixels[i], pixels[i + 1], pixels[i + 2])
  }

  /// The alpha plane dropped, colours kept as they are: Pillow's `convert("RGB")` (what
  /// transformers 4.x did).
  public func droppingAlpha() -> RGBImage {
    RGBImage(width: width, height: height, pixels: pixels)
  }

  /// Composited over an opaque background, with Pillow's integer arithmetic
  /// (`Image.alpha_composite(background, image)`), bit for bit.
  public func composited(over background: (r: UInt8, g: UInt8, b: UInt8)) -> RGBImage {
    guard let alpha else { return self }
    var out = pixels
    let bg = [UInt32(background.r), UInt32(background.g), UInt32(background.b)]
    // Pillow's AlphaComposite.c with an opaque destination (dst.a = 255):
    //   outa255 = src.a·255 + 255·(255 − src.a) = 255·255
    //   coef1 = src.a·255·255·2⁷ / outa255 = src.a·2⁷,  coef2 = 255·2⁷ − coef1
    //   out = SHIFTFORDIV255(src·coef1 + dst·coef2 + (0x80 << 7)) >> 7
    // and a fully transparent source pixel copies the destination.
    out.withUnsafeMutableBufferPointer { o in
      alpha.withUnsafeBufferPointer { a in
        for p in 0..<a.count {
          let sa = UInt32(a[p])
          if sa == 255 { continue }
          for c in 0..<3 {
            if sa == 0 {
              o[3 * p + c] = UInt8(bg[c])
              continue
            }
            let coef1 = sa * 255 * 255 * 128 / (255 * 255)
            let coef2 = 255 * 128 - coef1
            let t = UInt32(o[3 * p + c]) * coef1 + bg[c] * coef2 + (0x80 << 7)
            o[3 * p + c] = UInt8(truncatingIfNeeded: (((t >> 8) + t) >> 8) >> 7)
          }
        }
      }
    }
    return RGBImage(width: width, height: height, pixels: out)
  }

  /// What transformers 5.x image processors do to an image with transparency
  /// (`image_transforms.convert_to_rgb`): composite over opaque white.
  public func compositedOverWhite() -> RGBImage { composited(over: (255, 255, 255)) }
}

import CImageCodecs
import Foundation

/// Writes 8-bit RGB PNGs through libpng's simplified API (`png_image_write_to_memory`), which
/// reports errors in `png_image.message` rather than longjmp-ing across Swift frames.
public enum PNGEncoder {
  /// The PNG file's bytes for `image` (alpha, when present, is dropped: views are opaque).
  public static func encode(_ image: RGBImage) throws -> Data {
    guard image.width > 0, image.height > 0 else {
      throw ImageError(
        path: "png", message: "cannot write an empty \(image.width)×\(image.height) image")
    }
    var png = png_image()
    png.version = UInt32(PNG_IMAGE_VERSION)
    png.width = UInt32(image.width)
    png.height = UInt32(image.height)
    png.format = UInt32(PNG_FORMAT_FLAG_COLOR)
    defer { png_image_free(&png) }
    let stride = Int32(image.width * 3)
    // First the size, then the bytes (libpng's two-call protocol).
    var size = 0
    let sized = image.pixels.withUnsafeBytes { px in
      png_image_write_to_memory(&png, nil, &size, 0, px.baseAddress, stride, nil)
    }
    guard sized != 0, size > 0 else {
      throw ImageError(path: "png", message: "libpng could not size the image: \(message(png))")
    }
    var out = Data(count: size)
    let written = out.withUnsafeMutableBytes { dst in
      image.pixels.withUnsafeBytes { px in
        png_image_write_to_memory(&png, dst.baseAddress, &size, 0, px.baseAddress, stride, nil)
      }
    }
    guard written != 0 else {
      throw ImageError(path: "png", message: "libpng could not write the image: \(message(png))")
    }
    return out.prefix(size)
  }

  private static func message(_ image: png_image) -> String {
    withUnsafeBytes(of: image.message) { raw in
      let text = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      return text.isEmpty ? "unknown libpng error" : text
    }
  }
}

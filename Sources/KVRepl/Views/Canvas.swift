import Foundation
import KVModels

/// An RGB raster the PNG views draw on: filled rectangles, lines, and text in a 5×7 bitmap font
/// (upper case, digits, a little punctuation), so that a plot carries its own labels without a
/// font library.
struct Canvas {
  typealias Color = (r: UInt8, g: UInt8, b: UInt8)

  let width: Int
  let height: Int
  private(set) var pixels: [UInt8]

  init(width: Int, height: Int, background: Color = (255, 255, 255)) {
    self.width = width
    self.height = height
    pixels = [UInt8](repeating: 0, count: width * height * 3)
    fill(x: 0, y: 0, w: width, h: height, background)
  }

  var image: RGBImage { RGBImage(width: width, height: height, pixels: pixels) }

  mutating func set(_ x: Int, _ y: Int, _ c: Color) {
    guard x >= 0, y >= 0, x < width, y < height else { return }
    let i = (y * width + x) * 3
    pixels[i] = c.r
    pixels[i + 1] = c.g
    pixels[i + 2] = c.b
  }

  /// Fills the part of the rectangle that lies on the canvas: a rectangle partly or wholly off
  /// the canvas (or of no size) draws what is on it, which may be nothing.
  mutating func fill(x: Int, y: Int, w: Int, h: Int, _ c: Color) {
    let x0 = max(0, x)
    let x1 = min(width, x + w)
    let y0 = max(0, y)
    let y1 = min(height, y + h)
    guard x0 < x1, y0 < y1 else { return }
    for yy in y0..<y1 {
      for xx in x0..<x1 { set(xx, yy, c) }
    }
  }

  /// A rectangle's outline, one pixel wide.
  mutating func frame(x: Int, y: Int, w: Int, h: Int, _ c: Color) {
    fill(x: x, y: y, w: w, h: 1, c)
    fill(x: x, y: y + h - 1, w: w, h: 1, c)
    fill(x: x, y: y, w: 1, h: h, c)
    fill(x: x + w - 1, y: y, w: 1, h: h, c)
  }

  /// A line `thickness` pixels wide (Bresenham, each point a small square).
  mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Color, thickness: Int = 1) {
    var x = x0
    var y = y0
    let dx = abs(x1 - x0)
    let dy = -abs(y1 - y0)
    let sx = x0 < x1 ? 1 : -1
    let sy = y0 < y1 ? 1 : -1
    var err = dx + dy
    let half = thickness / 2
    while true {
      fill(x: x - half, y: y - half, w: thickness, h: thickness, c)
      if x == x1 && y == y1 { break }
      let e2 = 2 * err
      if e2 >= dy {
        err += dy
        x += sx
      }
      if e2 <= dx {
        err += dx
        y += sy
      }
    }
  }

  /// Draws `text` with its top-left corner at (x, y); each font pixel is `scale` pixels.
  /// Returns the x after the last glyph.
  @discardableResult
  mutating func text(
    _ text: String, x: Int, y: Int, _ c: Color = (0, 0, 0), scale: Int = 1
  ) -> Int {
    var cx = x
    for ch in text.uppercased() {
      let rows = Self.font[ch] ?? Self.font["?"]!
      for (r, bits) in rows.enumerated() {
        for col in 0..<5 where bits & (0x10 >> col) != 0 {
          fill(x: cx + col * scale, y: y + r * scale, w: scale, h: scale, c)
        }
      }
      cx += Self.advance * scale
    }
    return cx
  }

  /// Pixels one glyph takes horizontally (5 wide and a gap), and a line of text vertically.
  static let advance = 6
  static let lineHeight = 10

  static func textWidth(_ text: String, scale: Int = 1) -> Int { text.count * advance * scale }

  /// Viridis, sampled at nine points and interpolated: `t` in 0...1 (0 dark purple, 1 yellow).
  /// Perceptually ordered and readable in grey, so a retention share reads as its lightness.
  static func viridis(_ t: Double) -> Color {
    let stops: [(Double, Double, Double)] = [
      (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
      (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
    ]
    let u = min(1, max(0, t.isFinite ? t : 0)) * Double(stops.count - 1)
    let i = min(stops.count - 2, Int(u))
    let f = u - Double(i)
    let a = stops[i]
    let b = stops[i + 1]
    func mix(_ p: Double, _ q: Double) -> UInt8 { UInt8((p + (q - p) * f).rounded()) }
    return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
  }

  /// 5×7 glyphs, one row per byte from the top, bit 4 the leftmost column.
  static let font: [Character: [UInt8]] = [
    " ": [0, 0, 0, 0, 0, 0, 0],
    "0": [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
    "1": [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
    "2": [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
    "3": [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
    "4": [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
    "5": [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
    "6": [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
    "7": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    "8": [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
    "9": [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
    "A": [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
    "B": [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
    "C": [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
    "D": [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
    "E": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
    "F": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
    "G": [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
    "H": [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
    "I": [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
    "J": [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
    "K": [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
    "L": [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
    "M": [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
    "N": [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
    "O": [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
    "P": [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
    "Q": [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
    "R": [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
    "S": [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
    "T": [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
    "U": [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
    "V": [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
    "W": [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
    "X": [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
    "Y": [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
    "Z": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
    ".": [0, 0, 0, 0, 0, 0x0C, 0x0C], ",": [0, 0, 0, 0, 0x0C, 0x04, 0x08],
    ":": [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0], "-": [0, 0, 0, 0x1F, 0, 0, 0],
    "(": [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
    ")": [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
    "/": [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0], "%": [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
    "×": [0, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0], "=": [0, 0, 0x1F, 0, 0x1F, 0, 0],
    "+": [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0], "_": [0, 0, 0, 0, 0, 0, 0x1F],
    "?": [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04], "~": [0, 0, 0x08, 0x15, 0x02, 0, 0],
    "'": [0x04, 0x04, 0x08, 0, 0, 0, 0], "<": [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
    ">": [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
    "#": [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
  ]
}

import KVModels

/// The shapes the tasks draw. Each is a filled region tested per integer pixel (no
/// anti-aliasing), so drawing is exact and identical everywhere.
public enum ShapeKind: String, CaseIterable, Sendable, Codable {
  case circle, square, triangle, cross, diamond

  /// The word in "how many circles": plural forms are words of the vocabulary too.
  public var plural: String { self == .cross ? "crosses" : rawValue + "s" }

  /// Whether the pixel at offset (dx, dy) from the centre lies inside the shape of "radius" r
  /// (every shape fits in the square of side 2r+1 around its centre).
  func contains(dx: Int, dy: Int, r: Int) -> Bool {
    switch self {
    case .circle: return dx * dx + dy * dy <= r * r
    // A bit smaller than its box, so that its area is near the circle's.
    case .square: return abs(dx) * 5 <= r * 4 && abs(dy) * 5 <= r * 4
    // Apex up at dy = -r, base at dy = +r with half-width r.
    case .triangle: return dy >= -r && dy <= r && 2 * abs(dx) <= dy + r
    // A plus sign whose arms are a third of the radius thick on each side.
    case .cross:
      let arm = max(1, r / 3)
      return (abs(dx) <= arm && abs(dy) <= r) || (abs(dy) <= arm && abs(dx) <= r)
    case .diamond: return abs(dx) + abs(dy) <= r
    }
  }
}

/// The fixed palette: saturated colours far from each other and from the grey background, so a
/// colour is never in doubt (no background pixel has r ≠ g or g ≠ b; every palette colour has).
public enum ShapeColor: String, CaseIterable, Sendable, Codable {
  case red, green, blue, yellow, purple, orange

  public var rgb: (r: UInt8, g: UInt8, b: UInt8) {
    switch self {
    case .red: return (220, 40, 40)
    case .green: return (40, 170, 60)
    case .blue: return (40, 80, 220)
    case .yellow: return (235, 210, 40)
    case .purple: return (150, 60, 190)
    case .orange: return (245, 140, 30)
    }
  }
}

/// One drawn shape: what it is and where (centre and radius in pixels).
public struct PlacedShape: Equatable, Sendable {
  public var kind: ShapeKind
  public var color: ShapeColor
  public var x: Int
  public var y: Int
  public var radius: Int

  public init(kind: ShapeKind, color: ShapeColor, x: Int, y: Int, radius: Int) {
    self.kind = kind
    self.color = color
    self.x = x
    self.y = y
    self.radius = radius
  }

  /// The pixels it covers (clipped to the image), row by row.
  public func pixels(width: Int, height: Int) -> [(x: Int, y: Int)] {
    var out: [(x: Int, y: Int)] = []
    for py in max(0, y - radius)...min(height - 1, y + radius) {
      for px in max(0, x - radius)...min(width - 1, x + radius)
      where kind.contains(dx: px - x, dy: py - y, r: radius) {
        out.append((px, py))
      }
    }
    return out
  }
}

/// An RGB canvas: a grey textured background, then shapes painted over it.
struct Raster {
  let width: Int
  let height: Int
  var pixels: [UInt8]

  /// Grey blocks of 4×4 pixels (values 112…143) from `seed`, shifted `drift` pixels left, plus
  /// per-pixel noise of ±`noise` from (seed, frame): a background that is busy enough that the
  /// model must look for shapes, yet never coloured.
  init(width: Int, height: Int, seed: UInt64, drift: Int = 0, frame: Int = 0, noise: Int = 0) {
    self.width = width
    self.height = height
    pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
      for x in 0..<width {
        var v = 112 + Int(pixelHash(seed, (x + drift) >> 2, y >> 2) % 32)
        if noise > 0 {
          v += Int(pixelHash(seed ^ 0xF4A3, x, y, frame + 1) % UInt64(2 * noise + 1)) - noise
        }
        let g = UInt8(clamping: v)
        let i = (y * width + x) * 3
        pixels[i] = g
        pixels[i + 1] = g
        pixels[i + 2] = g
      }
    }
  }

  mutating func draw(_ shape: PlacedShape) {
    let (r, g, b) = shape.color.rgb
    for p in shape.pixels(width: width, height: height) {
      let i = (p.y * width + p.x) * 3
      pixels[i] = r
      pixels[i + 1] = g
      pixels[i + 2] = b
    }
  }

  var image: RGBImage { RGBImage(width: width, height: height, pixels: pixels) }
}

import Foundation
import KVModels

/// A dataset on disk: PNG files and one JSON object per sample in `samples.jsonl`, for the
/// training script (which reads this rather than re-implementing the generator).
extension SyntheticSample {
  /// File names relative to the dataset folder: `TASK-SEED.png`, or for a clip
  /// `TASK-SEED/frame-000.png`…
  public var imagePaths: [String] {
    let stem = "\(task.rawValue)-\(seed)"
    guard task.isClip else { return [stem + ".png"] }
    let digits = max(3, String(images.count - 1).count)
    return images.indices.map { i in
      let n = String(i)
      return "\(stem)/frame-\(String(repeating: "0", count: digits - n.count) + n).png"
    }
  }

  /// The PNG bytes of each image, in `imagePaths` order.
  public func pngFiles() throws -> [Data] { try images.map { try PNGEncoder.encode($0) } }

  /// One line of samples.jsonl (no newline), keys in a fixed order: task, seed, images,
  /// question, answer, kind, width, height, frames, target {shape, color, x, y, radius},
  /// then region | span [first, last] and time | count, as the task has them, and last `shapes`:
  /// every shape drawn, in drawing order (the training script's per-token auxiliary labels).
  public var jsonLine: String {
    func str(_ s: String) -> String {
      var out = "\""
      for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
      }
      return out + "\""
    }
    func shapeJSON(_ s: PlacedShape) -> String {
      "{\"shape\":\(str(s.kind.rawValue)),\"color\":\(str(s.color.rawValue)),\"x\":\(s.x),\"y\":\(s.y),\"radius\":\(s.radius)}"
    }
    var fields: [(String, String)] = [
      ("task", str(task.rawValue)), ("seed", String(seed)),
      ("images", "[" + imagePaths.map(str).joined(separator: ",") + "]"),
      ("question", str(question)), ("answer", str(answer)), ("kind", str(questionKind.rawValue)),
      ("width", String(size.side)), ("height", String(size.side)),
      ("frames", String(images.count)),
      ("target", shapeJSON(target)),
    ]
    if let region { fields.append(("region", str(region.rawValue))) }
    if let frameSpan {
      fields.append(("span", "[\(frameSpan.lowerBound),\(frameSpan.upperBound)]"))
    }
    if let time { fields.append(("time", str(time.rawValue))) }
    if let count { fields.append(("count", String(count))) }
    fields.append(("shapes", "[" + shapes.map(shapeJSON).joined(separator: ",") + "]"))
    return "{" + fields.map { "\(str($0.0)):\($0.1)" }.joined(separator: ",") + "}"
  }
}

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
    func shapeJSON(_ s: PlacedShape) -> String {
      "{\"shape\":\(s.kind.rawValue.jsonQuoted),\"color\":\(s.color.rawValue.jsonQuoted),\"x\":\(s.x),\"y\":\(s.y),\"radius\":\(s.radius)}"
    }
    var fields: [(String, String)] = [
      ("task", task.rawValue.jsonQuoted), ("seed", String(seed)),
      ("images", "[" + imagePaths.map(\.jsonQuoted).joined(separator: ",") + "]"),
      ("question", question.jsonQuoted), ("answer", answer.jsonQuoted),
      ("kind", questionKind.rawValue.jsonQuoted),
      ("width", String(size.side)), ("height", String(size.side)),
      ("frames", String(images.count)),
      ("target", shapeJSON(target)),
    ]
    if let region { fields.append(("region", region.rawValue.jsonQuoted)) }
    if let frameSpan {
      fields.append(("span", "[\(frameSpan.lowerBound),\(frameSpan.upperBound)]"))
    }
    if let time { fields.append(("time", time.rawValue.jsonQuoted)) }
    if let count { fields.append(("count", String(count))) }
    fields.append(("shapes", "[" + shapes.map(shapeJSON).joined(separator: ",") + "]"))
    return "{" + fields.map { "\($0.0.jsonQuoted):\($0.1)" }.joined(separator: ",") + "}"
  }
}

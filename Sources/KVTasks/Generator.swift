import KVModels

/// Makes samples: the same (task, seed, size, question kind) gives the same pixels and text,
/// byte for byte, on every machine.
///
/// Shapes are placed in distinct cells of a grid (16-px cells in the needle image, a 4×4 grid
/// on a tile), each shape wholly inside its cell: shapes never touch, so counts are exact, and
/// since quadrant and tile borders are cell borders, no shape straddles one. At the default
/// sizes every cell is 16 px, the square one visual token of the embedded model covers, so a
/// shape looks the same to it in every task.
public enum SyntheticGenerator {
  /// - Parameters:
  ///   - size: nil = the task's default; `frames` is used by clips only.
  ///   - question: the kind of question to ask; nil = one of the task's kinds, from the seed
  ///     (the pixels are the same either way).
  public static func generate(
    _ task: SyntheticTask, seed: UInt64, size: SyntheticSize? = nil, question: QuestionKind? = nil
  ) throws -> SyntheticSample {
    var size = size ?? task.defaultSize
    guard task.validSide(size.side) else {
      throw SyntheticError("size \(size.side) for \(task.rawValue): must be \(task.sizeRule)")
    }
    if task.isClip {
      // Each third must hold the longest span (4 frames).
      guard (12...4096).contains(size.frames) else {
        throw SyntheticError("frames \(size.frames): must be from 12 to 4096")
      }
    } else {
      size.frames = 1
    }
    if let question, !task.questionKinds.contains(question) {
      throw SyntheticError(
        "\(task.rawValue) asks no \(question.rawValue) question (it asks: \(task.questionKinds.map(\.rawValue).joined(separator: ", ")))"
      )
    }
    var rng = SplitMix64(seed: seed ^ task.salt)
    // Drawn even when the kind is given, so the pixels never depend on the question asked.
    let picked = rng.pick(task.questionKinds)
    let kind = question ?? picked
    switch task {
    case .needleImage: return needleImage(seed: seed, size: size, kind: kind, rng: &rng)
    case .needleVideo: return needleVideo(seed: seed, size: size, kind: kind, rng: &rng)
    case .count: return count(seed: seed, size: size, rng: &rng)
    case .attribute: return attribute(seed: seed, size: size, kind: kind, rng: &rng)
    }
  }

  /// A shape of radius in `radii`, placed at a random spot of cell (column, row) of side
  /// `cell` so that it keeps a 2-px margin inside the cell (1 px on small cells).
  static func place(
    _ kind: ShapeKind, _ color: ShapeColor, column: Int, row: Int, cell: Int,
    radii: ClosedRange<Int>, rng: inout SplitMix64
  ) -> PlacedShape {
    let r = rng.int(in: radii)
    let margin = cell >= 32 ? 2 : 1
    let slack = max(0, cell / 2 - r - margin)
    let x = column * cell + cell / 2 + rng.int(in: -slack...slack)
    let y = row * cell + cell / 2 + rng.int(in: -slack...slack)
    return PlacedShape(kind: kind, color: color, x: x, y: y, radius: r)
  }

  /// Radii for a cell: about a third of the side (5–6 px in a 16-px cell, 10–11 in 32).
  static func radii(cell: Int) -> ClosedRange<Int> {
    max(2, cell * 5 / 16)...max(2, cell * 6 / 16 - (cell >= 32 ? 1 : 0))
  }

  static func needleImage(
    seed: UInt64, size: SyntheticSize, kind: QuestionKind, rng: inout SplitMix64
  )
    -> SyntheticSample
  {
    let cell = 16
    let side = size.side / cell
    let cells = side * side
    // 40–80 distractors at 512 px (1,024 cells), the same density at other sizes.
    let distractors = rng.int(in: max(3, cells * 40 / 1024)...max(4, cells * 80 / 1024))
    let needleKind = rng.pick(ShapeKind.allCases)
    let needleColor = rng.pick(ShapeColor.allCases)
    // The needle is the only shape of its kind and the only one of its colour, so either names
    // it: "what color is the {shape}?" and "which shape is {color}?" each have one answer.
    let others = ShapeKind.allCases.filter { $0 != needleKind }
    let otherColors = ShapeColor.allCases.filter { $0 != needleColor }
    let order = rng.shuffled(Array(0..<cells))
    let needle = place(
      needleKind, needleColor, column: order[0] % side, row: order[0] / side,
      cell: cell, radii: radii(cell: cell), rng: &rng)
    var shapes = [needle]
    for c in order[1...distractors] {
      shapes.append(
        place(
          rng.pick(others), rng.pick(otherColors), column: c % side, row: c / side,
          cell: cell, radii: radii(cell: cell), rng: &rng))
    }
    var raster = Raster(width: size.side, height: size.side, seed: seed)
    for s in shapes { raster.draw(s) }
    let half = size.side / 2
    let region: Region =
      needle.y < half
      ? (needle.x < half ? .topLeft : .topRight) : (needle.x < half ? .bottomLeft : .bottomRight)
    let answer: String
    switch kind {
    case .color: answer = needle.color.rawValue
    case .region: answer = region.rawValue
    default: answer = needle.kind.rawValue
    }
    return SyntheticSample(
      task: .needleImage, seed: seed, size: size, images: [raster.image],
      question: question(.needleImage, kind, needle), answer: answer, questionKind: kind,
      target: needle, shapes: shapes, region: region)
  }

  static func needleVideo(
    seed: UInt64, size: SyntheticSize, kind: QuestionKind, rng: inout SplitMix64
  )
    -> SyntheticSample
  {
    let cell = size.side / 4
    let needleKind = rng.pick(ShapeKind.allCases)
    let needleColor = rng.pick(ShapeColor.allCases)
    let others = ShapeKind.allCases.filter { $0 != needleKind }
    let otherColors = ShapeColor.allCases.filter { $0 != needleColor }
    let order = rng.shuffled(Array(0..<16))
    let needle = place(
      needleKind, needleColor, column: order[0] % 4, row: order[0] / 4,
      cell: cell, radii: radii(cell: cell), rng: &rng)
    // A few static distractors, none of the needle's kind or colour, so "what {color} shape
    // appeared?" and "when did the {shape} appear?" name the needle alone.
    var shapes = [needle]
    for c in order[1...rng.int(in: 2...3)] {
      shapes.append(
        place(
          rng.pick(others), rng.pick(otherColors), column: c % 4, row: c / 4, cell: cell,
          radii: radii(cell: cell), rng: &rng))
    }
    let time = rng.pick(TimeThird.allCases)
    let third = TimeThird.frames(time, of: size.frames)
    let length = rng.int(in: 1...4)
    let first = rng.int(in: third.lowerBound...(third.upperBound - length))
    let span = first...(first + length - 1)
    var frames: [RGBImage] = []
    frames.reserveCapacity(size.frames)
    for f in 0..<size.frames {
      // The background drifts one pixel every 8 frames and flickers ±2: frames change little,
      // but no two are identical, so the needle is not the only thing that changes.
      var raster = Raster(
        width: size.side, height: size.side, seed: seed, drift: f / 8, frame: f, noise: 2)
      for s in shapes.dropFirst() { raster.draw(s) }
      if span.contains(f) { raster.draw(needle) }
      frames.append(raster.image)
    }
    let answer: String
    switch kind {
    case .time: answer = time.rawValue
    case .color: answer = needle.color.rawValue
    default: answer = needle.kind.rawValue
    }
    return SyntheticSample(
      task: .needleVideo, seed: seed, size: size, images: frames,
      question: question(.needleVideo, kind, needle), answer: answer, questionKind: kind,
      target: needle, shapes: shapes, frameSpan: span, time: time)
  }

  static func count(seed: UInt64, size: SyntheticSize, rng: inout SplitMix64) -> SyntheticSample {
    let cell = size.side / 4
    let counted = rng.pick(ShapeKind.allCases)
    let others = ShapeKind.allCases.filter { $0 != counted }
    let n = rng.int(in: 1...5)
    let extra = rng.int(in: 0...4)
    let order = rng.shuffled(Array(0..<16))
    var shapes: [PlacedShape] = []
    for (i, c) in order.prefix(n + extra).enumerated() {
      // Colours are random for both, so the count is of the shape, not of a colour.
      shapes.append(
        place(
          i < n ? counted : rng.pick(others), rng.pick(ShapeColor.allCases), column: c % 4,
          row: c / 4, cell: cell, radii: radii(cell: cell), rng: &rng))
    }
    var raster = Raster(width: size.side, height: size.side, seed: seed)
    for s in shapes { raster.draw(s) }
    return SyntheticSample(
      task: .count, seed: seed, size: size, images: [raster.image],
      question: question(.count, .count, shapes[0]), answer: SyntheticVocabulary.numbers[n - 1],
      questionKind: .count, target: shapes[0], shapes: shapes, count: n)
  }

  static func attribute(
    seed: UInt64, size: SyntheticSize, kind: QuestionKind, rng: inout SplitMix64
  )
    -> SyntheticSample
  {
    let cell = size.side / 4
    let n = rng.int(in: 2...4)
    // Distinct kinds and distinct colours: both "the square" and "the red one" are unique.
    let kinds = rng.shuffled(ShapeKind.allCases)
    let colors = rng.shuffled(ShapeColor.allCases)
    let order = rng.shuffled(Array(0..<16))
    var shapes: [PlacedShape] = []
    for i in 0..<n {
      shapes.append(
        place(
          kinds[i], colors[i], column: order[i] % 4, row: order[i] / 4, cell: cell,
          radii: radii(cell: cell), rng: &rng))
    }
    let target = shapes[rng.below(n)]
    var raster = Raster(width: size.side, height: size.side, seed: seed)
    for s in shapes { raster.draw(s) }
    return SyntheticSample(
      task: .attribute, seed: seed, size: size, images: [raster.image],
      question: question(.attribute, kind, target),
      answer: kind == .color ? target.color.rawValue : target.kind.rawValue, questionKind: kind,
      target: target, shapes: shapes)
  }

  static func question(_ task: SyntheticTask, _ kind: QuestionKind, _ target: PlacedShape)
    -> String
  {
    SyntheticVocabulary.fill(
      SyntheticVocabulary.template(task, kind), shape: target.kind, color: target.color)
  }
}

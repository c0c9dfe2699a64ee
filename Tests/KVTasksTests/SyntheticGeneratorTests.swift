import KVModels
import XCTest

@testable import KVTasks

/// The generator: deterministic, and every answer true of the picture it goes with.
final class SyntheticGeneratorTests: XCTestCase {
  func sample(
    _ task: SyntheticTask, _ seed: UInt64, question: QuestionKind? = nil,
    size: SyntheticSize? = nil
  ) throws -> SyntheticSample {
    try SyntheticGenerator.generate(task, seed: seed, size: size, question: question)
  }

  func testSha256() {
    XCTAssertEqual(
      sha256Hex(Array("abc".utf8)),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  }

  /// The same seed gives the same bytes; pinned digests of the pixels (not of the PNG files,
  /// whose bytes also depend on the zlib build) catch any drift across machines or changes.
  func testDeterministicAndPinned() throws {
    let pinned: [(SyntheticTask, String, String, String)] = [
      (
        .needleImage, "35c6fd1551c0ef90ec0ea42bb52b5fb3dc256b4ce8703fd634b40212070486c4",
        "where is the cross?", "bottom-right"
      ),
      (
        .needleVideo, "fea7195adf9563dc00b25a9cdff22607d4cd675cf4cb7fae94d69d50a2743a41",
        "what yellow shape appeared?", "diamond"
      ),
      (
        .count, "c3c071dda3daa9f9f758edd1c904fd8155138d31c1e211ffd54adf1046e3a440",
        "how many diamonds are there?", "four"
      ),
      (
        .attribute, "d76c0e413049adf708aa12aec7f58d96d228cc4063cf6e399f5fe550b2d476ce",
        "which shape is yellow?", "triangle"
      ),
    ]
    for (task, digest, question, answer) in pinned {
      let a = try sample(task, 7)
      let b = try sample(task, 7)
      XCTAssertEqual(a, b, task.rawValue)
      XCTAssertEqual(sha256Hex(a.images.flatMap(\.pixels)), digest, task.rawValue)
      XCTAssertEqual(a.question, question, task.rawValue)
      XCTAssertEqual(a.answer, answer, task.rawValue)
      XCTAssertEqual(try a.pngFiles(), try b.pngFiles(), task.rawValue)
    }
  }

  func testDifferentSeedsDiffer() throws {
    for task in SyntheticTask.allCases {
      var seen = Set<String>()
      for seed in 0..<8 as Range<UInt64> {
        seen.insert(sha256Hex(try sample(task, seed).images.flatMap(\.pixels)))
      }
      XCTAssertEqual(seen.count, 8, task.rawValue)
    }
  }

  /// Asking another kind of question leaves the pixels as they were.
  func testQuestionKindKeepsPixels() throws {
    for task in SyntheticTask.allCases {
      let base = try sample(task, 3)
      for kind in task.questionKinds {
        let s = try sample(task, 3, question: kind)
        XCTAssertEqual(s.images, base.images)
        XCTAssertEqual(s.questionKind, kind)
      }
    }
  }

  /// What the metadata says was drawn is exactly what is coloured: each shape's pixels have
  /// its colour, and nothing else is coloured (the background is grey: r = g = b). So shapes
  /// do not overlap, and the counts below may be read from the metadata.
  func testPixelsMatchShapes() throws {
    for task in SyntheticTask.allCases {
      for seed in 0..<6 as Range<UInt64> {
        let s = try sample(task, seed)
        for (f, image) in s.images.enumerated() {
          let visible = s.shapes.filter { shape in
            !(task.isClip && shape == s.target && !s.frameSpan!.contains(f))
          }
          var covered = 0
          for shape in visible {
            let px = shape.pixels(width: image.width, height: image.height)
            covered += px.count
            for p in px {
              let c = image[p.x, p.y]
              XCTAssertTrue(
                c == shape.color.rgb, "\(task) seed \(seed) frame \(f) at \(p): \(c)")
            }
          }
          var colored = 0
          for y in 0..<image.height {
            for x in 0..<image.width {
              let c = image[x, y]
              if c.r != c.g || c.g != c.b { colored += 1 }
            }
          }
          XCTAssertEqual(colored, covered, "\(task) seed \(seed) frame \(f)")
        }
      }
    }
  }

  func testNeedleImage() throws {
    var regions = Set<String>()
    for seed in 0..<40 as Range<UInt64> {
      let s = try sample(.needleImage, seed, question: .region)
      XCTAssertEqual(s.images.count, 1)
      XCTAssertEqual(s.images[0].width, 512)
      XCTAssertEqual(s.images[0].height, 512)
      XCTAssertEqual(s.shapes.filter { $0.kind == s.target.kind }.count, 1, "seed \(seed)")
      XCTAssertEqual(s.shapes.filter { $0.color == s.target.color }.count, 1, "seed \(seed)")
      XCTAssertTrue((41...81).contains(s.shapes.count), "seed \(seed): \(s.shapes.count)")
      // The needle lies wholly inside its quadrant (pixels 0–255 or 256–511 on each axis), in
      // one 16-px cell: the square one visual token of the embedded model covers.
      let t = s.target
      let left = t.x + t.radius <= 255
      let right = t.x - t.radius >= 256
      let top = t.y + t.radius <= 255
      let bottom = t.y - t.radius >= 256
      XCTAssertEqual((t.x - t.radius) / 16, (t.x + t.radius) / 16, "seed \(seed): \(t)")
      XCTAssertEqual((t.y - t.radius) / 16, (t.y + t.radius) / 16, "seed \(seed): \(t)")
      XCTAssertTrue(left != right && top != bottom, "seed \(seed): \(t)")
      let expected = (top ? "top-" : "bottom-") + (left ? "left" : "right")
      XCTAssertEqual(s.answer, expected)
      XCTAssertEqual(s.question, "where is the \(t.kind.rawValue)?")
      regions.insert(s.answer)
      XCTAssertEqual(try sample(.needleImage, seed, question: .color).answer, t.color.rawValue)
      let shape = try sample(.needleImage, seed, question: .shape)
      XCTAssertEqual(shape.answer, t.kind.rawValue)
      XCTAssertEqual(shape.question, "which shape is \(t.color.rawValue)?")
    }
    XCTAssertEqual(regions.count, 4)
  }

  func testNeedleVideo() throws {
    var times = Set<String>()
    for seed in 0..<40 as Range<UInt64> {
      let s = try sample(.needleVideo, seed, question: .time)
      XCTAssertEqual(s.images.count, 32)
      let span = s.frameSpan!
      XCTAssertTrue((1...4).contains(span.count))
      let third = TimeThird.frames(s.time!, of: 32)
      XCTAssertTrue(
        third.contains(span.lowerBound) && third.contains(span.upperBound), "seed \(seed)")
      XCTAssertEqual(s.answer, s.time!.rawValue)
      XCTAssertEqual(s.shapes.filter { $0.kind == s.target.kind }.count, 1)
      XCTAssertEqual(s.shapes.filter { $0.color == s.target.color }.count, 1)
      let shape = try sample(.needleVideo, seed, question: .shape)
      XCTAssertEqual(shape.question, "what \(s.target.color.rawValue) shape appeared?")
      XCTAssertEqual(shape.answer, s.target.kind.rawValue)
      // The needle's centre shows its colour in the span's frames only.
      let shown = s.images.indices.filter {
        s.images[$0][s.target.x, s.target.y] == s.target.color.rgb
      }
      XCTAssertEqual(shown, Array(span), "seed \(seed)")
      times.insert(s.answer)
    }
    XCTAssertEqual(times, ["beginning", "middle", "end"])
    XCTAssertEqual(TimeThird.frames(.beginning, of: 32), 0..<10)
    XCTAssertEqual(TimeThird.frames(.middle, of: 32), 10..<21)
    XCTAssertEqual(TimeThird.frames(.end, of: 32), 21..<32)
    // Frames change little: two frames without the needle and the same drift differ by the
    // ±2 flicker only, yet they do differ.
    let s = try sample(.needleVideo, 1, size: SyntheticSize(side: 64, frames: 12))
    XCTAssertEqual(s.images.count, 12)
    let quiet = (0..<8).filter { !s.frameSpan!.contains($0) }
    let a = s.images[quiet[0]].pixels
    let b = s.images[quiet[1]].pixels
    XCTAssertNotEqual(a, b)
    XCTAssertLessThanOrEqual(zip(a, b).map { abs(Int($0) - Int($1)) }.max()!, 4)
  }

  func testCount() throws {
    var answers = Set<String>()
    for seed in 0..<60 as Range<UInt64> {
      let s = try sample(.count, seed)
      let n = s.shapes.filter { $0.kind == s.target.kind }.count
      XCTAssertEqual(n, s.count)
      XCTAssertEqual(s.answer, SyntheticVocabulary.numbers[n - 1])
      XCTAssertEqual(s.question, "how many \(s.target.kind.plural) are there?")
      answers.insert(s.answer)
    }
    XCTAssertEqual(answers, Set(SyntheticVocabulary.numbers))
  }

  func testAttribute() throws {
    for seed in 0..<30 as Range<UInt64> {
      let s = try sample(.attribute, seed)
      XCTAssertEqual(Set(s.shapes.map(\.kind)).count, s.shapes.count)
      XCTAssertEqual(Set(s.shapes.map(\.color)).count, s.shapes.count)
      switch s.questionKind {
      case .color:
        XCTAssertEqual(s.question, "what color is the \(s.target.kind.rawValue)?")
        XCTAssertEqual(s.answer, s.target.color.rawValue)
      default:
        XCTAssertEqual(s.question, "which shape is \(s.target.color.rawValue)?")
        XCTAssertEqual(s.answer, s.target.kind.rawValue)
      }
    }
  }

  /// Every question's words and every answer are in the exported vocabulary.
  func testVocabularyIsClosed() throws {
    let words = Set(SyntheticVocabulary.allWords)
    let answers = Set(SyntheticVocabulary.allAnswers)
    XCTAssertEqual(SyntheticVocabulary.allWords, SyntheticVocabulary.allWords.sorted())
    for task in SyntheticTask.allCases {
      for seed in 0..<50 as Range<UInt64> {
        let s = try sample(task, seed)
        XCTAssertTrue(answers.contains(s.answer), s.answer)
        XCTAssertEqual(SyntheticVocabulary.words(s.answer), [s.answer])
        for w in SyntheticVocabulary.words(s.question) {
          XCTAssertTrue(words.contains(w), "\(w) of \(s.question)")
        }
      }
    }
    XCTAssertEqual(
      SyntheticVocabulary.words("Where is the star?"), ["where", "is", "the", "star", "?"])
  }

  func testSizes() throws {
    let big = try sample(.needleImage, 1, size: SyntheticSize(side: 1024, frames: 1))
    XCTAssertEqual(big.images[0].width, 1024)
    XCTAssertTrue((161...321).contains(big.shapes.count))
    let small = try sample(.needleImage, 1, size: SyntheticSize(side: 128, frames: 1))
    XCTAssertEqual(small.shapes.filter { $0.kind == small.target.kind }.count, 1)
    XCTAssertEqual(
      try sample(.count, 1, size: SyntheticSize(side: 128, frames: 1)).images[0].width, 128)
    func message(_ task: SyntheticTask, _ size: SyntheticSize, _ q: QuestionKind? = nil) -> String {
      do {
        _ = try sample(task, 0, question: q, size: size)
        return "no error"
      } catch { return "\(error)" }
    }
    XCTAssertEqual(
      message(.needleImage, SyntheticSize(side: 500, frames: 1)),
      "size 500 for needle-image: must be a multiple of 64 from 128 to 2048")
    XCTAssertEqual(
      message(.count, SyntheticSize(side: 70, frames: 1)),
      "size 70 for count: must be a multiple of 16 from 64 to 1024")
    XCTAssertEqual(
      message(.needleVideo, SyntheticSize(side: 64, frames: 5)),
      "frames 5: must be from 12 to 4096")
    XCTAssertEqual(
      message(.count, SyntheticSize(side: 64, frames: 1), .region),
      "count asks no region question (it asks: count)")
  }
}

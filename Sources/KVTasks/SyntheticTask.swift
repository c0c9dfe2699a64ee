import KVModels

/// The task families of the embedded model's training data and benchmark.
public enum SyntheticTask: String, CaseIterable, Sendable {
  /// A large multi-tile image full of distractor shapes and one shape of a kind found nowhere
  /// else; asks its colour, its quadrant, or which shape it is.
  case needleImage = "needle-image"
  /// A clip of frames that change little; one shape appears for 1–4 frames in one third of it.
  case needleVideo = "needle-video"
  /// One tile holding 1–5 shapes of one kind among others: how many.
  case count
  /// One tile of 2–4 shapes, all of different kinds and colours: the colour of a shape, or the
  /// shape of a colour.
  case attribute

  /// The question kinds this task asks (one picked per sample from the seed).
  public var questionKinds: [QuestionKind] {
    switch self {
    case .needleImage: return [.color, .region, .shape]
    case .needleVideo: return [.shape, .time, .color]
    case .count: return [.count]
    case .attribute: return [.color, .shape]
    }
  }

  /// Whether samples are clips (frames) rather than one image.
  public var isClip: Bool { self == .needleVideo }

  /// Whether a sample is one tile by design (count, attribute): fed unsplit, as the embedded
  /// model is trained on it, however a model would tile a larger image.
  public var isSingleTile: Bool { self == .count || self == .attribute }

  /// The default size: the needle image is 512 px square, 8×8 tiles of 64 px (the embedded
  /// model's tile) plus the global image, which at 16 tokens a tile is 1,040 visual tokens;
  /// everything else is one 64-px tile (per frame for clips), and clips are 32 frames.
  public var defaultSize: SyntheticSize {
    switch self {
    case .needleImage: return SyntheticSize(side: 512, frames: 1)
    case .needleVideo: return SyntheticSize(side: 64, frames: 32)
    case .count, .attribute: return SyntheticSize(side: 64, frames: 1)
    }
  }

  /// What sizes this task accepts, in words (for errors and help).
  public var sizeRule: String {
    switch self {
    case .needleImage: return "a multiple of 64 from 128 to 2048"
    default: return "a multiple of 16 from 64 to 1024"
    }
  }

  func validSide(_ side: Int) -> Bool {
    switch self {
    case .needleImage: return side % 64 == 0 && (128...2048).contains(side)
    default: return side % 16 == 0 && (64...1024).contains(side)
    }
  }

  /// A salt mixed into the seed, so that the same seed gives unrelated samples across tasks.
  var salt: UInt64 {
    switch self {
    case .needleImage: return 0x1F0E_5A17_0000_0001
    case .needleVideo: return 0x1F0E_5A17_0000_0002
    case .count: return 0x1F0E_5A17_0000_0003
    case .attribute: return 0x1F0E_5A17_0000_0004
    }
  }
}

/// What a question asks, which fixes its answer word class.
public enum QuestionKind: String, CaseIterable, Sendable {
  case color, shape, region, time, count
}

/// Image side in pixels (square images and frames) and, for clips, the number of frames.
public struct SyntheticSize: Equatable, Sendable {
  public var side: Int
  public var frames: Int

  public init(side: Int, frames: Int) {
    self.side = side
    self.frames = frames
  }
}

/// The quadrant a needle lies in. Quadrant borders fall on cell borders and every shape lies
/// inside its cell, so a needle is never on a border.
public enum Region: String, CaseIterable, Sendable {
  case topLeft = "top-left"
  case topRight = "top-right"
  case bottomLeft = "bottom-left"
  case bottomRight = "bottom-right"
}

/// The third of a clip a needle appears in.
public enum TimeThird: String, CaseIterable, Sendable {
  case beginning, middle, end

  /// The frames of third `index` (0, 1, 2) of a clip of `frames` frames: ⌊i·n/3⌋ ..< ⌊(i+1)·n/3⌋.
  public static func frames(_ third: TimeThird, of frames: Int) -> Range<Int> {
    let i = allCases.firstIndex(of: third)!
    return (i * frames / 3)..<((i + 1) * frames / 3)
  }
}

/// Why a sample could not be made (a bad size); `description` is one line.
public struct SyntheticError: Error, CustomStringConvertible, Sendable, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// One generated sample: pixels, question, one-word answer, and what was drawn (so tests and
/// the benchmark can check answers against the picture).
public struct SyntheticSample: Equatable, Sendable {
  public var task: SyntheticTask
  public var seed: UInt64
  public var size: SyntheticSize
  /// One image, or the frames of a clip in order.
  public var images: [RGBImage]
  public var question: String
  /// One lowercase word of `SyntheticVocabulary.allAnswers`.
  public var answer: String
  public var questionKind: QuestionKind
  /// The shape the question is about (needle, counted kind's first shape, attribute subject).
  public var target: PlacedShape
  /// Every shape drawn (the target included), in drawing order; in a clip, the static ones plus
  /// the needle (drawn only in `frameSpan`).
  public var shapes: [PlacedShape]
  /// needle-image: the needle's quadrant.
  public var region: Region?
  /// needle-video: the frames showing the needle, and the third they lie in.
  public var frameSpan: ClosedRange<Int>?
  public var time: TimeThird?
  /// count: how many shapes of the target's kind were drawn.
  public var count: Int?
}

/// The closed vocabulary: question templates, answer words, and the rule that splits text into
/// words (the embedded model's word-level tokenizer is built from exactly these).
public enum SyntheticVocabulary {
  /// Words for counts 1…5 (words, so that each answer is one token of a word tokenizer).
  public static let numbers = ["one", "two", "three", "four", "five"]

  /// The templates, with `{shape}`, `{shapes}` (plural) and `{color}` slots.
  public static let templates: [(task: SyntheticTask, kind: QuestionKind, text: String)] = [
    (.needleImage, .color, "what color is the {shape}?"),
    (.needleImage, .region, "where is the {shape}?"),
    (.needleImage, .shape, "which shape is {color}?"),
    (.needleVideo, .shape, "what {color} shape appeared?"),
    (.needleVideo, .time, "when did the {shape} appear?"),
    (.needleVideo, .color, "what color was the {shape}?"),
    (.count, .count, "how many {shapes} are there?"),
    (.attribute, .color, "what color is the {shape}?"),
    (.attribute, .shape, "which shape is {color}?"),
  ]

  static func template(_ task: SyntheticTask, _ kind: QuestionKind) -> String {
    templates.first { $0.task == task && $0.kind == kind }!.text
  }

  static func fill(_ template: String, shape: ShapeKind, color: ShapeColor) -> String {
    template.filling("{shapes}", with: shape.plural)
      .filling("{shape}", with: shape.rawValue)
      .filling("{color}", with: color.rawValue)
  }

  /// Every answer word, by question kind.
  public static func answers(_ kind: QuestionKind) -> [String] {
    switch kind {
    case .color: return ShapeColor.allCases.map(\.rawValue)
    case .shape: return ShapeKind.allCases.map(\.rawValue)
    case .region: return Region.allCases.map(\.rawValue)
    case .time: return TimeThird.allCases.map(\.rawValue)
    case .count: return numbers
    }
  }

  /// Every answer word, sorted.
  public static var allAnswers: [String] {
    Array(Set(QuestionKind.allCases.flatMap { answers($0) })).sorted()
  }

  /// Text as words: lowercase, split at spaces, with "?" a word of its own ("top-left" is one
  /// word).
  public static func words(_ text: String) -> [String] {
    text.lowercased().filling("?", with: " ? ").split(separator: " ").map(
      String.init)
  }

  /// Every word any question or answer can hold, sorted (byte order).
  public static var allWords: [String] {
    var all = Set(allAnswers)
    for t in templates {
      for shape in ShapeKind.allCases {
        for color in ShapeColor.allCases {
          all.formUnion(words(fill(t.text, shape: shape, color: color)))
        }
      }
    }
    return all.sorted()
  }
}

extension String {
  fileprivate func filling(_ target: String, with replacement: String) -> String {
    split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
  }
}

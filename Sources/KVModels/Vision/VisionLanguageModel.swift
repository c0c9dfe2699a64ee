import Foundation
import KVTensor

/// What one vision encoder call turns into decoder tokens: one tile (Idefics3), one image
/// (LLaVA), or one temporal patch of frames (Qwen2-VL: one frame twice for an image, two
/// consecutive frames of a video). Its pixels are made when the block holding these tokens is
/// prefilled, not before, so that neither decoded frames nor vision activations pile up.
public struct VisualUnit: Sendable {
  /// The token grid the unit becomes (rows × cols tokens, row-major).
  public var tokenRows: Int
  public var tokenCols: Int
  /// Channel-first normalised pixels of the unit's frames (all one size).
  public var pixels: @Sendable () throws -> [PixelValues]

  public init(
    tokenRows: Int, tokenCols: Int, pixels: @escaping @Sendable () throws -> [PixelValues]
  ) {
    self.tokenRows = tokenRows
    self.tokenCols = tokenCols
    self.pixels = pixels
  }

  public var tokenCount: Int { tokenRows * tokenCols }
}

/// An image to lay out: its size now, its pixels when a unit needs them (decoded again from the
/// file, so a long clip never sits in memory whole).
public struct ImageSource: Sendable {
  public var width: Int
  public var height: Int
  public var load: @Sendable () throws -> RGBImage

  /// An image already in memory.
  public init(_ image: RGBImage) {
    width = image.width
    height = image.height
    load = { image }
  }

  /// An image of a known size whose pixels `load` gives when they are needed (a video frame).
  public init(width: Int, height: Int, load: @escaping @Sendable () throws -> RGBImage) {
    self.width = width
    self.height = height
    self.load = load
  }

  /// A file: decoded once now for its size, and again when its pixels are needed.
  public init(path: String) throws {
    let image = try ImageDecoder.decode(path: path)
    width = image.width
    height = image.height
    load = { try ImageDecoder.decode(path: path) }
  }
}

/// A run of decoder input: token ids to embed, or (with `visual`) placeholder ids whose
/// embeddings the vision tower supplies. `positions` are the rotary positions; for a model with
/// M-RoPE, `ropeAxes` (temporal, height, width) are, and the cache orders tokens by their index
/// in the sequence instead (M-RoPE positions repeat and jump).
///
/// A session keeps every segment it was fed (to rebuild the cache and to show the layout), so
/// a segment is stored compactly: a unit's placeholder id once, origins and positions as runs
/// (one record per tile or frame, not per token). `tokens`, `origins`, `positions` and
/// `ropeAxes` are per-token views made on demand.
public struct PromptSegment: Sendable {
  /// Text ids; empty when every id is `sameID` (a visual unit's placeholders).
  private var idList: [Int]
  private var sameID: Int
  public private(set) var count: Int
  private var originRuns: OriginRuns
  private var positionRuns: IntRuns
  private var axisRuns: [IntRuns]?
  public var visual: VisualUnit?

  public init(
    tokens: [Int], origins: [TokenOrigin], positions: [Int], ropeAxes: [[Int]]? = nil,
    visual: VisualUnit? = nil
  ) {
    precondition(tokens.count == origins.count && tokens.count == positions.count)
    precondition(visual.map { $0.tokenCount == tokens.count } ?? true)
    precondition(ropeAxes.map { $0.count == 3 && $0.allSatisfy { $0.count == tokens.count } } ?? true)
    count = tokens.count
    if let id = tokens.first, tokens.count > 1, tokens.allSatisfy({ $0 == id }) {
      idList = []
      sameID = id
    } else {
      idList = tokens
      sameID = 0
    }
    originRuns = OriginRuns(origins)
    let runs = IntRuns(positions)
    positionRuns = runs
    // Text under M-RoPE has its three axes equal to its positions: stored once.
    axisRuns = ropeAxes.map { axes in axes.map { $0 == positions ? runs : IntRuns($0) } }
    self.visual = visual
  }

  private init(
    idList: [Int], sameID: Int, count: Int, originRuns: OriginRuns, positionRuns: IntRuns,
    axisRuns: [IntRuns]?, visual: VisualUnit?
  ) {
    self.idList = idList
    self.sameID = sameID
    self.count = count
    self.originRuns = originRuns
    self.positionRuns = positionRuns
    self.axisRuns = axisRuns
    self.visual = visual
  }

  public var tokens: [Int] {
    idList.isEmpty && count > 0 ? Array(repeating: sameID, count: count) : idList
  }
  public var origins: [TokenOrigin] { originRuns.array }
  public var positions: [Int] { positionRuns.array }
  public var ropeAxes: [[Int]]? { axisRuns.map { $0.map(\.array) } }

  /// The origin of token `index`, without making the whole list.
  public func origin(at index: Int) -> TokenOrigin { originRuns[index] }
  /// The first token's origin.
  public var firstOrigin: TokenOrigin? { originRuns.first }

  /// Rows `range` of this segment (text only: a visual unit is never split).
  public func slice(_ range: Range<Int>) -> PromptSegment {
    precondition(visual == nil || range == 0..<count, "a visual unit is encoded whole")
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "slice out of range")
    return PromptSegment(
      idList: idList.isEmpty ? [] : Array(idList[range]), sameID: sameID, count: range.count,
      originRuns: originRuns.slice(range), positionRuns: positionRuns.slice(range),
      axisRuns: axisRuns.map { $0.map { $0.slice(range) } }, visual: visual)
  }

  /// Appends a text segment that follows this text segment (consecutive text runs merge; a
  /// generated token is one such run), in place: nothing per token is copied but its own.
  public mutating func append(_ other: PromptSegment) {
    precondition(visual == nil && other.visual == nil, "only text segments merge")
    if idList.isEmpty && count > 0 { idList = Array(repeating: sameID, count: count) }
    if other.idList.isEmpty {
      idList.append(contentsOf: repeatElement(other.sameID, count: other.count))
    } else {
      idList.append(contentsOf: other.idList)
    }
    count += other.count
    originRuns.append(contentsOf: other.originRuns)
    positionRuns.append(contentsOf: other.positionRuns)
    // Axes follow this segment: a plain segment appended to an M-RoPE one adds its positions
    // on every axis.
    if axisRuns != nil {
      for a in 0..<3 { axisRuns![a].append(contentsOf: other.axisRuns?[a] ?? other.positionRuns) }
    }
  }

  /// Drops the spare capacity of its records: a segment kept for the session's life (a run that
  /// merges again grows them anew).
  public mutating func trimCapacity() {
    if idList.capacity > idList.count { idList = idList.withUnsafeBufferPointer { Array($0) } }
    originRuns.trim()
    positionRuns.trim()
    if axisRuns != nil { for a in 0..<3 { axisRuns![a].trim() } }
  }

  /// Bytes this segment keeps for its tokens (ids, origin and position runs; their capacity),
  /// besides the segment itself: what a session's records cost per fed segment.
  public var recordBytes: Int {
    idList.capacity * MemoryLayout<Int>.stride + originRuns.bytes + positionRuns.bytes
      + (axisRuns?.reduce(0) { $0 + $1.bytes } ?? 0)
  }
}

extension PromptSegment {
  /// A square visual unit (an InternVL or Idefics3 tile): `count` placeholder tokens `id`, a
  /// √count × √count grid, at positions from `start`; each token's origin is `marker` with
  /// `tile` and its grid cell.
  public static func squareUnit(
    id: Int, count: Int, origin marker: TokenOrigin, tile: Int?, start: Int,
    pixels: @escaping @Sendable () throws -> [PixelValues]
  ) -> PromptSegment {
    let side = Int(Double(count).squareRoot())
    var origins: [TokenOrigin] = []
    origins.reserveCapacity(count)
    for k in 0..<count {
      var o = marker
      o.tile = tile
      o.row = k / side
      o.col = k % side
      origins.append(o)
    }
    return PromptSegment(
      tokens: Array(repeating: id, count: count), origins: origins,
      positions: Array(start..<(start + count)),
      visual: VisualUnit(tokenRows: side, tokenCols: side, pixels: pixels))
  }
}

/// A laid-out input: its segments and the rotary position the next token takes.
public struct PromptLayout: Sendable {
  public var segments: [PromptSegment]
  public var nextPosition: Int

  public init(segments: [PromptSegment], nextPosition: Int) {
    self.segments = segments
    self.nextPosition = nextPosition
  }
}

/// The times of a clip's frames (seconds from the video's start) and the video's length.
public struct ClipTimes: Sendable, Equatable {
  public var seconds: [Double]
  public var duration: Double
  public init(seconds: [Double], duration: Double) {
    self.seconds = seconds
    self.duration = duration
  }
}

extension VisionLanguageModel {
  public var splitting: Bool? {
    get { nil }
    set {}
  }

  public func layout(
    frames: [ImageSource], times: ClipTimes, at index: VisualInputIndex, start: Int
  ) throws -> PromptLayout {
    try layout(frames: frames, at: index, start: start)
  }
}

/// Where an image or clip sits in the session: which feed, which image (images and videos
/// counted together), and for frames their times.
public struct VisualInputIndex: Sendable {
  public var input: Int
  public var image: Int
  public init(input: Int, image: Int) {
    self.input = input
    self.image = image
  }
}

/// How a chat turn is written for a model: text fed between `userPrefix` and `turnEnd`, answers
/// after `assistantPrefix`; generation stops at any of `stopTokens`.
public struct ChatLayout: Sendable, Equatable {
  public var systemPrefix: String
  public var userPrefix: String
  public var assistantPrefix: String
  public var turnEnd: String
  public var stopTokens: [String]
  /// What separates an image or clip from text that follows it in the same turn.
  public var afterVisual: String

  public init(
    systemPrefix: String, userPrefix: String, assistantPrefix: String, turnEnd: String,
    stopTokens: [String], afterVisual: String = ""
  ) {
    self.afterVisual = afterVisual
    self.systemPrefix = systemPrefix
    self.userPrefix = userPrefix
    self.assistantPrefix = assistantPrefix
    self.turnEnd = turnEnd
    self.stopTokens = stopTokens
  }

  public init(_ t: ChatTemplate) {
    self.init(
      systemPrefix: t.systemPrefix, userPrefix: t.userPrefix, assistantPrefix: t.assistantPrefix,
      turnEnd: t.turnEnd, stopTokens: [t.stopToken])
  }
}

/// A vision encoder + connector in front of a llama-style decoder, loaded from a Hugging Face
/// folder. Each family (Idefics3, LLaVA, Qwen2-VL, Qwen2.5-VL) lays out its own prompt for an image or clip
/// and encodes its own visual units; the decoder and the cache are shared.
public protocol VisionLanguageModel: AnyObject, Sendable {
  /// "idefics3", "llava", "qwen2_vl", "qwen2_5_vl", "internvl".
  var family: String { get }
  var decoder: LlamaModel { get }
  var tokenizer: BPETokenizer { get }
  var chat: ChatLayout { get }
  /// Parameters of the vision tower and connector.
  var visionParameterCount: Int { get }
  /// Decoder tokens per visual unit at the model's native size (tile, image, frame pair).
  var tokensPerUnit: Int? { get }
  /// A one-line description of what a unit is ("tile 512×512 → 64 tokens").
  var unitDescription: String { get }
  /// Whether images are cut into tiles, for a family that tiles them (`split=`); nil for the
  /// others (setting it then changes nothing).
  var splitting: Bool? { get set }

  /// The segments `image` becomes at rotary position `start` (text markers and visual units,
  /// with origins).
  func layout(image: ImageSource, at index: VisualInputIndex, start: Int) throws -> PromptLayout
  /// The same for the frames of a clip.
  func layout(frames: [ImageSource], at index: VisualInputIndex, start: Int) throws -> PromptLayout
  /// The frames of a video with their times, for a family whose prompt states them (SmolVLM:
  /// "Frame from mm:ss"); the others lay them out as `layout(frames:at:start:)`.
  func layout(frames: [ImageSource], times: ClipTimes, at index: VisualInputIndex, start: Int)
    throws -> PromptLayout
  /// The frames of a clip, `source(i)` giving frame i (its size now, its pixels when its unit
  /// is encoded), laid out part by part where the family can (`times`: the timed layout, as
  /// `layout(frames:times:at:start:)`), so that a long clip is never laid out whole.
  func streamedLayout(
    frames count: Int, source: @escaping @Sendable (Int) throws -> ImageSource, times: ClipTimes?,
    at index: VisualInputIndex, start: Int
  ) throws -> StreamedLayout
  /// The decoder-space embeddings of a unit's frames (`tokenCount × hidden`), charged to
  /// `.vision` while computed.
  func encode(_ frames: [PixelValues], meter: MemoryMeter?) throws -> Matrix
}

extension VisionLanguageModel {
  /// Tokenizes text that sits between visual units (their markers are special tokens, so
  /// tokenizing piece by piece gives the ids of tokenizing the whole prompt).
  func textSegment(_ text: String, origin: TokenOrigin, start: Int, mrope: Bool) -> PromptSegment {
    let ids = tokenizer.encode(text)
    let positions = Array(start..<(start + ids.count))
    return PromptSegment(
      tokens: ids, origins: Array(repeating: origin, count: ids.count), positions: positions,
      ropeAxes: mrope ? [positions, positions, positions] : nil)
  }
}

/// What the families share when loading: the tokenizer and its special tokens, with clear
/// errors. (Which family a folder is: `ModelRegistry`.)
public enum VisionLanguageModels {
  /// Loads a Hugging Face model folder that has a vision tower (`ModelRegistry` chooses the
  /// family from config.json).
  public static func load(folder path: String, meter: MemoryMeter?) throws
    -> any VisionLanguageModel
  {
    let folder = try HFModelFolder(path: path)
    guard let vision = try ModelRegistry.load(folder: folder, meter: meter).vision else {
      throw ModelError(
        path: (path as NSString).appendingPathComponent("config.json"),
        message: "model_type '\(folder.modelType ?? "(none)")' has no vision tower")
    }
    return vision
  }

  /// The folder's tokenizer.json, with a clear error when it is missing.
  static func tokenizer(in folder: HFModelFolder) throws -> BPETokenizer {
    let p = (folder.path as NSString).appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: p) else {
      throw ModelError(path: folder.path, message: "no tokenizer.json in this folder")
    }
    return try BPETokenizer(tokenizerJSON: p)
  }

  /// The id of a special token the model needs, or an error naming it.
  static func id(_ token: String, in tokenizer: BPETokenizer, folder: HFModelFolder) throws -> Int {
    guard let id = tokenizer.id(of: token) else {
      throw ModelError(path: folder.path, message: "tokenizer.json has no \(token) token")
    }
    return id
  }
}

/// im2col for a stride-p convolution: row (y, x) of the patch grid holds the patch's pixels in
/// (channel, frame, row, col) order — the flattening of a Conv2d/Conv3d kernel [out][c][t][p][p].
/// Patches are listed in `order` (row-major by default).
func patchMatrix(
  _ frames: [PixelValues], patch p: Int, order: [(y: Int, x: Int)]? = nil, category: MemoryCategory,
  meter: MemoryMeter?
) -> Matrix {
  let c = frames[0].channels
  let h = frames[0].height
  let w = frames[0].width
  let gridW = w / p
  let list = order ?? (0..<((h / p) * gridW)).map { ($0 / gridW, $0 % gridW) }
  let t = frames.count
  let m = Matrix(
    uninitializedRows: list.count, cols: c * t * p * p, category: category, meter: meter)
  for (r, cell) in list.enumerated() {
    var dst = m.row(r)
    for ch in 0..<c {
      for f in frames {
        f.values.withUnsafeBufferPointer { src in
          for ky in 0..<p {
            let base = ch * h * w + (cell.y * p + ky) * w + cell.x * p
            for kx in 0..<p { dst[kx] = src[base + kx] }
            dst += p
          }
        }
      }
    }
  }
  return m
}

/// Pixel shuffle (Idefics3's connector, InternVL's `pixel_shuffle`): the `side × side` patch rows
/// of `hidden` from row `first` on, `s × s` neighbours concatenated into one row. Token (i, j)
/// holds patches (i·s + a, j·s + b) for a, b in 0..<s, a major, as both models' view/permute
/// sequences order them.
func pixelShuffle(
  _ hidden: Matrix, from first: Int = 0, side: Int, by s: Int, meter: MemoryMeter?
) -> Matrix {
  let d = hidden.cols
  let out = side / s
  let shuffled = Matrix(
    uninitializedRows: out * out, cols: d * s * s, category: .vision, meter: meter)
  for i in 0..<out {
    for j in 0..<out {
      let dst = shuffled.row(i * out + j)
      for a in 0..<s {
        for b in 0..<s {
          (dst + (a * s + b) * d).update(
            from: hidden.row(first + (i * s + a) * side + j * s + b), count: d)
        }
      }
    }
  }
  return shuffled
}

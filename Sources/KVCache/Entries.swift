import KVModels
import KVTensor

/// What the cache stores with each entry besides its key and value: the original (RoPE) position,
/// the origin packed into fixed-width fields (40 bytes, against 2·headDim·4 bytes of K/V per
/// entry and head), and the policy's carried score (H2O's accumulated attention).
public struct EntryMeta: Equatable, Sendable {
  public var position: Int32
  var modality: UInt8
  var system: Bool
  var input: Int32
  // -1 = nil
  var image: Int32
  var tile: Int32
  var row: Int32
  var col: Int32
  var frame: Int32
  var span: Int32
  /// Score carried from block to block by cumulative policies (H2O); 0 for the others.
  public var carried: Float

  public init(position: Int, origin: TokenOrigin, carried: Float = 0) {
    self.position = Int32(truncatingIfNeeded: position)
    modality = Self.modalityCode(origin.modality)
    system = origin.isSystem
    input = Int32(truncatingIfNeeded: origin.input)
    image = Self.pack(origin.image)
    tile = Self.pack(origin.tile)
    row = Self.pack(origin.row)
    col = Self.pack(origin.col)
    frame = Self.pack(origin.frame)
    span = Self.pack(origin.span)
    self.carried = carried
  }

  public var origin: TokenOrigin {
    TokenOrigin(
      modality: TokenOrigin.Modality.allCases[Int(modality)], input: Int(input),
      image: Self.unpack(image), tile: Self.unpack(tile), row: Self.unpack(row),
      col: Self.unpack(col), frame: Self.unpack(frame), span: Self.unpack(span), isSystem: system)
  }

  public var originModality: TokenOrigin.Modality { TokenOrigin.Modality.allCases[Int(modality)] }
  public var frameIndex: Int? { Self.unpack(frame) }
  public var imageIndex: Int? { Self.unpack(image) }
  public var tileIndex: Int? { Self.unpack(tile) }
  public var patch: (row: Int, col: Int)? {
    guard row >= 0, col >= 0 else { return nil }
    return (Int(row), Int(col))
  }
  public var inputIndex: Int { Int(input) }
  public var isSystem: Bool { system }
  public var isText: Bool { originModality == .text }
  public var isVideo: Bool { originModality == .video }

  static func modalityCode(_ m: TokenOrigin.Modality) -> UInt8 {
    UInt8(TokenOrigin.Modality.allCases.firstIndex(of: m)!)
  }
  static func pack(_ v: Int?) -> Int32 { v.map { Int32(truncatingIfNeeded: $0) } ?? -1 }
  static func unpack(_ v: Int32) -> Int? { v >= 0 ? Int(v) : nil }
}

/// The candidates of one eviction decision for one layer and KV head — cache ∪ block, in order
/// (cached entries first, ascending positions, then the block's) — without their tensors: what
/// the mandatory-keep rules need, so a cache can check them for every layer before touching any.
public struct EntryList {
  public let layer: Int
  public let kvHead: Int
  /// How many candidates survive this decision.
  public let budget: Int
  public let meta: [EntryMeta]
  /// Positions of the queries in the policy's observation window (oldest first): the last
  /// `queryWindow` queries the layer has seen. Empty for query-agnostic policies.
  public let windowPositions: [Int]

  public var count: Int { meta.count }
  public func position(_ i: Int) -> Int { Int(meta[i].position) }
}

/// Rows of queries (after RoPE): row r at `pointer + r·ld`, query head h at columns
/// h·headDim ..< (h+1)·headDim.
public struct QueryRows {
  public let pointer: UnsafePointer<Float>
  public let ld: Int
  public let count: Int
  public let positions: [Int]
}

/// Everything a policy may read to score the candidates of one layer and KV head.
public struct CandidateView {
  public let entries: EntryList
  public let headDim: Int
  /// Query heads per KV head (GQA group); the group of KV head g is g·groupSize ..< (g+1)·groupSize.
  public let groupSize: Int
  /// Candidates 0..<storedCount live in cache storage (rows `headDim` apart)...
  let storedKeys: UnsafePointer<Float>
  let storedValues: UnsafePointer<Float>
  let storedCount: Int
  /// ...the rest in the block, in the model's activations (rows `blockLD` apart).
  let blockKeys: UnsafePointer<Float>?
  let blockValues: UnsafePointer<Float>?
  let blockLD: Int
  /// The observation window (SnapKV), or nil.
  public let window: QueryRows?
  /// Every query of the block being committed (H2O accumulates their attention), or nil when
  /// there is no new block (a compression on request).
  public let blockQueries: QueryRows?
  /// Charged for the scoring scratch (as activations).
  let meter: MemoryMeter?

  public var count: Int { entries.count }
  public var kvHead: Int { entries.kvHead }
  public var layer: Int { entries.layer }
  public var queryHeads: Range<Int> { kvHead * groupSize..<(kvHead + 1) * groupSize }

  public func key(_ i: Int) -> UnsafePointer<Float> {
    i < storedCount ? storedKeys + i * headDim : blockKeys! + (i - storedCount) * blockLD
  }
  public func value(_ i: Int) -> UnsafePointer<Float> {
    i < storedCount ? storedValues + i * headDim : blockValues! + (i - storedCount) * blockLD
  }

  /// The keys as at most two strided matrices (first candidate index, rows, base, row stride),
  /// for matrix products.
  var keySegments: [(first: Int, rows: Int, base: UnsafePointer<Float>, ld: Int)] {
    var s: [(first: Int, rows: Int, base: UnsafePointer<Float>, ld: Int)] = []
    if storedCount > 0 { s.append((0, storedCount, storedKeys, headDim)) }
    if count > storedCount, let b = blockKeys {
      s.append((storedCount, count - storedCount, b, blockLD))
    }
    return s
  }

  /// Scratch floats for scoring, charged to the meter as activations while alive.
  public func scratch(_ count: Int) -> FloatBuffer {
    FloatBuffer(count: count, category: .activations, meter: meter)
  }
}

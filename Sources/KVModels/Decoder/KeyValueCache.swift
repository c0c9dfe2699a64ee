import KVTensor

/// Where a cached token came from. Carried with every entry so that policies and views can use
/// the input's structure: which feed, which image and tile, which patch (row, col) of the tile's
/// grid, which video frame, which text span. Fields that do not apply are nil.
public struct TokenOrigin: Equatable, Hashable, Sendable {
  public enum Modality: String, Sendable, CaseIterable { case text, image, video, generated }
  public var modality: Modality
  /// Index of the `feed` that produced the token (0-based, in session order).
  public var input: Int
  /// Index of the image in the session (images and videos counted together), for image and
  /// video tokens.
  public var image: Int?
  /// Tile of the image (0 = first tile; a thumbnail is the last tile), where the image is tiled.
  public var tile: Int?
  /// Patch row and column in the tile's (or frame's) token grid.
  public var row: Int?
  public var col: Int?
  /// Frame index within the video, for video tokens.
  public var frame: Int?
  /// Text span (e.g. chat turn or segment) the token belongs to.
  public var span: Int?
  /// Part of the system prompt (policies and options may protect it).
  public var isSystem: Bool

  public init(
    modality: Modality, input: Int, image: Int? = nil, tile: Int? = nil, row: Int? = nil,
    col: Int? = nil, frame: Int? = nil, span: Int? = nil, isSystem: Bool = false
  ) {
    self.modality = modality
    self.input = input
    self.image = image
    self.tile = tile
    self.row = row
    self.col = col
    self.frame = frame
    self.span = span
    self.isSystem = isSystem
  }
}

/// The keys and values of one forward block for one layer, after RoPE, as the model produced
/// them: row i (of `count`) holds KV head g at columns g·headDim ..< (g+1)·headDim, rows `ld`
/// floats apart. Queries are there for query-aware policies (SnapKV scores the block's last
/// queries against what is cached).
public struct KVBlock {
  public var keys: UnsafePointer<Float>
  public var values: UnsafePointer<Float>
  public var queries: UnsafePointer<Float>
  public var ld: Int
  public var queryLD: Int
  public var count: Int
  public var positions: [Int]
  public var origins: [TokenOrigin]
  /// Proxy query rows run after the block but not cached (`queryLD` apart): what a
  /// query-aware policy should look with instead of the block's own last queries — the chat
  /// template, or the question when it is known before the images.
  public var proxyQueries: UnsafePointer<Float>? = nil
  public var proxyCount = 0

  public init(
    keys: UnsafePointer<Float>, values: UnsafePointer<Float>, queries: UnsafePointer<Float>,
    ld: Int, queryLD: Int, count: Int, positions: [Int], origins: [TokenOrigin]
  ) {
    self.keys = keys
    self.values = values
    self.queries = queries
    self.ld = ld
    self.queryLD = queryLD
    self.count = count
    self.positions = positions
    self.origins = origins
  }
}

/// What a layer attends to besides its own block: for KV head g, row j of keys is at
/// `keys + g·headStride + j·rowStride`.
public struct CachedKV {
  public var keys: UnsafePointer<Float>
  public var values: UnsafePointer<Float>
  public var count: Int
  public var headStride: Int
  public var rowStride: Int

  public init(
    keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int, headStride: Int,
    rowStride: Int
  ) {
    self.keys = keys
    self.values = values
    self.count = count
    self.headStride = headStride
    self.rowStride = rowStride
  }
}

/// The protocol every KV cache implements (named `KeyValueCache`, not `KVCache`, so that it
/// never shadows the `KVCache` module). The decoder is written against it and knows nothing of
/// budgets: for each layer it asks for what is cached, attends over that plus the new block
/// (causally), then hands the block over with `commit` — the cache decides what it keeps. That
/// order is what lets a budgeted cache keep a hard cap: the block never has to be appended first.
public protocol KeyValueCache: AnyObject {
  /// Entries held for `layer` now; every one precedes the next block.
  func cached(layer: Int) -> CachedKV
  /// Takes the block's keys/values for `layer` once the block has attended.
  func commit(layer: Int, block: KVBlock) throws
  /// Called once the whole block went through every layer.
  func finishBlock() throws
}

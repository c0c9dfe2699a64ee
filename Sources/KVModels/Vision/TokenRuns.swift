/// Integers kept as arithmetic runs (start, step, count): a segment's rotary positions are one
/// run, a Qwen2-VL unit's M-RoPE axes a run per grid row. A session keeps these for everything
/// it was fed, so they must cost per run, not per token (an hour of video is 10^5 tokens).
public struct IntRuns: Sendable, Equatable {
  struct Run: Sendable, Equatable {
    var start: Int
    var step: Int
    var count: Int

    /// Value `j` of the run (checked when the run grew to hold it, so it does not overflow).
    func value(_ j: Int) -> Int { start &+ step &* j }

    /// Whether `v` continues the run (an overflowing continuation does not).
    func continues(with v: Int) -> Bool {
      let (offset, o1) = step.multipliedReportingOverflow(by: count)
      let (next, o2) = start.addingReportingOverflow(offset)
      return !o1 && !o2 && next == v
    }
  }

  private(set) var runs: [Run] = []
  public private(set) var count = 0

  public init() {}

  public init<S: Sequence>(_ values: S) where S.Element == Int {
    for v in values { append(v) }
  }

  public mutating func append(_ v: Int) {
    count += 1
    if let last = runs.last {
      if last.count == 1 {
        let (step, overflow) = v.subtractingReportingOverflow(last.start)
        if !overflow {
          runs[runs.count - 1].step = step
          runs[runs.count - 1].count = 2
          return
        }
      } else if last.continues(with: v) {
        runs[runs.count - 1].count += 1
        return
      }
    }
    runs.append(Run(start: v, step: 0, count: 1))
  }

  public mutating func append(contentsOf other: IntRuns) {
    for run in other.runs {
      if run.count > 2, let last = runs.last, last.count > 1, last.step == run.step,
        last.continues(with: run.start)
      {
        runs[runs.count - 1].count += run.count
        count += run.count
      } else if run.count > 2 {
        runs.append(run)
        count += run.count
      } else {
        for j in 0..<run.count { append(run.value(j)) }
      }
    }
  }

  /// The values, one by one (a view made on demand).
  public var array: [Int] {
    var out: [Int] = []
    out.reserveCapacity(count)
    for run in runs { for j in 0..<run.count { out.append(run.value(j)) } }
    return out
  }

  /// Values `range` (indices into `array`).
  public func slice(_ range: Range<Int>) -> IntRuns {
    var out = IntRuns()
    var base = 0
    for run in runs {
      let lo = Swift.max(range.lowerBound - base, 0)
      let hi = Swift.min(range.upperBound - base, run.count)
      if lo < hi { for j in lo..<hi { out.append(run.value(j)) } }
      base += run.count
      if base >= range.upperBound { break }
    }
    return out
  }

  /// Drops spare capacity (a record that will not grow again).
  mutating func trim() {
    if runs.capacity > runs.count { runs = runs.withUnsafeBufferPointer { Array($0) } }
  }

  /// Bytes of the run storage (its capacity, not its count).
  public var bytes: Int { runs.capacity * MemoryLayout<Run>.stride }

  public static func == (a: IntRuns, b: IntRuns) -> Bool { a.array == b.array }
}

/// A token origin in 32 bytes instead of `TokenOrigin`'s 112: its indices as Int32, `Int32.min`
/// for none. An origin with an index outside Int32 does not pack (`OriginRuns` keeps it whole).
struct PackedOrigin: Sendable, Equatable {
  var input: Int32
  var image: Int32
  var tile: Int32
  var row: Int32
  var col: Int32
  var frame: Int32
  var span: Int32
  var modality: UInt8
  var isSystem: Bool

  static let none = Int32.min
  static let modalities = TokenOrigin.Modality.allCases

  init?(_ o: TokenOrigin) {
    func pack(_ v: Int?) -> Int32?? {
      guard let v else { return .some(Self.none) }
      guard v > Int(Int32.min), v <= Int(Int32.max) else { return nil }
      return .some(Int32(v))
    }
    guard let input = pack(o.input), let image = pack(o.image), let tile = pack(o.tile),
      let row = pack(o.row), let col = pack(o.col), let frame = pack(o.frame),
      let span = pack(o.span), let m = Self.modalities.firstIndex(of: o.modality)
    else { return nil }
    self.input = input!
    self.image = image!
    self.tile = tile!
    self.row = row!
    self.col = col!
    self.frame = frame!
    self.span = span!
    modality = UInt8(m)
    isSystem = o.isSystem
  }

  /// A placeholder for an origin kept whole: `input` is its index among those.
  init(wide index: Int) {
    input = Int32(index)
    image = Self.none
    tile = Self.none
    row = Self.none
    col = Self.none
    frame = Self.none
    span = Self.none
    modality = UInt8.max
    isSystem = false
  }

  var isWide: Bool { modality == UInt8.max }

  var origin: TokenOrigin {
    func unpack(_ v: Int32) -> Int? { v == Self.none ? nil : Int(v) }
    return TokenOrigin(
      modality: Self.modalities[Int(modality)], input: Int(input), image: unpack(image),
      tile: unpack(tile), row: unpack(row), col: unpack(col), frame: unpack(frame),
      span: unpack(span), isSystem: isSystem)
  }
}

/// Token origins kept as runs: the same origin repeated (a text run), or a token grid in
/// row-major order (a tile's or frame's tokens: one record for the unit instead of one per
/// token). The per-token origins are made on demand (`array`) for views and for the cache.
public struct OriginRuns: Sendable, Equatable {
  struct Run: Sendable, Equatable {
    /// The first token's origin; in a grid, its row and col are the first cell.
    var head: PackedOrigin
    var count: Int
    /// 0: every token is the head's origin. Else the grid's width: token j sits at cell
    /// `row * cols + col + j` of the head.
    var cols: Int32
    /// A grid still in its first row: its width grows until a token wraps to the next row.
    var open: Bool
  }

  private(set) var runs: [Run] = []
  /// Origins that do not pack (an index past Int32), each a run's head of its own.
  private var wide: [TokenOrigin] = []
  public private(set) var count = 0

  public init() {}

  public init<S: Sequence>(_ origins: S) where S.Element == TokenOrigin {
    for o in origins { append(o) }
  }

  private func head(_ run: Run) -> TokenOrigin {
    run.head.isWide ? wide[Int(run.head.input)] : run.head.origin
  }

  private func origin(_ run: Run, _ j: Int) -> TokenOrigin {
    var o = head(run)
    guard run.cols > 0, let r = o.row, let c = o.col else { return o }
    let cols = Int(run.cols)
    let cell = r * cols + c + j
    o.row = cell / cols
    o.col = cell % cols
    return o
  }

  /// Whether `o` can be a grid cell: packed, row and col in 0..<Int32.max.
  private static func gridCell(_ o: TokenOrigin) -> Bool {
    guard let r = o.row, let c = o.col, PackedOrigin(o) != nil else { return false }
    return r >= 0 && c >= 0 && c < Int(Int32.max)
  }

  private mutating func newRun(_ o: TokenOrigin, count n: Int = 1) {
    let grid = n == 1 && Self.gridCell(o)
    let head: PackedOrigin
    if let p = PackedOrigin(o) {
      head = p
    } else {
      head = PackedOrigin(wide: wide.count)
      wide.append(o)
    }
    runs.append(Run(head: head, count: n, cols: grid ? Int32(o.col! + 1) : 0, open: grid))
  }

  public mutating func append(_ o: TokenOrigin) {
    count += 1
    if let last = runs.last {
      let i = runs.count - 1
      let first = head(last)
      if last.cols == 0 {
        if o == first {
          runs[i].count += 1
          return
        }
      } else if last.open {
        var sameRow = first
        sameRow.col = first.col! + last.count
        var nextRow = first
        nextRow.row = first.row! + 1
        nextRow.col = 0
        if o == sameRow, Self.gridCell(o) {
          runs[i].count += 1
          runs[i].cols += 1
          return
        }
        if o == nextRow, Self.gridCell(o) {
          runs[i].open = false
          runs[i].count += 1
          return
        }
      } else if o == origin(last, last.count), Self.gridCell(o) {
        runs[i].count += 1
        return
      }
    }
    newRun(o)
  }

  public mutating func append(contentsOf other: OriginRuns) {
    for run in other.runs {
      let first = other.head(run)
      if run.cols == 0, let last = runs.last, last.cols == 0, head(last) == first {
        runs[runs.count - 1].count += run.count
        count += run.count
      } else if run.count > 1 {
        // A whole run (it may not merge with the last one; the tokens are the same).
        if run.head.isWide {
          newRun(first, count: run.count)
        } else {
          runs.append(run)
        }
        count += run.count
      } else {
        append(first)
      }
    }
  }

  /// The origin of token `index`.
  public subscript(index: Int) -> TokenOrigin {
    precondition(index >= 0 && index < count, "origin index out of range")
    var base = 0
    for run in runs {
      if index < base + run.count { return origin(run, index - base) }
      base += run.count
    }
    preconditionFailure("origin index out of range")
  }

  public var first: TokenOrigin? { runs.first.map { head($0) } }

  public var array: [TokenOrigin] {
    var out: [TokenOrigin] = []
    out.reserveCapacity(count)
    for run in runs { for j in 0..<run.count { out.append(origin(run, j)) } }
    return out
  }

  public func slice(_ range: Range<Int>) -> OriginRuns {
    var out = OriginRuns()
    var base = 0
    for run in runs {
      let lo = Swift.max(range.lowerBound - base, 0)
      let hi = Swift.min(range.upperBound - base, run.count)
      if lo < hi { for j in lo..<hi { out.append(origin(run, j)) } }
      base += run.count
      if base >= range.upperBound { break }
    }
    return out
  }

  /// Drops spare capacity (a record that will not grow again).
  mutating func trim() {
    if runs.capacity > runs.count { runs = runs.withUnsafeBufferPointer { Array($0) } }
  }

  public var bytes: Int {
    runs.capacity * MemoryLayout<Run>.stride + wide.capacity * MemoryLayout<TokenOrigin>.stride
  }

  public static func == (a: OriginRuns, b: OriginRuns) -> Bool { a.array == b.array }
}

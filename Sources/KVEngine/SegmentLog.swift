import KVCache
import KVModels

/// A session's record of what it was fed, in order: runs of text as segments, and each image
/// or clip as one record, the laid-out input it was fed from (`PromptParts`) and how many of
/// its tokens entered the context. A clip's frames are laid out again when their segments are
/// needed (a rebuild, `show`), so the record stays the same size however many frames the clip
/// has: an hour of video costs one record, not one per frame.
public struct SegmentLog: Sequence, ExpressibleByArrayLiteral {
  enum Record {
    case text(PromptSegment)
    /// An image or clip; `last` is its last segment fed.
    case visual(PromptParts, tokens: Int, last: PromptSegment?)
  }
  private(set) var records: [Record] = []
  /// Whether segments appended now belong to the last record's image or clip.
  private var visualOpen = false
  /// Visual tokens in the context (a share of them is a budget).
  public private(set) var visualTokens = 0
  /// Tokens appended so far.
  private var appended = 0
  /// While a rebuild prefills a log again as one stream: its images and clips not yet whole
  /// again, each with the tokens it spans.
  private var refilling: [(range: Range<Int>, parts: PromptParts)] = []

  public init() {}

  /// An empty log that `saved`'s input, prefilled again in order as one stream (a rebuild),
  /// fills with the same records: each image or clip becomes one record again as its tokens
  /// come back.
  init(refilling saved: SegmentLog) {
    var at = 0
    for record in saved.records {
      switch record {
      case .text(let s): at += s.count
      case .visual(let parts, let tokens, _):
        refilling.append((at..<(at + tokens), parts))
        at += tokens
      }
    }
  }
  public init(arrayLiteral segments: PromptSegment...) {
    for segment in segments { append(segment) }
  }

  /// From now until `closeVisual`, the segments appended are those of `parts`.
  mutating func openVisual(_ parts: PromptParts) {
    records.append(.visual(parts, tokens: 0, last: nil))
    visualOpen = true
  }

  /// The image or clip is over: a record of nothing fed is dropped.
  mutating func closeVisual() {
    guard visualOpen else { return }
    visualOpen = false
    if case .visual(_, let tokens, _)? = records.last, tokens == 0 { records.removeLast() }
  }

  /// Records a prefilled segment; consecutive text runs merge (generation appends one token at
  /// a time).
  mutating func append(_ segment: PromptSegment) {
    if segment.visual != nil { visualTokens += segment.count }
    let at = appended
    appended += segment.count
    if let next = refilling.first, next.range.contains(at) {
      if at == next.range.lowerBound { records.append(.visual(next.parts, tokens: 0, last: nil)) }
      if appended >= next.range.upperBound { refilling.removeFirst() }
    } else if !visualOpen {
      appendOutsideVisual(segment)
      return
    }
    if case .visual(let parts, let tokens, _)? = records.last {
      records[records.count - 1] = .visual(parts, tokens: tokens + segment.count, last: segment)
    }
  }

  /// A segment outside any image or clip being recorded: text merges into the text run before
  /// it; a visual unit (fed while stepping) is a record of its own.
  private mutating func appendOutsideVisual(_ segment: PromptSegment) {
    if case .text(var last)? = records.last, segment.visual == nil {
      records[records.count - 1] = .text(PromptSegment(tokens: [], origins: [], positions: []))
      last.append(segment)
      records[records.count - 1] = .text(last)
      return
    }
    // Nothing merges into the last text run any more: it keeps no spare room.
    if case .text(var last)? = records.last {
      last.trimCapacity()
      records[records.count - 1] = .text(last)
    }
    var kept = segment
    kept.trimCapacity()
    records.append(segment.visual == nil ? .text(kept) : .visual(PromptParts([kept]), tokens: kept.count, last: kept))
  }

  /// The last segment fed.
  public var last: PromptSegment? {
    switch records.last {
    case .text(let s)?: return s
    case .visual(_, _, let last)?: return last
    case nil: return nil
    }
  }

  public var isEmpty: Bool { records.isEmpty }

  /// Every segment, in order, clips laid out again part by part.
  func forEach(_ body: (PromptSegment) throws -> Void) throws {
    for record in records {
      switch record {
      case .text(let s): try body(s)
      case .visual(let parts, let tokens, _): try parts.forEach(upTo: tokens, body)
      }
    }
  }

  /// The segments as fed, consecutive text runs merged, made whole (for views of the layout;
  /// a clip whose frames can no longer be laid out ends the list there).
  public var all: [PromptSegment] {
    var out: [PromptSegment] = []
    try? forEach { segment in
      if segment.visual == nil, let last = out.last, last.visual == nil {
        out[out.count - 1].append(segment)
      } else {
        out.append(segment)
      }
    }
    return out
  }

  public func makeIterator() -> IndexingIterator<[PromptSegment]> { all.makeIterator() }

  /// Bytes the log keeps: its list of records and each text run's ids, origin and position
  /// runs (by capacity). An image or clip counts its record only: what it holds to lay its
  /// frames out again (a folder's names, the unit closures of one image) is its input's.
  public var recordBytes: Int {
    records.capacity * MemoryLayout<Record>.stride
      + records.reduce(0) {
        if case .text(let s) = $1 { return $0 + s.recordBytes }
        return $0
      }
  }

  /// How many records the log holds (a text run, an image, a clip: one each).
  public var recordCount: Int { records.count }
}

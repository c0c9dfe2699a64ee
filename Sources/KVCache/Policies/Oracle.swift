import KVModels

/// One visual token by where it comes from: input, image, tile, patch row and column, and frame
/// (-1: not a frame). What the oracle is told to keep; the cache matches it against each entry's
/// `EntryMeta`, so the policy needs no pixels and no model.
public struct PatchKey: Hashable, Sendable, Comparable {
  public var input: Int32
  public var image: Int32
  public var tile: Int32
  public var row: Int32
  public var col: Int32
  public var frame: Int32

  public init(input: Int, image: Int, tile: Int, row: Int, col: Int, frame: Int? = nil) {
    self.input = Int32(truncatingIfNeeded: input)
    self.image = Int32(truncatingIfNeeded: image)
    self.tile = Int32(truncatingIfNeeded: tile)
    self.row = Int32(truncatingIfNeeded: row)
    self.col = Int32(truncatingIfNeeded: col)
    self.frame = Int32(truncatingIfNeeded: frame ?? -1)
  }

  /// The key of a cached entry, or nil for an entry that is not a patch (text, markers).
  public init?(_ m: EntryMeta) {
    guard m.image >= 0, m.tile >= 0, m.row >= 0, m.col >= 0 else { return nil }
    input = m.input
    image = m.image
    tile = m.tile
    row = m.row
    col = m.col
    frame = m.frame
  }

  public static func < (a: PatchKey, b: PatchKey) -> Bool {
    (a.input, a.image, a.frame, a.tile, a.row, a.col)
      < (b.input, b.image, b.frame, b.tile, b.row, b.col)
  }
}

/// The oracle: an upper bound for synthetic inputs, whose target is known. The visual tokens
/// listed in `targets` (those whose patch covers the target, computed by the engine from the
/// sample and the model's tile layout) come first in the order of preference; `fill` scores
/// everything and orders the rest. Targets are preferred rather than mandatory so that when they
/// alone exceed the budget the cache keeps the ones `fill` prefers instead of refusing; what
/// `fill` itself makes mandatory (SnapKV's window, sinks) stays mandatory.
public struct OraclePolicy: CatalogPolicy {
  public var fill: any EvictionPolicy = KeyDiffPolicy()
  public var targets: Set<PatchKey> = []
  /// What the targets are of, for display ("needle-image seed=3"); nil: none given yet.
  public var source: String?

  public init() {}
  public init(fill: (any EvictionPolicy)? = nil, targets: Set<PatchKey> = [], source: String? = nil) {
    if let fill { self.fill = fill }
    self.targets = targets
    self.source = source
  }

  public static let about = PolicyAbout(
    "oracle", summary: "synthetic inputs: keep the target's tokens, fill with another policy",
    help: """
      Oracle (an upper bound, for synthetic inputs only): the visual tokens whose patch \
      covers any pixel of the target's bounding box are kept first, in every tile, frame and \
      global image they appear in; FILL scores everything and fills the rest of the budget. \
      The targets come from the last `feed synthetic`: the needle (needle-image, in the \
      frames that show it for needle-video), every shape of the counted kind (count), the \
      shape asked about (attribute). When the targets alone exceed the budget, those FILL \
      prefers stay.
      """)
  /// The policies an oracle can fill with: every other one (named here, not read from the
  /// catalog, which is built from these very declarations).
  static let fills = ["keydiff", "snapkv", "knorm", "vnorm", "random", "streaming", "h2o", "infinipot", "gridpool", "floors"]
  public static var fields: [PolicyField<Self>] {
    [
      .policy(
        "fill", \.fill, among: fills,
        help: "the policy that scores everything and fills the rest of the budget")
    ]
  }

  public var queryWindow: Int { fill.queryWindow }
  public var needsBlockQueries: Bool { fill.needsBlockQueries }
  public var carriesScores: Bool { fill.carriesScores }
  public var minimumBudget: Int { fill.minimumBudget }

  /// Also says whose targets it holds: two oracles of different samples differ in
  /// description, which is how the session notices a policy change.
  public var description: String {
    "oracle fill=\(fill.name)"
      + (source.map { " (targets: \(targets.count) visual tokens of \($0))" } ?? " (no targets)")
  }

  /// Which candidates are targets.
  public func isTarget(_ entries: EntryList) -> [Bool] {
    entries.meta.map { m in PatchKey(m).map { targets.contains($0) } ?? false }
  }

  public func mustKeep(_ entries: EntryList) -> [Bool] { fill.mustKeep(entries) }

  public func score(_ view: CandidateView) -> [Float] { fill.score(view) }

  public func preference(_ view: CandidateView, scores: [Float], slots: Int) -> [Int] {
    let target = isTarget(view.entries)
    let wanted = target.lazy.filter { $0 }.count
    let order = fill.preference(view, scores: scores, slots: max(0, slots - wanted))
    // Targets first, in the fill's order (so the ones it prefers win when they do not all fit).
    return order.filter { target[$0] } + order.filter { !target[$0] }
  }
}

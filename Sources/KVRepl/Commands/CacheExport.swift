import Foundation
import KVCache
import KVEngine
import KVTensor

/// `cache export`: what each (layer, KV head) slot of the cache holds, for analysis outside
/// kvlab (numpy, pandas).
extension CacheCommands {
  static let cacheExport = Command(
    "cache", verb: "export", summary: "write the kept positions and scores to .npz or .json",
    help: """
      Writes, for every layer and KV head, the positions of the tokens the cache holds (in the \
      order it holds them, as `cache layer N` lists them) and the active policy's score of each, \
      as a compression now would compute it. FILE.npz (numpy.load) holds `positions` (int64, \
      layers × KV heads × the most any slot holds, padded with -1), `scores` (float32, the \
      same shape, padded with NaN) and `held` (int64, layers × KV heads: how many each holds). \
      FILE.json holds {layers, kv_heads, policy, heads: [{layer, head, positions, scores}]}. \
      Without a budget the cache keeps every token and no policy ranks them: positions are \
      every token's and scores NaN (null in JSON). The session is not changed.
      """,
    options: [
      Option(
        "out", .path(extensions: ["npz", "json"]), required: true, placeholder: "FILE.npz",
        help: "the file to write (.npz or .json)")
    ]
  ) { ctx in
    let c = try shape(ctx.session)
    let typed = ctx.args.string("out")!
    var slots: [(positions: [Int], scores: [Float]?)] = []
    let policy: String?
    if let b = ctx.session.budgetedCache {
      policy = "\(b.policy)"
      for layer in 0..<c.layers {
        for head in 0..<c.kvHeads {
          slots.append((b.positions(layer: layer, head: head), b.currentScores(layer: layer, head: head)))
        }
      }
    } else {
      policy = nil
      let held = ctx.session.cacheSummary?.tokens ?? 0
      slots = Array(repeating: (Array(0..<held), nil), count: c.layers * c.kvHeads)
    }
    let widest = slots.map(\.positions.count).max() ?? 0
    let bytes: [UInt8]
    if typed.lowercased().hasSuffix(".json") {
      let heads = slots.enumerated().map { i, slot in
        JSONValue.object([
          ("layer", .number("\(i / c.kvHeads)")), ("head", .number("\(i % c.kvHeads)")),
          ("positions", .array(slot.positions.map { .number("\($0)") })),
          ("scores", slot.scores.map { .array($0.map(jsonNumber)) } ?? .null),
        ])
      }
      let doc = JSONValue.object([
        ("layers", .number("\(c.layers)")), ("kv_heads", .number("\(c.kvHeads)")),
        ("policy", policy.map(JSONValue.string) ?? .null), ("heads", .array(heads)),
      ])
      bytes = Array((JSONWriter.write(doc) + "\n").utf8)
    } else {
      let shape = [c.layers, c.kvHeads, widest]
      func padded<T>(_ rows: [[T]], _ fill: T) -> [T] {
        rows.flatMap { $0 + Array(repeating: fill, count: widest - $0.count) }
      }
      do {
        bytes = try NPY.npz([
          ("positions", NPY.int64(padded(slots.map(\.positions), -1), shape: shape)),
          (
            "scores",
            NPY.float32(
              padded(slots.map { $0.scores ?? Array(repeating: .nan, count: $0.positions.count) }, .nan),
              shape: shape)
          ),
          ("held", NPY.int64(slots.map(\.positions.count), shape: [c.layers, c.kvHeads])),
        ])
      } catch {
        throw ctx.error("\(typed): \(error)")
      }
    }
    try AtomicFile.replace(
      ctx.resolve(typed), with: bytes, command: ctx.command.name, displayPath: typed)
    ctx.print(
      "wrote \(typed): positions and \(policy == nil ? "no scores (no budget in use)" : "scores") of \(c.layers) layers × \(c.kvHeads) KV heads, up to \(Format.plural(widest, "token")) each"
    )
  }

  /// A score as JSON (NaN and infinities, which JSON cannot write, as null).
  static func jsonNumber(_ x: Float) -> JSONValue {
    x.isFinite ? .number("\(x)") : .null
  }
}

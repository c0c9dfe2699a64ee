import Foundation
import KVCache
import KVEngine
import KVModels

/// Step-through prefill, for tutorials: `prefill stepping=on` queues what is fed,
/// `prefill step` runs one block and shows what entered and what was evicted (and the scores
/// that decided it), `prefill run` runs the rest.
public enum StepCommands {
  public static var all: [Command] { [stepping, step, run] }

  static let stepping = Command(
    "prefill", verb: "stepping", summary: "queue fed input for step-by-step prefill",
    help: """
      on: what `feed` lays out from now on waits in blocks (the same blocks a normal prefill \
      runs) until `prefill step` or `prefill run`; `ask` and `generate` need nothing waiting. \
      off: runs whatever waits, then feeds prefill at once again.
      """,
    positionals: [Positional("STATE", .toggle, help: "on or off")]
  ) { ctx in
    let on = ctx.args.positional("STATE") == "on"
    try ctx.session.setStepping(on)
    ctx.print(
      on ? "stepping on: feeds queue their blocks (prefill step / prefill run)" : "stepping off")
  }

  static let step = Command(
    "prefill", verb: "step", summary: "prefill the next waiting block and show what happened",
    help: """
      Runs the next waiting block through the model into the cache, then prints what entered \
      (by origin), the cache's occupancy, and for layer=N (default 0) per KV head what was \
      evicted, with the highest evicted score against the lowest kept one.
      """,
    options: [
      Option("layer", .int(0...1023), default: "0", help: "the layer whose evictions to show")
    ]
  ) { ctx in
    // A bad layer= is refused before the block runs, not after.
    let layer = ctx.args.int("layer")
    if let model = ctx.session.model, layer >= model.config.layers {
      throw ctx.error("layer \(layer) does not exist (the model has \(model.config.layers) layers)")
    }
    guard let r = try ctx.session.prefillStep() else {
      ctx.print("nothing waiting (feed with 'prefill stepping on' first)")
      return
    }
    ctx.print(
      "block \(r.index)/\(r.total): +\(r.origins.count) tokens (\(describe(r.origins))); cache \(r.cacheTokens)/\(r.capacity) per layer, context \(r.contextTokens)"
    )
    let records = r.evictions.filter { $0.layer == layer }.sorted { $0.kvHead < $1.kvHead }
    guard ctx.session.budgetedCache != nil else { return }
    if records.allSatisfy({ $0.evicted.isEmpty }) {
      ctx.print("  nothing evicted")
      return
    }
    for e in records {
      let worst = e.evicted.map(\.score).max()
      var line = "  layer \(layer) head \(e.kvHead): \(e.evicted.count) left"
      if let worst { line += ", highest score \(CacheViews.score(worst))" }
      if let low = e.lowestKept { line += " (lowest kept \(CacheViews.score(low)))" }
      for l in CacheViews.wrapList(
        CacheViews.compactRanges(e.evicted.map(\.position)), first: line + ": positions ", indent: 6
      ) {
        ctx.print(l)
      }
    }
  }

  static let run = Command(
    "prefill", verb: "run", summary: "prefill every waiting block",
    help: "Runs the blocks `prefill step` would, all at once (Ctrl-C stops between blocks)."
  ) { ctx in
    let waiting = ctx.session.pendingBlocks.count
    try ctx.session.runPendingBlocks()
    ctx.print("ran \(Format.plural(waiting, "block")) (context \(ctx.session.contextCount))")
  }

  /// "text 3, image 0 tile 2: 16" — counts by origin, in order of first appearance.
  static func describe(_ origins: [TokenOrigin]) -> String {
    var order: [String] = []
    var counts: [String: Int] = [:]
    for o in origins {
      var key = o.modality.rawValue
      if let i = o.image { key += " \(i)" }
      if let t = o.tile { key += " tile \(t)" }
      if let f = o.frame { key += " frame \(f)" }
      if counts[key] == nil { order.append(key) }
      counts[key, default: 0] += 1
    }
    return order.map { "\($0): \(counts[$0]!)" }.joined(separator: ", ")
  }
}

import Foundation
import KVTensor

/// The memory meter's commands: `mem`, `mem reset`.
public enum MemoryCommands {
  public static var all: [Command] { [mem, memReset, memPlot] }

  static let mem = Command(
    "mem", summary: "memory by category: current and peak",
    help: """
      Prints the bytes the engine holds per category (weights on the heap, weights mapped from \
      the model file, kv, activations, vision) and \
      their high-water marks since the start or the last `mem reset`, as counted by the \
      session's meter (exact and repeatable), then the process's resident set size and its \
      peak (VmRSS, VmHWM), which vary between runs and so print as ~values (in MiB unless a \
      unit is given; `rss=off` leaves them out). While a budget is in use, a last line sets the \
      KV high-water mark against the budget, in bytes and tokens.
      """,
    options: [
      Option(
        "rss", .toggle, default: "on",
        help: "also print the process's resident memory (VmRSS, VmHWM)"),
      Option(
        "unit", .choice(["auto", "B", "KiB", "MiB", "GiB"]), default: "auto", help: "unit for sizes"
      ),
    ]
  ) { ctx in
    let meter = ctx.session.meter
    let unit = ctx.args.string("unit") ?? "auto"
    var rows = [["memory", "current", "peak"]]
    for c in MemoryCategory.allCases {
      let r = meter.reading(c)
      rows.append([
        c.rawValue, Format.bytes(r.current, unit: unit), Format.bytes(r.highWater, unit: unit),
      ])
    }
    let t = meter.total
    rows.append([
      "total", Format.bytes(t.current, unit: unit), Format.bytes(t.highWater, unit: unit),
    ])
    if ctx.args.toggle("rss") {
      // RSS varies run to run: masked with ~, and in a fixed unit under `auto` so that a replay
      // never differs by MiB vs GiB.
      let rssUnit = unit == "auto" ? "MiB" : unit
      let now =
        ProcessMemory.currentRSS().map { "~" + Format.bytes($0, unit: rssUnit) } ?? "~unknown"
      let peak = ProcessMemory.peakRSS().map { "~" + Format.bytes($0, unit: rssUnit) } ?? "~unknown"
      rows.append(["rss", now, peak])
    }
    for line in Format.table(rows) { ctx.print(line) }
    if let cache = ctx.session.budgetedCache {
      // Everything charged as KV since the last reset (storage, and any cache built before).
      let peak = meter.reading(.kv).highWater
      let perToken = cache.bytesPerToken
      let tokens =
        peak % perToken == 0
        ? "\(peak / perToken)" : String(format: "%.1f", Double(peak) / Double(perToken))
      let ratio = String(format: "%.1f%%", 100 * Double(peak) / Double(cache.budgetBytes))
      ctx.print(
        "kv peak \(Format.bytes(peak, unit: unit)) = \(tokens) tokens of the budget's \(Format.bytes(cache.budgetBytes, unit: unit)) = \(cache.budget) tokens (\(ratio))"
      )
    }
  }

  static let memReset = Command(
    "mem", verb: "reset", summary: "start new high-water marks",
    help: """
      Sets every category's peak to what it holds now, and resets the process's peak RSS \
      (writes 5 to /proc/self/clear_refs), so the next `mem` shows the peaks of what follows; \
      `mem plot` starts a new trace.
      """
  ) { ctx in
    ctx.session.meter.resetHighWater()
    ctx.session.clearMemoryTrace()
    let rss = ProcessMemory.resetPeakRSS()
    ctx.print("peaks reset\(rss ? "" : " (the process's peak RSS could not be reset)")")
  }

  static let memPlot = Command(
    "mem", verb: "plot", summary: "a PNG plot of memory over the prefill blocks",
    help: """
      Writes FILE.png: for every prefill block since the model was loaded (or the last \
      `mem reset`), the K/V bytes held after it, the K/V, activation and vision peaks while it \
      ran, and the budget as a dashed line; below, the process's resident set after each block. \
      In a notebook (the Jupyter kernel, `notebook run`) without out= the plot is shown inline.
      """,
    options: [
      Option(
        "out", .path(extensions: ["png"]), placeholder: "FILE.png",
        help: "the file to write (needed outside a notebook)")
    ]
  ) { ctx in
    let typed = ctx.args.string("out")
    guard typed != nil || ctx.showsImages else {
      throw ctx.error("out=FILE.png is needed here (a notebook shows the plot inline)")
    }
    let trace = ctx.session.memoryTrace
    guard !trace.isEmpty else {
      throw ctx.error(
        "no prefill blocks since the model was loaded or the last 'mem reset': feed something first"
      )
    }
    let budget = ctx.session.budgetedCache?.budgetBytes
    let canvas = PNGViews.memoryPlot(trace, budgetBytes: budget)
    let kvPeak = trace.map(\.kvPeak).max()!
    let summary =
      "\(canvas.width)×\(canvas.height) PNG, \(trace.reduce(0) { $0 + $1.blocks }) blocks, kv peak \(Format.bytes(kvPeak))"
      + (budget.map { " (budget \(Format.bytes($0)))" } ?? "")
    guard let typed else {
      return try ctx.display(lines: ["memory plot: " + summary]) {
        try PNGViews.png(canvas, what: "the plot", command: "mem plot")
      }
    }
    try PNGViews.write(canvas, to: ctx.resolve(typed), typed: typed, command: "mem plot")
    ctx.print("wrote \(typed): " + summary)
  }
}

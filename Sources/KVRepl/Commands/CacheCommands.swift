import Foundation
import KVCache
import KVEngine
import KVModels

/// The budgeted cache's commands: budget, policy (one form per policy of `PolicyCatalog`),
/// protect, quota, prefill, and the views cache, cache layer, cache log, cache map.
public enum CacheCommands {
  public static var all: [Command] {
    [budget, policy] + policyForms + [
      protect, quota, prefill,
    ] + StepCommands.all + [cache, cacheLayer, cacheLog, cacheMap, cacheExport]
  }

  // MARK: budget

  static let budget = Command(
    "budget", summary: "set or show the KV cache budget",
    help: """
      Sets how much K/V the cache may hold: a number of tokens per layer and KV head \
      (`budget 1024 tokens`), or bytes (`budget 16MiB`, `budget 24 MB`; KB, MB, GB are powers \
      of 1000, KiB, MiB, GiB of 1024), converted with the model's K/V bytes per token, rounding \
      down, or a share of the visual tokens fed (`budget 10%`): the cache is sized before a \
      block is prefilled, so the share becomes tokens (rounded down, at least 1) as soon as they \
      are known: at once when images or clips are in the context, else when the next one is fed \
      (after its layout, before its first block; until then nothing is compressed and the cache \
      keeps every token), and again over everything fed at each later image or clip, so the \
      budget grows with the input. A token or byte budget replaces a share. \
      `budget off` keeps every token (the full cache). A budget set while prefill mode is \
      full switches it to capped. A smaller budget compresses the cache now with the active \
      policy; a larger one adds room. schedule=uniform (the default) gives every layer the \
      budget; schedule=pyramid spreads the same total linearly from (1 + slope)·budget at layer 0 \
      to (1 − slope)·budget at the last layer (PyramidKV; slope=0.5 unless given). Without an \
      argument, shows the budget. On an error the cache is left as it was.
      """,
    positionals: [
      Positional(
        "BUDGET", .text, optional: true, rest: true,
        help: "N tokens, a size such as 16MiB, a share of the visual tokens fed such as 10%, or off",
        examples: budgetExamples)
    ],
    options: [
      Option(
        "schedule", .choice(["uniform", "pyramid"]), help: "how the budget is spread over layers"),
      Option(
        "slope", .number(0...0.99), placeholder: "X",
        help: "pyramid: layer 0 gets (1 + X)·budget, the last (1 − X)·budget"),
    ]
  ) { ctx in
    var schedule: BudgetSchedule?
    switch ctx.args.string("schedule") {
    case "pyramid"?:
      schedule = .pyramid(
        slope: ctx.args.isGiven("slope") ? ctx.args.number("slope") : BudgetSchedule.defaultSlope)
    case "uniform"?:
      if ctx.args.isGiven("slope") { throw ctx.error("slope= applies to schedule=pyramid") }
      schedule = .uniform
    default:
      if ctx.args.isGiven("slope") {
        guard case .pyramid = ctx.session.cacheSettings.schedule else {
          throw ctx.error("slope= applies to schedule=pyramid")
        }
        schedule = .pyramid(slope: ctx.args.number("slope"))
      }
    }
    if let text = ctx.args.positional("BUDGET") {
      try setBudget(ctx, text, schedule: schedule)
    } else if let schedule, let share = ctx.session.cacheSettings.share {
      try ctx.session.configureBudgetShare(share, schedule: schedule)
    } else if let schedule {
      guard let budget = ctx.session.cacheSettings.budget else {
        throw ctx.error(
          "no budget to spread: set one first (e.g. 'budget 1024 tokens schedule=\(schedule)')")
      }
      try ctx.session.configureBudget(budget, schedule: schedule)
    }
    ctx.print(budgetLine(ctx.session))
  }

  /// One budget of each form `budget` takes (help and Tab completion show these).
  static let budgetExamples = ["1024", "16MiB", "10%", "off"]

  /// `10%` → 0.1; nil when `text` is not written as a percentage.
  static func share(_ text: String) throws -> Double? {
    let (number, unit) = KVBudget.split(text)
    guard unit == "%" else { return nil }
    guard let v = Double(number.replacingOccurrences(of: "_", with: "")), v.isFinite, v > 0, v <= 100
    else {
      throw CacheError.invalidBudget("a share must be above 0% and at most 100%, got '\(text)'")
    }
    return v / 100
  }

  static func setBudget(_ ctx: CommandContext, _ text: String, schedule: BudgetSchedule?) throws {
    if text.lowercased() == "off" {
      if schedule != nil { throw ctx.error("budget off keeps every token: no schedule to set") }
      try ctx.session.configureBudget(nil)
      return
    }
    do {
      if let share = try share(text) {
        try ctx.session.configureBudgetShare(share, schedule: schedule)
        return
      }
    } catch let e as CacheError {
      throw ctx.error(e.description)
    }
    let budget: KVBudget
    do {
      budget = try KVBudget.parse(text)
    } catch let e as CacheError {
      let (number, unit) = KVBudget.split(text)
      if let v = Double(number.replacingOccurrences(of: "_", with: "")), v > 0,
        !KVBudget.isUnit(unit), let near = Suggest.nearest(unit, in: KVBudget.units)
      {
        throw ctx.error("unknown unit '\(unit)' (did you mean '\(near)'?)")
      }
      throw ctx.error(e.description)
    }
    if let c = ctx.session.model?.config, case .bytes(let n) = budget, n < c.kvBytesPerToken {
      throw ctx.error("\(budget) is less than one token (\(c.kvBytesPerToken) B of K/V per token)")
    }
    try ctx.session.configureBudget(budget, schedule: schedule)
  }

  /// `budget 16MiB = 364 tokens (46080 B of K/V per token); prefill mode=capped`.
  static func budgetLine(_ session: Session) -> String {
    let s = session.cacheSettings
    if let share = s.share, s.budget == nil {
      return "budget \(Session.shareText(share)) of visual tokens: none fed yet; it becomes tokens when "
        + "the next image or clip is fed, and until then the cache keeps every token; prefill mode=\(s.mode)"
    }
    guard let budget = s.budget else { return "budget off: the cache keeps every token" }
    var line = "budget \(budget)"
    if let share = s.share {
      let fed = session.visualTokensFed
      line =
        "budget \(Session.shareText(share)) of visual tokens = \(budget) "
        + (fed > 0 ? "(of \(fed) fed)" : "(until the next image or clip resolves it again)")
    }
    if let c = session.model?.config {
      let perToken = c.kvBytesPerToken
      let tokens = budget.tokens(kvBytesPerToken: perToken)
      switch budget {
      case .tokens: line += " = \(Format.bytes(tokens * perToken))"
      case .bytes: line += " = \(CacheViews.plural(tokens, "token"))"
      }
      line += " (\(perToken) B of K/V per token)"
    } else if case .bytes = budget {
      line += " (in tokens once a model is loaded)"
    }
    if s.schedule != .uniform {
      line += "; schedule \(s.schedule)"
      if let b = session.budgetedCache, let first = b.layerBudgets.first,
        let last = b.layerBudgets.last
      {
        line += " (layer 0: \(first), layer \(b.layers - 1): \(last))"
      }
    }
    return line + "; prefill mode=\(s.mode)"
  }

  // MARK: policy

  static let policy = Command(
    "policy", summary: "show the eviction policy and what is protected",
    help: """
      Shows the eviction policy, its options, and the retention options (protect, quota). \
      `policy NAME key=value ...` chooses one: \(PolicyCatalog.names.joined(separator: ", ")) \
      (`help policy NAME` for its options). With a budgeted cache in use the new policy ranks \
      what comes next; what was evicted stays evicted.
      """,
    verbRole: "policy"
  ) { ctx in
    for line in policyLines(ctx.session) { ctx.print(line) }
  }

  /// `policy NAME [key=value ...]`, one form per policy, declared from its catalog spec so that
  /// parsing, `help`, completion and `PolicyCatalog.make` read the same options.
  static var policyForms: [Command] {
    PolicyCatalog.specs.map { spec in
      Command(
        "policy", verb: spec.name, summary: spec.summary, help: spec.help,
        options: spec.options.map(option), aliases: spec.aliases, verbRole: "policy"
      ) { ctx in
        var values: [String: String] = [:]
        for o in spec.options where ctx.args.isGiven(o.name) {
          values[o.name] = ctx.args.string(o.name)
        }
        var made: any EvictionPolicy
        do {
          made = try PolicyCatalog.make(spec.name, options: values)
        } catch let e as CacheError {
          // The catalog names the policy first ("snapkv: kernel must be odd"); so does the command.
          let message = e.description
          let prefix = "\(spec.name): "
          throw ctx.error(
            message.hasPrefix(prefix) ? String(message.dropFirst(prefix.count)) : message)
        }
        made = try SyntheticCommands.withTargets(ctx, made)
        try ctx.session.configurePolicy(made)
        for line in policyLines(ctx.session) { ctx.print(line) }
      }
    }
  }

  static func option(_ o: PolicyOptionSpec) -> Option {
    let type: ValueType
    switch o.kind {
    case .integer(let range, _): type = .int(range)
    case .number(let range): type = .number(range)
    case .choice(let words): type = .choice(words)
    }
    return Option(o.name, type, default: o.defaultValue, help: o.help)
  }

  /// The policy and its one-line summary, the retention options, and whether it is in use.
  static func policyLines(_ session: Session) -> [String] {
    let s = session.cacheSettings
    var lines = ["policy \(s.policy)"]
    if let spec = PolicyCatalog.spec(named: s.policy.name) { lines.append("  \(spec.summary)") }
    lines.append(retentionLine(s.retention))
    if s.budget == nil {
      lines.append("not in use until a budget is set (e.g. 'budget 1024 tokens')")
    } else if !s.isBudgeted {
      lines.append("not in use while prefill mode=full keeps every token")
    }
    return lines
  }

  /// `protect: text on, system off; quota: at least 4 entries per frame`.
  static func retentionLine(_ r: RetentionOptions) -> String {
    let quota = r.quota.map {
      "at least \(CacheViews.plural($0.minimum, "entry", "entries")) per \($0.unit)"
    }
    return
      "protect: text \(r.protectText ? "on" : "off"), system \(r.protectSystem ? "on" : "off"); quota: \(quota ?? "none")"
  }

  static let protect = Command(
    "protect", summary: "never evict text or system-prompt tokens",
    help: """
      text=on keeps every text token in the cache; system=on keeps the system prompt's tokens. \
      Protected tokens count against the budget: a budget that cannot hold them and what the \
      policy must keep is an error when the next block comes (and the cache stays as it was). \
      Without options, shows the setting.
      """,
    options: [
      Option("text", .toggle, help: "never evict text tokens"),
      Option("system", .toggle, help: "never evict system-prompt tokens"),
    ]
  ) { ctx in
    var r = ctx.session.cacheSettings.retention
    if ctx.args.isGiven("text") { r.protectText = ctx.args.toggle("text") }
    if ctx.args.isGiven("system") { r.protectSystem = ctx.args.toggle("system") }
    if r != ctx.session.cacheSettings.retention { try ctx.session.configureRetention(r) }
    ctx.print(retentionLine(ctx.session.cacheSettings.retention))
  }

  static let quotaUnits = RetentionOptions.Quota.Unit.allCases.map(\.rawValue)

  static let quota = Command(
    "quota", summary: "keep at least N entries of every frame, tile or image",
    help: """
      Before the policy fills the rest of the budget, each video frame (frame=N), image tile \
      (tile=N) or image (image=N) keeps its N best entries, where it has them. The cache keeps \
      one quota at a time; `quota off` removes it. Without arguments, shows the setting.
      """,
    positionals: [Positional("off", .choice(["off"]), optional: true, help: "remove the quota")],
    options: quotaUnits.map {
      Option($0, .int(1...65536), placeholder: "N", help: "entries each \($0) keeps at least")
    }
  ) { ctx in
    let given = quotaUnits.filter { ctx.args.isGiven($0) }
    var r = ctx.session.cacheSettings.retention
    if ctx.args.positional("off") != nil {
      if let unit = given.first { throw ctx.error("give either off or \(unit)=N, not both") }
      r.quota = nil
    } else if given.count > 1 {
      throw ctx.error(
        "\(given.map { "\($0)=" }.joined(separator: " and ")) given; the cache keeps one quota (frame=N, tile=N or image=N)"
      )
    } else if let unit = given.first {
      r.quota = RetentionOptions.Quota(
        unit: RetentionOptions.Quota.Unit(rawValue: unit)!, minimum: ctx.args.int(unit))
    }
    if r != ctx.session.cacheSettings.retention { try ctx.session.configureRetention(r) }
    ctx.print(retentionLine(ctx.session.cacheSettings.retention))
  }

  // MARK: prefill

  static let prefill = Command(
    "prefill", summary: "how input goes into the cache: mode and block size",
    help: """
      mode=full keeps every token. With a budget: mode=post prefills the whole input, then \
      compresses it to the budget (the usual post-prefill baseline; memory grows with the \
      input); mode=sequential appends each block, then evicts the excess (the paper's loop; \
      the cache holds up to budget + block); mode=capped scores each block together with the \
      cache and writes the best in place (never more than the budget). While a budget is on, \
      block=N cuts the input into blocks of N tokens, block=tile (or frame) into one visual \
      unit — a tile, an image, a pair of frames — with the text before it, block=4frames into \
      4 units; a unit is never split. bulk=on prefills the first budget's worth of tokens in \
      one forward (the paper's first step). proxy= sets what SnapKV scores a fed block with: \
      block (its own last queries, the default), template (the chat's end of turn and answer \
      opening, run after each block and never cached), or a question in quotes, known before \
      the images. evict_every=N (capped mode): a decoded token that does not fit evicts room \
      for N, so the scoring runs once every N tokens rather than for each (auto: 1/32 of the \
      budget, at most 16; 1: every token). A change of mode or token block rebuilds the cache \
      from the context. Without options, shows the setting.
      """,
    options: [
      Option(
        "mode", .choice(PrefillMode.allCases.map(\.rawValue)),
        help: "full, post, sequential or capped"),
      Option(
        "block", .text, placeholder: "N|tile|frame|Nframes",
        help: "tokens, or visual units, per block while a budget is on"),
      Option("bulk", .toggle, help: "the first budget's worth of tokens in one forward"),
      Option(
        "proxy", .text, placeholder: "block|template|QUESTION",
        help: "what SnapKV scores fed blocks with"),
      Option(
        "evict_every", .text, placeholder: "N|auto",
        help: "capped mode: decoded tokens evict once every N (auto: budget/32, at most 16)"),
    ]
  ) { ctx in
    let s = ctx.session.cacheSettings
    if let typed = ctx.args.string("evict_every") {
      if typed.lowercased() == "auto" {
        try ctx.session.configureEvictEvery(nil)
      } else if let n = Int(typed), n >= 1, n <= 65536 {
        try ctx.session.configureEvictEvery(n)
      } else {
        throw ctx.error("evict_every must be a number of tokens from 1 to 65536 or auto, got '\(typed)'")
      }
    }
    if let typed = ctx.args.string("proxy") {
      switch typed.lowercased() {
      case "block": try ctx.session.configureProxy(.block)
      case "template": try ctx.session.configureProxy(.template)
      default: try ctx.session.configureProxy(.question(typed))
      }
    }
    if ctx.args.isGiven("mode") || ctx.args.isGiven("block") || ctx.args.isGiven("bulk") {
      let mode = ctx.args.string("mode").flatMap(PrefillMode.init(rawValue:)) ?? s.mode
      var block: BlockSize?
      if let typed = ctx.args.string("block") {
        guard let b = BlockSize(typed), b != .tokens(0) else {
          throw ctx.error(
            "block must be a number of tokens (e.g. 256), tile, frame or Nframes (e.g. 4frames), got '\(typed)'"
          )
        }
        block = b
      }
      try ctx.session.configurePrefill(
        mode: mode, blockSize: block, bulk: ctx.args.isGiven("bulk") ? ctx.args.toggle("bulk") : nil
      )
    }
    let now = ctx.session.cacheSettings
    let block = now.block.map { "\($0)" } ?? "\(ctx.session.options.prefillChunk) (default)"
    ctx.print(
      "prefill mode=\(now.mode) block=\(block)" + (now.bulk ? " bulk=on" : "")
        + (now.proxy == .block ? "" : " proxy=\(now.proxy)")
        + evictEveryText(ctx.session))
    ctx.print("  " + modeSummary(now.mode))
  }

  /// The decode eviction interval, where it applies (a capped cache).
  static func evictEveryText(_ session: Session) -> String {
    guard let cache = session.budgetedCache, cache.mode == .capped else { return "" }
    return " evict_every=\(cache.evictEvery)"
      + (session.cacheSettings.evictEvery == nil ? " (auto)" : "")
  }

  static func modeSummary(_ mode: PrefillMode) -> String {
    switch mode {
    case .full: return "every token is kept; no budget in use"
    case .post: return "the whole input is prefilled, then compressed to the budget"
    case .sequential: return "each block is appended, then the excess evicted (budget + block)"
    case .capped: return "each block is scored with the cache; never more than the budget"
    }
  }

  // MARK: cache views

  /// The loaded model's shape, or the no-model error.
  static func shape(_ session: Session) throws -> DecoderConfig {
    guard let model = session.model else { throw EngineError.noModel }
    return model.config
  }

  /// What the cache holds of the context, budgeted or full.
  static func retention(_ session: Session, _ c: DecoderConfig) -> RetentionView {
    let origins = session.contextOrigins
    if let b = session.budgetedCache { return RetentionView(cache: b, origins: origins) }
    let held = session.cacheSummary?.tokens ?? 0
    return RetentionView(
      layers: c.layers, kvHeads: c.kvHeads, origins: origins,
      holders: origins.indices.map { $0 < held ? c.layers * c.kvHeads : 0 })
  }

  static let cache = Command(
    "cache", summary: "what the KV cache holds: budget, occupancy, origins",
    help: """
      Shows the prefill mode, the budget and the policy, how many tokens each layer and KV head \
      holds against its capacity, the storage, what was evicted so far, and a table of the \
      tokens fed and held by origin (text, image tiles, video frames, generated): `held` is the \
      mean over the (layer, KV head) slots. See also `cache layer N`, `cache log`, `cache map`.
      """
  ) { ctx in
    let session = ctx.session
    let c = try shape(session)
    let s = session.cacheSettings
    var rows: [(String, String)] = []
    if let b = session.budgetedCache {
      let block = s.block.map { "\($0)" } ?? "\(session.options.prefillChunk)"
      rows.append(
        ("mode", "\(b.mode), block \(block), \(CacheViews.plural(b.blocks, "block")) so far"))
      var budget = "\(b.budget) tokens = \(Format.bytes(b.budgetBytes))"
      if case .bytes? = s.budget { budget += " (budget \(s.budget!))" }
      if b.schedule != .uniform { budget += " on average per layer" }
      rows.append(("budget", budget))
      if b.schedule != .uniform {
        rows.append(("schedule", "\(b.schedule): " + CacheViews.layerBudgets(b.layerBudgets)))
      }
      rows.append(("policy", "\(b.policy)"))
      if b.options != RetentionOptions() { rows.append(("retention", retentionLine(b.options))) }
      let r = b.countRange
      let held =
        r.lowerBound == r.upperBound ? "\(r.lowerBound)" : "\(r.lowerBound) to \(r.upperBound)"
      let caps = (0..<b.layers).map { b.capacity(layer: $0) }
      let room =
        caps.min() == caps.max() ? "\(caps[0])" : "\(caps.min()!) to \(caps.max()!)"
      rows.append(("held", "\(held) of \(room) tokens per layer and KV head"))
      rows.append(
        ("storage", "\(Format.bytes(b.bytesHeld)) (\(c.layers) layers × \(c.kvHeads) KV heads)"))
      rows.append(
        (
          "evicted",
          "\(Format.bytes(b.evictedBytes)) so far (\(b.evictedEntries) entries over \(c.layers * c.kvHeads) slots)"
        ))
    } else {
      let summary = session.cacheSummary ?? (0, 0, 0)
      rows.append(("mode", "full: every token is kept (no budget in use)"))
      rows.append(("held", "\(summary.tokens) of \(summary.capacity) tokens per layer and KV head"))
      rows.append(
        ("storage", "\(Format.bytes(summary.bytes)) (\(c.layers) layers × \(c.kvHeads) KV heads)"))
    }
    let width = rows.map(\.0.count).max()! + 2
    for (key, value) in rows {
      ctx.print(key.padding(toLength: width, withPad: " ", startingAt: 0) + value)
    }
    let table = CacheViews.origins(retention(session, c))
    if !table.isEmpty {
      ctx.print()
      for line in table { ctx.print(line) }
    }
  }

  static let cacheLayer = Command(
    "cache", verb: "layer", summary: "one layer: occupancy per KV head, positions kept",
    help: """
      For layer N: how many entries each KV head holds, by modality, and the positions each \
      head keeps, as ranges (each KV head keeps its own set).
      """,
    positionals: [Positional("N", .int(0...65535), help: "the layer, from 0")]
  ) { ctx in
    let c = try shape(ctx.session)
    let n = Int(ctx.args.positional("N")!)!
    guard n < c.layers else {
      throw ctx.error(
        "layer \(n) does not exist (the model has \(c.layers) layers: 0-\(c.layers - 1))")
    }
    let origins = ctx.session.contextOrigins
    let heads: [[EntryMeta]]
    let capacity: Int
    if let b = ctx.session.budgetedCache {
      heads = (0..<c.kvHeads).map { b.entries(layer: n, head: $0) }
      capacity = b.capacity(layer: n)
    } else {
      let summary = ctx.session.cacheSummary ?? (0, 0, 0)
      let all = origins.prefix(summary.tokens).enumerated().map {
        EntryMeta(position: $0, origin: $1)
      }
      heads = Array(repeating: all, count: c.kvHeads)
      capacity = summary.capacity
    }
    for line in CacheViews.layer(n, heads: heads, capacity: capacity, fed: origins) {
      ctx.print(line)
    }
  }

  static let cacheLog = Command(
    "cache", verb: "log", summary: "the last block's evictions, per layer and KV head",
    help: """
      The eviction log of the last block (or of the last compression): for each layer and KV \
      head, how many entries left, the lowest score among the entries kept that the policy \
      could have evicted, the highest score among those that left, and their positions.
      """,
    options: [Option("layer", .int(0...65535), placeholder: "N", help: "only this layer")]
  ) { ctx in
    let c = try shape(ctx.session)
    let layer = ctx.args.isGiven("layer") ? ctx.args.int("layer") : nil
    if let layer, layer >= c.layers {
      throw ctx.error(
        "layer \(layer) does not exist (the model has \(c.layers) layers: 0-\(c.layers - 1))")
    }
    guard let b = ctx.session.budgetedCache else {
      ctx.print("no budget in use: the cache keeps every token, nothing is evicted")
      return
    }
    for line in CacheViews.log(event: b.lastEvent, records: b.lastEvictions, layer: layer) {
      ctx.print(line)
    }
  }

  static let cacheMap = Command(
    "cache", verb: "map", summary: "a heatmap of what the cache retains of each input",
    help: """
      For each image, a grid per tile over the patches' rows and columns; for each video, a \
      timeline over its frames; for text and generated tokens, a strip over their positions. \
      An Idefics3 image's tiles are laid out on the image's grid (rows of tiles, the global \
      image after them); after `feed synthetic`, the tiles or frames holding the target are \
      marked (* on a tile, ^ under a frame; outlined in red in the PNG) and a line says how much \
      of it the cache holds. \
      Each cell shows the share of the (layer, KV head) slots that still hold its tokens: \
      ' ' none, ░ under a third, ▒ under two thirds, ▓ less than all, █ all. Large inputs are \
      bucketed so that every line fits in 80 columns. out=FILE.png writes the same map as a \
      PNG instead, one cell per patch, token or frame, coloured by share on viridis; in a \
      notebook (the Jupyter kernel, `notebook run`) that picture is shown inline.
      """,
    options: [
      Option(
        "out", .path(extensions: ["png"]), placeholder: "FILE.png", help: "write the map as a PNG")
    ]
  ) { ctx in
    let c = try shape(ctx.session)
    let view = withGeometry(ctx, retention(ctx.session, c))
    guard let typed = ctx.args.string("out") else {
      let lines = CacheViews.map(view)
      guard !view.origins.isEmpty else { return lines.forEach { ctx.print($0) } }
      // In a notebook the picture, with this view as its text.
      try ctx.display(lines: lines) {
        try PNGViews.png(PNGViews.retentionMap(view), what: "the map", command: "cache map")
      }
      return
    }
    guard !view.origins.isEmpty else { throw ctx.error("the cache is empty: nothing fed yet") }
    let canvas = PNGViews.retentionMap(view)
    try PNGViews.write(canvas, to: ctx.resolve(typed), typed: typed, command: "cache map")
    ctx.print(
      "wrote \(typed): \(canvas.width)×\(canvas.height) PNG, retention of \(view.origins.count) tokens"
    )
  }
}

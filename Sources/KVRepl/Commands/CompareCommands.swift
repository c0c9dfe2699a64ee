import Foundation
import KVCache
import KVEngine
import KVTensor

/// `compare`: the same inputs and question under several budgets, policies and modes, side by
/// side with the full cache.
public enum CompareCommands {
  /// Most settings one `compare` runs (each re-prefills every input).
  static let maxRuns = 64

  /// A setting to run, with its budget as the table shows it.
  struct Labelled {
    var settings: CacheSettings
    var budget: String
  }

  static let compare = Command(
    "compare", summary: "re-run the inputs and question under several cache settings",
    help: """
      Re-runs the inputs and the question of the last `ask` (or, after `feed synthetic` and no \
      ask, its question; or the inputs fed so far and question="...") once with the full cache \
      and once per combination of modes=, budgets= and policies= (comma-separated; each \
      defaults to the session's own setting, the mode to capped), each in a fresh cache over \
      the same model, and prints one table: the greedy answer, whether it is the full cache's \
      (and the expected answer, for a synthetic question), the K/V peak, the process's peak RSS \
      and the prefill time (these two vary between runs: ~). Policies take their default \
      options; block size, bulk, proxy and retention options are the session's. With seeds= or \
      tasks= it runs the synthetic benchmark instead: each sample of each task and seed (the \
      task, size and question kind of the sample fed last by default) is fed alone into a fresh \
      cache and its question asked; the table is the accuracy per task and setting against the \
      expected answers (a share budget is of each sample's visual tokens). out=FILE.csv or \
      FILE.json writes the rows (every sample's reply, for the benchmark). The session itself \
      is left as it was, except the process's peak RSS, which each run resets to measure its \
      own (`mem` then shows the last run's). Ctrl-C stops between runs.
      """,
    options: [
      Option(
        "budgets", .text, placeholder: "B,B,...",
        help: "budgets, e.g. 256,512,1024, 8MiB,16MiB or 5%,10% (of the visual tokens fed)"),
      Option("policies", .text, placeholder: "P,P,...", help: "policy names, e.g. snapkv,keydiff"),
      Option("modes", .text, placeholder: "M,M,...", help: "post, sequential, capped"),
      Option("question", .text, placeholder: "TEXT", help: "ask this over the current inputs"),
      Option(
        "max", .int(1...4096), placeholder: "N",
        help: "most tokens per answer (default: the last ask's; 4 for the benchmark)"),
      Option(
        "seeds", .text, placeholder: "S-S,S,...",
        help: "synthetic benchmark: the seeds, e.g. 0-7 or 0,3,5"),
      Option(
        "tasks", .text, placeholder: "T,T,...",
        help: "synthetic benchmark: the tasks, e.g. needle-image,count"),
      Option(
        "out", .path(extensions: ["csv", "json"]), placeholder: "FILE.csv",
        help: "also write the rows to FILE.csv or FILE.json"),
    ]
  ) { ctx in
    let session = ctx.session
    guard session.model != nil else { throw EngineError.noModel }
    let benchmark = ctx.args.isGiven("seeds") || ctx.args.isGiven("tasks")
    if benchmark, ctx.args.isGiven("question") {
      throw ctx.error("question= asks over the current inputs; the benchmark asks each sample's own")
    }
    let base = session.cacheSettings
    let modes = try list(ctx, "modes").map { word -> PrefillMode in
      guard let m = PrefillMode(rawValue: word.lowercased()), m != .full else {
        throw ctx.error("modes: '\(word)' is not a compressing mode (post, sequential or capped)")
      }
      return m
    }
    // A share is resolved over the visual tokens fed, as `budget 10%` is: the inputs re-run
    // are known, so each run gets its tokens before it starts. The benchmark's samples each
    // resolve it at their own feed.
    let visual = session.visualTokensFed
    let budgets = try list(ctx, "budgets").map { word -> (budget: KVBudget?, share: Double?) in
      do {
        if let share = try CacheCommands.share(word) {
          if benchmark { return (nil, share) }
          guard visual > 0 else {
            throw ctx.error("budgets: \(word) is a share of the visual tokens fed, and none are fed")
          }
          return (.tokens(Session.shareTokens(share, of: visual)), share)
        }
        return (try KVBudget.parse(word), nil)
      } catch let e as CacheError {
        throw ctx.error("budgets: \(e.description)")
      }
    }
    let policies = try list(ctx, "policies").map { word -> any EvictionPolicy in
      do {
        let policy = try PolicyCatalog.make(word.lowercased())
        // The benchmark gives an oracle each sample's targets as it runs it.
        return benchmark ? policy : try SyntheticCommands.withTargets(ctx, policy)
      } catch let e as CacheError {
        throw ctx.error("policies: \(e.description)")
      }
    }
    let own: (budget: KVBudget?, share: Double?)? =
      base.share.map { (benchmark ? nil : base.budget, $0) } ?? base.budget.map { ($0, nil) }
    guard let sessionBudget = own ?? budgets.first else {
      throw ctx.error("no budget to compare: set one or give budgets=256,512,...")
    }
    // After `feed synthetic` and no ask since, its question (and its expected answer).
    let synthetic = ctx.repl.syntheticQuestion
    var question = ctx.args.string("question")
    if !benchmark, question == nil, session.lastAsk == nil {
      guard let synthetic else {
        throw ctx.error("nothing asked yet: ask a question first, or give question=\"...\"")
      }
      question = synthetic.question
    }
    let asked = question ?? session.lastAsk?.question
    let expected = synthetic.flatMap { $0.question == asked ? $0.answer : nil }
    let maxTokens =
      ctx.args.isGiven("max")
      ? ctx.args.int("max") : benchmark ? 4 : (session.lastAsk?.options.maxTokens ?? 32)
    var settings: [Labelled] = []
    for mode in modes.isEmpty ? [base.isBudgeted ? base.mode : .capped] : modes {
      for budget in budgets.isEmpty ? [sessionBudget] : budgets {
        for policy in policies.isEmpty ? [base.policy] : policies {
          var s = base
          s.mode = mode
          (s.budget, s.share) = budget
          s.policy = policy
          settings.append(Labelled(settings: s, budget: budgetText(s)))
        }
      }
    }
    guard settings.count <= maxRuns else {
      throw ctx.error("\(settings.count) settings; at most \(maxRuns) per compare")
    }
    if benchmark {
      return try CompareBenchmark.run(ctx, settings: settings, maxTokens: maxTokens)
    }
    let out = try ExportFile(ctx)
    var full = base
    full.mode = .full
    var rows = [
      ["mode", "budget", "policy", "answer", "=full"] + (expected == nil ? [] : ["correct"])
        + ["kv peak", "rss peak", "prefill"]
    ]
    var records: [[ExportFile.Cell]] = []
    var reference: String?
    // Answers are listed once under the table, each with a letter the table refers to.
    var answers: [String] = []
    var errors: [String] = []
    defer { ctx.progress(nil) }
    let runs = [Labelled(settings: full, budget: "-")] + settings
    for (i, labelled) in runs.enumerated() {
      let s = labelled.settings
      ctx.progress("compare: run \(i + 1) of \(runs.count) (\(s))")
      let isFull = s.mode == .full
      let policy = isFull ? "-" : s.policy.name
      let run: CompareRun
      do {
        run = try session.rerun(settings: s, question: question, maxTokens: maxTokens)
      } catch let e as EngineError {
        if case .cancelled = e { throw e }
        // A setting these inputs cannot run under: its error is listed under the answers.
        if !errors.contains("\(e)") { errors.append("\(e)") }
        let label = "!\(errors.firstIndex(of: "\(e)")! + 1)"
        rows.append(
          [s.mode.rawValue, labelled.budget, policy, label, "-"] + (expected == nil ? [] : ["-"])
            + ["-", "-", "-"])
        records.append(
          [.text(s.mode.rawValue), .text(labelled.budget), .text(policy), .null, .null]
            + (expected == nil ? [] : [.null]) + [.null, .null, .null, .text("\(e)")])
        continue
      }
      if reference == nil { reference = run.answer }
      if !answers.contains(run.answer) { answers.append(run.answer) }
      let same = run.answer == reference
      let correct = expected.map { SyntheticCommands.repliedWord(run.answer) == $0 }
      rows.append(
        [
          s.mode.rawValue, labelled.budget, policy,
          answerLetter(answers.firstIndex(of: run.answer)!),
          isFull ? "-" : (same ? "yes" : "no"),
        ] + (correct.map { [$0 ? "yes" : "no"] } ?? []) + [
          Format.bytes(run.kvPeak),
          run.rssPeak.map { "~" + Format.bytes($0, unit: "MiB") } ?? "~unknown",
          "~" + String(format: "%.2f", run.prefillSeconds) + "s",
        ])
      records.append(
        [
          .text(s.mode.rawValue), .text(labelled.budget), .text(policy), .text(run.answer),
          isFull ? .null : .bool(same),
        ] + (correct.map { [.bool($0)] } ?? []) + [
          .int(run.kvPeak), run.rssPeak.map(ExportFile.Cell.int) ?? .null,
          .double(run.prefillSeconds), .null,
        ])
    }
    for line in Format.table(rows, left: [0, 1, 2, 3, 4]) { ctx.print(line) }
    ctx.print()
    let listed =
      answers.enumerated().map { (answerLetter($0.offset), "\"\($0.element)\"") }
      + errors.enumerated().map { ("!\($0.offset + 1)", "error: \($0.element)") }
      + (expected.map { [("expected", $0)] } ?? [])
    let width = listed.map(\.0.count).max() ?? 1
    for (label, text) in listed {
      let flat = text.replacingOccurrences(of: "\n", with: " ")
      let head = label.padding(toLength: width + 2, withPad: " ", startingAt: 0)
      let pad = String(repeating: " ", count: head.count)
      for (k, line) in Format.wrap(flat, width: 78 - head.count, indent: "").enumerated() {
        ctx.print((k == 0 ? head : pad) + line)
      }
    }
    if let out {
      try out.write(
        header: ["mode", "budget", "policy", "answer", "same_as_full"]
          + (expected == nil ? [] : ["correct"])
          + ["kv_peak_bytes", "rss_peak_bytes", "prefill_seconds", "error"],
        records: records)
    }
  }

  /// A comma-separated option's words (empty when not given).
  static func list(_ ctx: CommandContext, _ name: String) throws -> [String] {
    guard let text = ctx.args.string(name) else { return [] }
    let words = text.split(separator: ",", omittingEmptySubsequences: false).map {
      $0.trimmingCharacters(in: .whitespaces)
    }
    guard !words.isEmpty, words.allSatisfy({ !$0.isEmpty }) else {
      throw ctx.error("\(name): expected a comma-separated list, got '\(text)'")
    }
    return words
  }

  static func budgetText(_ s: CacheSettings) -> String {
    guard let b = s.budget else { return s.share.map(Session.shareText) ?? "off" }
    let share = s.share.map { "\(Session.shareText($0)) = " } ?? ""
    if case .tokens(let n) = b { return share + "\(n)" }
    return "\(b)"
  }

  /// A, B, ..., Z, then A2, B2, ...
  static func answerLetter(_ i: Int) -> String {
    let letter = String(UnicodeScalar(UInt8(65 + i % 26)))
    return i < 26 ? letter : letter + "\(i / 26 + 1)"
  }
}

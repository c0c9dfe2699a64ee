import Foundation
import KVCache
import KVEngine
import KVTensor

/// `compare`: the same inputs and question under several budgets, policies and modes, side by
/// side with the full cache.
public enum CompareCommands {
  /// Most settings one `compare` runs (each re-prefills every input).
  static let maxRuns = 64

  static let compare = Command(
    "compare", summary: "re-run the inputs and question under several cache settings",
    help: """
      Re-runs the inputs and the question of the last `ask` (or the inputs fed so far and \
      question="...") once with the full cache and once per combination of modes=, budgets= \
      and policies= (comma-separated; each defaults to the session's own setting, the mode to \
      capped), each in a fresh cache over the same model, and prints one table: the greedy \
      answer, whether it is the full cache's, the K/V peak, the process's peak RSS and the \
      prefill time (these two vary between runs: ~). Policies take their default options; \
      block size, bulk, proxy and retention options are the session's. The session itself is \
      left as it was, except the process's peak RSS, which each run resets to measure its own \
      (`mem` then shows the last run's). Ctrl-C stops between runs.
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
        help: "most tokens per answer (default: the last ask's)"),
    ]
  ) { ctx in
    let session = ctx.session
    guard session.model != nil else { throw EngineError.noModel }
    let base = session.cacheSettings
    let modes = try list(ctx, "modes").map { word -> PrefillMode in
      guard let m = PrefillMode(rawValue: word.lowercased()), m != .full else {
        throw ctx.error("modes: '\(word)' is not a compressing mode (post, sequential or capped)")
      }
      return m
    }
    // A share is resolved over the visual tokens fed, as `budget 10%` is: the inputs re-run
    // are known, so each run gets its tokens before it starts.
    let visual = session.visualTokensFed
    let budgets = try list(ctx, "budgets").map { word -> (budget: KVBudget, share: Double?) in
      do {
        if let share = try CacheCommands.share(word) {
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
        return try SyntheticCommands.withTargets(ctx, PolicyCatalog.make(word.lowercased()))
      } catch let e as CacheError {
        throw ctx.error("policies: \(e.description)")
      }
    }
    guard let sessionBudget = base.budget.map({ ($0, base.share) }) ?? budgets.first else {
      throw ctx.error("no budget to compare: set one or give budgets=256,512,...")
    }
    let question = ctx.args.string("question")
    if question == nil, session.lastAsk == nil {
      throw ctx.error("nothing asked yet: ask a question first, or give question=\"...\"")
    }
    let maxTokens =
      ctx.args.isGiven("max") ? ctx.args.int("max") : (session.lastAsk?.options.maxTokens ?? 32)
    var settings: [CacheSettings] = []
    for mode in modes.isEmpty ? [base.isBudgeted ? base.mode : .capped] : modes {
      for budget in budgets.isEmpty ? [sessionBudget] : budgets {
        for policy in policies.isEmpty ? [base.policy] : policies {
          var s = base
          s.mode = mode
          (s.budget, s.share) = budget
          s.policy = policy
          settings.append(s)
        }
      }
    }
    guard settings.count <= maxRuns else {
      throw ctx.error("\(settings.count) settings; at most \(maxRuns) per compare")
    }
    var full = base
    full.mode = .full
    var rows = [["mode", "budget", "policy", "answer", "=full", "kv peak", "rss peak", "prefill"]]
    var reference: String?
    // Answers are listed once under the table, each with a letter the table refers to.
    var answers: [String] = []
    var errors: [String] = []
    defer { ctx.progress(nil) }
    for (i, s) in ([full] + settings).enumerated() {
      ctx.progress("compare: run \(i + 1) of \(settings.count + 1) (\(s))")
      let run: CompareRun
      do {
        run = try session.rerun(settings: s, question: question, maxTokens: maxTokens)
      } catch let e as EngineError {
        if case .cancelled = e { throw e }
        // A setting these inputs cannot run under: its error is listed under the answers.
        if !errors.contains("\(e)") { errors.append("\(e)") }
        let label = "!\(errors.firstIndex(of: "\(e)")! + 1)"
        rows.append([s.mode.rawValue, budgetText(s), s.policy.name, label, "-", "-", "-", "-"])
        continue
      }
      if reference == nil { reference = run.answer }
      if !answers.contains(run.answer) { answers.append(run.answer) }
      let isFull = s.mode == .full
      rows.append([
        s.mode.rawValue, isFull ? "-" : budgetText(s), isFull ? "-" : s.policy.name,
        answerLetter(answers.firstIndex(of: run.answer)!),
        isFull ? "-" : (run.answer == reference ? "yes" : "no"),
        Format.bytes(run.kvPeak),
        run.rssPeak.map { "~" + Format.bytes($0, unit: "MiB") } ?? "~unknown",
        "~" + String(format: "%.2f", run.prefillSeconds) + "s",
      ])
    }
    for line in Format.table(rows, left: [0, 1, 2, 3, 4]) { ctx.print(line) }
    ctx.print()
    let listed =
      answers.enumerated().map { (answerLetter($0.offset), "\"\($0.element)\"") }
      + errors.enumerated().map { ("!\($0.offset + 1)", "error: \($0.element)") }
    let width = listed.map(\.0.count).max() ?? 1
    for (label, text) in listed {
      let flat = text.replacingOccurrences(of: "\n", with: " ")
      let head = label.padding(toLength: width + 2, withPad: " ", startingAt: 0)
      let pad = String(repeating: " ", count: head.count)
      for (k, line) in Format.wrap(flat, width: 78 - head.count, indent: "").enumerated() {
        ctx.print((k == 0 ? head : pad) + line)
      }
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
    guard let b = s.budget else { return "off" }
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

import Foundation
import KVCache
import KVEngine
import KVTasks

/// `compare seeds=… tasks=…`: the synthetic benchmark in the REPL. Each sample (a task and a
/// seed) is fed alone into a fresh cache over the loaded model, once with the full cache and
/// once per setting, its question asked greedily, and the reply's first word checked against
/// the expected answer, as `synthetic ask` checks it. The table is the accuracy per task and
/// setting; out= keeps every sample's reply.
enum CompareBenchmark {
  /// Most samples (tasks × seeds) one `compare` runs.
  static let maxSamples = 1000

  /// One setting of the table: nil settings is the full cache.
  struct Setting {
    var mode: String
    var budget: String
    var policy: String
    var settings: CacheSettings
  }

  /// One sample under one setting.
  struct Outcome {
    var task: SyntheticTask
    var seed: Int
    var kind: QuestionKind
    var setting: Int
    var expected: String
    /// The reply's first word ("" when nothing was generated); nil when the run failed.
    var replied: String?
    var kvPeak: Int?
    var error: String?
    var correct: Bool { replied == expected }
  }

  /// `0-7`, `3`, `0-3,9,12`: ascending, each seed once.
  static func seeds(_ ctx: CommandContext, _ words: [String]) throws -> [Int] {
    var out: [Int] = []
    for word in words {
      let ends = word.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
      guard (1...2).contains(ends.count), let a = Int(ends[0]), let b = Int(ends.last!), a >= 0,
        a <= b
      else {
        throw ctx.error("seeds: '\(word)' is not a seed or a range of seeds (e.g. 0-7 or 0,3,5)")
      }
      guard b - a < maxSamples else {
        throw ctx.error("seeds: '\(word)' is more than \(maxSamples) seeds")
      }
      out += Array(a...b)
    }
    return Array(Set(out)).sorted()
  }

  static func tasks(_ ctx: CommandContext, _ words: [String]) throws -> [SyntheticTask] {
    var out: [SyntheticTask] = []
    for word in words {
      guard let t = SyntheticTask(rawValue: word.lowercased()) else {
        let known = SyntheticTask.allCases.map(\.rawValue).joined(separator: ", ")
        throw ctx.error("tasks: unknown task '\(word)' (known: \(known))")
      }
      if !out.contains(t) { out.append(t) }
    }
    return out
  }

  /// Runs every sample under the full cache and `settings` and prints the accuracy table;
  /// writes every outcome to out= when given. The session is left as it was.
  static func run(
    _ ctx: CommandContext, settings: [CompareCommands.Labelled], maxTokens: Int
  ) throws {
    let session = ctx.session
    let fed = ctx.repl.syntheticFed
    let tasks = try tasks(ctx, try CompareCommands.list(ctx, "tasks"))
    let seedWords = try CompareCommands.list(ctx, "seeds")
    let chosenTasks = tasks.isEmpty ? fed.map { [$0.task] } ?? [] : tasks
    guard !chosenTasks.isEmpty else {
      throw ctx.error("tasks: give tasks=needle-image,... (no synthetic sample fed to take it from)")
    }
    let chosenSeeds = try seedWords.isEmpty ? fed.map { [$0.seed] } ?? [] : seeds(ctx, seedWords)
    guard !chosenSeeds.isEmpty else {
      throw ctx.error("seeds: give seeds=0-7 (no synthetic sample fed to take it from)")
    }
    let samples = chosenTasks.count * chosenSeeds.count
    guard samples <= maxSamples else {
      throw ctx.error("\(samples) samples (tasks × seeds); at most \(maxSamples) per compare")
    }
    let out = try ExportFile(ctx)
    var full = CacheSettings()
    full.retention = session.cacheSettings.retention
    let all = [Setting(mode: "full", budget: "-", policy: "-", settings: full)] + settings.map {
      Setting(mode: $0.settings.mode.rawValue, budget: $0.budget, policy: $0.settings.policy.name,
        settings: $0.settings)
    }
    var outcomes: [Outcome] = []
    defer { ctx.progress(nil) }
    var done = 0
    for task in chosenTasks {
      for seed in chosenSeeds {
        // The fed sample's size and question kind when it is of this task, else the task's own.
        let same = fed?.task == task ? fed : nil
        let sample = try SyntheticCommands.generate(
          ctx, task, seed: seed, same?.size ?? task.defaultSize, same?.questionKind)
        for (i, setting) in all.enumerated() {
          done += 1
          ctx.progress("compare: run \(done) of \(samples * all.count) (\(task.rawValue) seed=\(seed))")
          var o = Outcome(
            task: task, seed: seed, kind: sample.questionKind, setting: i,
            expected: sample.answer)
          do {
            let r = try answer(session, sample, setting.settings, maxTokens: maxTokens)
            (o.replied, o.kvPeak) = (r.word, r.kvPeak)
          } catch let e as EngineError {
            if case .cancelled = e { throw e }
            o.error = "\(e)"
          }
          outcomes.append(o)
        }
      }
    }
    // Per task, then all tasks together when there are several.
    let perTask: [SyntheticTask?] = chosenTasks.map { $0 } + (chosenTasks.count > 1 ? [nil] : [])
    var rows = [["task", "mode", "budget", "policy", "correct", "accuracy", "kv peak"]]
    for task in perTask {
      for (i, s) in all.enumerated() {
        let mine = outcomes.filter { (o: Outcome) in
          o.setting == i && (task == nil || o.task == task)
        }
        let ran = mine.filter { (o: Outcome) in o.error == nil }
        let right = ran.filter { (o: Outcome) in o.correct }.count
        let peak: Int? = ran.compactMap { (o: Outcome) in o.kvPeak }.max()
        var correct = "\(right)/\(mine.count)"
        if ran.count < mine.count { correct += " (\(mine.count - ran.count) failed)" }
        let accuracy = String(format: "%.1f%%", 100 * Double(right) / Double(mine.count))
        let peakText = peak.map { Format.bytes($0) } ?? "-"
        rows.append([task?.rawValue ?? "all", s.mode, s.budget, s.policy, correct, accuracy, peakText])
      }
    }
    ctx.print(
      "\(Format.plural(samples, "sample")) (\(chosenTasks.map(\.rawValue).joined(separator: ", ")); seeds \(CacheViews.compactRanges(chosenSeeds).joined(separator: ","))), each in a fresh cache:"
    )
    for line in Format.table(rows, left: [0, 1, 2, 3]) { ctx.print(line) }
    var errors: [String] = []
    for o in outcomes { if let e = o.error, !errors.contains(e) { errors.append(e) } }
    for e in errors { ctx.print("error: \(e)") }
    if let out {
      let header = [
        "task", "seed", "question_kind", "mode", "budget", "policy", "expected", "replied",
        "correct", "kv_peak_bytes", "error",
      ]
      let records = outcomes.map { o -> [ExportFile.Cell] in
        let s = all[o.setting]
        return [
          .text(o.task.rawValue), .int(o.seed), .text(o.kind.rawValue), .text(s.mode),
          .text(s.budget), .text(s.policy), .text(o.expected), o.replied.map(ExportFile.Cell.text) ?? .null,
          o.error == nil ? .bool(o.correct) : .null, o.kvPeak.map(ExportFile.Cell.int) ?? .null,
          o.error.map(ExportFile.Cell.text) ?? .null,
        ]
      }
      try out.write(header: header, records: records)
    }
  }

  /// Feeds `sample` alone into a fresh session over `parent`'s model with `settings` (an
  /// oracle gets this sample's targets), asks its question greedily, and returns the reply's
  /// first word as `synthetic ask` judges it, and the run's K/V peak.
  static func answer(
    _ parent: Session, _ sample: SyntheticSample, _ settings: CacheSettings, maxTokens: Int
  ) throws -> (word: String, kvPeak: Int) {
    let session = try parent.sharingModel(settings: settings)
    if let oracle = settings.policy as? OraclePolicy {
      try session.configurePolicy(try session.syntheticTargets(sample).oracle(fill: oracle.fill))
    }
    _ = try session.feed(sample)
    let asked = try session.ask(
      sample.question, options: GenerationOptions(maxTokens: maxTokens), onText: { _ in })
    return (SyntheticCommands.repliedWord(asked.text), session.meter.reading(.kv).highWater)
  }
}

/// compare's out=FILE.csv or FILE.json: one record per row, the CSV with a header line
/// (RFC 4180 quoting), the JSON a list of objects keyed by the header.
struct ExportFile {
  enum Cell {
    case text(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null
  }

  let typed: String
  let path: String
  let json: Bool
  let command: String

  /// nil when out= is not given.
  init?(_ ctx: CommandContext) throws {
    guard let typed = ctx.args.string("out") else { return nil }
    self.typed = typed
    path = ctx.resolve(typed)
    json = typed.lowercased().hasSuffix(".json")
    command = ctx.command.name
    // Checked before any run: a folder that is missing fails now, not after minutes of work.
    let folder = (path as NSString).deletingLastPathComponent
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isDir),
      isDir.boolValue
    else {
      throw ctx.error("\(typed): no such folder")
    }
  }

  func write(header: [String], records: [[Cell]]) throws {
    let text: String
    if json {
      let list = records.map { r in
        JSONValue.object(zip(header, r).map { ($0.0, Self.json($0.1)) })
      }
      text = JSONWriter.write(.array(list)) + "\n"
    } else {
      text = ([header.map(Self.csv)] + records.map { $0.map { Self.csv(Self.plain($0)) } })
        .map { $0.joined(separator: ",") + "\r\n" }.joined()
    }
    try AtomicFile.replace(path, with: Array(text.utf8), command: command, displayPath: typed)
  }

  static func plain(_ c: Cell) -> String {
    switch c {
    case .text(let s): return s
    case .int(let n): return "\(n)"
    case .double(let x): return "\(x)"
    case .bool(let b): return b ? "true" : "false"
    case .null: return ""
    }
  }

  static func json(_ c: Cell) -> JSONValue {
    switch c {
    case .text(let s): return .string(s)
    case .int(let n): return .number("\(n)")
    case .double(let x): return x.isFinite ? .number("\(x)") : .null
    case .bool(let b): return .bool(b)
    case .null: return .null
    }
  }

  static func csv(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
  }
}

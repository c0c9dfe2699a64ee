import Foundation
import KVCache
import KVEngine
import KVModels
import KVTasks

/// The synthetic tasks of the embedded model: `feed synthetic`, `synthetic ask`,
/// `synthetic write` (datasets for the training script) and `synthetic vocab`.
public enum SyntheticCommands {
  public static var all: [Command] { [feedSynthetic, ask, write, vocab] }

  static let task = Positional(
    "TASK", .choice(SyntheticTask.allCases.map(\.rawValue)), help: "the task family")

  /// What picks a sample: seed, sizes, question kind.
  static let sampleOptions: [Option] = [
    Option("seed", .int(0...Int.max), default: "0", help: "the sample's seed"),
    Option(
      "size", .int(1...100_000), placeholder: "PIXELS",
      help: "image (or frame) side: needle-image 512 (multiples of 64), others 64 (of 16)"),
    Option("frames", .int(1...100_000), help: "needle-video: frames in the clip (default 32)"),
    Option(
      "question", .choice(QuestionKind.allCases.map(\.rawValue)),
      help: "the kind of question (default: one of the task's, from the seed)"),
  ]

  static func parse(_ ctx: CommandContext) -> (SyntheticTask, SyntheticSize, QuestionKind?) {
    let task = SyntheticTask(rawValue: ctx.args.positional("TASK")!)!
    var size = task.defaultSize
    if ctx.args.isGiven("size") { size.side = ctx.args.int("size") }
    if ctx.args.isGiven("frames") { size.frames = ctx.args.int("frames") }
    return (task, size, ctx.args.string("question").flatMap(QuestionKind.init(rawValue:)))
  }

  static func generate(
    _ ctx: CommandContext, _ task: SyntheticTask, seed: Int, _ size: SyntheticSize,
    _ question: QuestionKind?
  ) throws -> SyntheticSample {
    do {
      return try SyntheticGenerator.generate(
        task, seed: UInt64(seed), size: size, question: question)
    } catch let e as SyntheticError {
      throw ctx.error(e.message)
    }
  }

  static let feedSynthetic = Command(
    "feed", verb: "synthetic", summary: "generate a synthetic task and add its image or clip",
    help: """
      Generates a sample of TASK from seed= (the same seed always gives the same pixels, \
      question and answer), feeds its image or frames into the chat's user turn as `feed \
      image` / `feed frames` would, and prints its question and expected answer (`expected:`). `synthetic \
      ask` then asks that question. Tasks: needle-image (a 512-px image of 8×8 64-px tiles \
      with 40-80 distractors and one unique shape: its color, its quadrant, or which shape), \
      needle-video (32 frames of 64 px; a shape shows in 1-4 frames: which, its color, or \
      when), count (how many of a shape on one tile), attribute (a shape's color, or a \
      color's shape, on one tile).
      """,
    positionals: [task],
    options: sampleOptions + [SessionCommands.timing]
  ) { ctx in
    let (task, size, question) = parse(ctx)
    let seed = ctx.args.int("seed")
    let sample = try generate(ctx, task, seed: seed, size, question)
    let index = ctx.session.nextVisualInput
    // An oracle in use ranks this feed's tokens as they come: it gets this sample's targets
    // first, and its old ones back if the feed is refused.
    let active = ctx.session.cacheSettings.policy
    if let oracle = active as? OraclePolicy {
      try ctx.session.configurePolicy(
        ctx.session.syntheticTargets(sample, at: index).oracle(fill: oracle.fill))
    }
    let report: FeedReport
    do {
      report = try ctx.session.feed(sample)
    } catch {
      if active is OraclePolicy { try? ctx.session.configurePolicy(active) }
      throw error
    }
    ctx.repl.syntheticQuestion = (sample.question, sample.answer)
    ctx.repl.syntheticFed = FedSynthetic(
      task: task, seed: seed, size: size, question: question,
      questionKind: sample.questionKind, index: index)
    let what =
      "\(task.rawValue) seed=\(seed) "
      + (task.isClip
        ? "(\(sample.images.count) frames of \(size.side)×\(size.side))"
        : "(\(size.side)×\(size.side))")
    VisionCommands.printFeed(ctx, what: what, report, unit: VisionCommands.unitName(ctx.session))
    ctx.print("question: \(sample.question)")
    ctx.print("expected: \(sample.answer)")
  }

  /// `policy` given as the user chose it: an oracle gets the targets of the last synthetic
  /// sample fed (still in the context); any other policy is returned as it is.
  static func withTargets(_ ctx: CommandContext, _ policy: any EvictionPolicy) throws
    -> any EvictionPolicy
  {
    guard let oracle = policy as? OraclePolicy else { return policy }
    guard let fed = ctx.repl.syntheticFed,
      fed.index.input < ctx.session.nextVisualInput.input
    else {
      throw ReplError(
        "policy oracle", "needs a synthetic input (feed synthetic TASK seed=N) to know its target")
    }
    return try ctx.session.syntheticTargets(try fed.sample(ctx), at: fed.index).oracle(
      fill: oracle.fill)
  }

  static let ask = Command(
    "synthetic", verb: "ask", summary: "ask the last synthetic question and check the answer",
    help: """
      Asks the question of the sample `feed synthetic` fed last (as `ask "QUESTION"` would), \
      then prints the expected answer, the first word of the reply ((nothing) when nothing was \
      generated) and whether they agree.
      """,
    options: SessionCommands.generationOptions
  ) { ctx in
    guard let (question, answer) = ctx.repl.syntheticQuestion else {
      throw ctx.error("no synthetic sample fed yet (feed synthetic TASK seed=N)")
    }
    let options = SessionCommands.generationOptions(ctx.args)
    var reply = ""
    try SessionCommands.stream(ctx) { onText in
      try ctx.session.ask(question, options: options) {
        reply += $0
        onText($0)
      }
    }
    for line in verdict(reply: reply, expected: answer) { ctx.print(line) }
  }

  /// What `synthetic ask` prints after the reply. What was generated and what was expected stay
  /// on separate fields, so an empty reply never reads as the expected answer.
  static func verdict(reply: String, expected: String) -> [String] {
    var lines: [String] = []
    if reply.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
      lines.append("(nothing generated)")
    }
    let word = repliedWord(reply)
    lines.append(
      "expected: \(expected), replied: \(word.isEmpty ? "(nothing)" : word) (\(word == expected ? "correct" : "wrong"))"
    )
    return lines
  }

  /// The reply's first word, as the answer is judged ("" when nothing was generated).
  static func repliedWord(_ reply: String) -> String {
    let spaced = reply.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    let first = SyntheticVocabulary.words(spaced).first { $0 != "?" } ?? ""
    return first.trimmingCharacters(in: .punctuationCharacters)
  }

  static let write = Command(
    "synthetic", verb: "write", summary: "write a dataset of synthetic samples (PNG + jsonl)",
    help: """
      Writes count= samples of TASK, seeds seed=, seed+1, …, into DIR (created if missing): \
      TASK-SEED.png per image, TASK-SEED/frame-NNN.png per clip frame, and samples.jsonl with \
      one JSON object per line (task, seed, images relative to DIR, question, answer, kind, \
      width, height, frames, target {shape, color, x, y, radius}, and region, span [first, \
      last] and time, or count, as the task has them). samples.jsonl is written last, \
      atomically: a folder that has one holds a whole dataset, and is refused unless force=on.
      """,
    positionals: [Positional("DIR", .path(extensions: []), help: "the dataset folder"), task],
    options: [Option("count", .int(1...1_000_000), required: true, help: "how many samples")]
      + sampleOptions
      + [Option("force", .toggle, default: "off", help: "overwrite a dataset already in DIR")]
  ) { ctx in
    let typed = ctx.args.positional("DIR")!
    let dir = ctx.resolve(typed)
    let (task, size, question) = parse(ctx)
    let seed = ctx.args.int("seed")
    let count = ctx.args.int("count")
    guard seed <= Int.max - count else { throw ctx.error("seed + count must stay below 2^63") }
    let jsonl = (dir as NSString).appendingPathComponent("samples.jsonl")
    let fm = FileManager.default
    if fm.fileExists(atPath: jsonl) && !ctx.args.toggle("force") {
      throw ctx.error("\(typed) already holds a dataset (samples.jsonl); force=on overwrites it")
    }
    // Bad sizes fail here, before anything is written.
    var sample = try generate(ctx, task, seed: seed, size, question)
    func fail(_ what: String, _ error: Error) -> ReplError {
      let reason = (error as NSError).localizedFailureReason ?? error.localizedDescription
      return ctx.error("\(what): \(reason)")
    }
    do {
      try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    } catch { throw fail("\(typed): cannot create the folder", error) }
    var lines: [String] = []
    var files = 0
    for i in 0..<count {
      if ctx.session.cancellation.isSet {
        throw ctx.error("stopped after \(i) of \(count) samples (samples.jsonl not written)")
      }
      ctx.progress("sample \(i + 1)/\(count)")
      if i > 0 { sample = try generate(ctx, task, seed: seed + i, size, question) }
      let paths = sample.imagePaths
      for (path, png) in zip(paths, try sample.pngFiles()) {
        let full = (dir as NSString).appendingPathComponent(path)
        do {
          try fm.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        } catch { throw fail("\(typed)/\(path): cannot write", error) }
        // Through a temporary file: a write that fails (a full disk, the file size limit)
        // says why and leaves no half-written PNG.
        try AtomicFile.replace(
          full, with: [UInt8](png), command: ctx.command.name, displayPath: "\(typed)/\(path)",
          sync: false)
      }
      files += paths.count
      lines.append(sample.jsonLine)
    }
    ctx.progress(nil)
    try AtomicFile.replace(
      jsonl, with: Array(lines.map { $0 + "\n" }.joined().utf8), command: ctx.command.name,
      displayPath: "\(typed)/samples.jsonl")
    ctx.print(
      "wrote \(Format.plural(count, "\(task.rawValue) sample")) (\(Format.plural(files, "PNG file"))) and \(typed)/samples.jsonl"
    )
  }

  static let vocab = Command(
    "synthetic", verb: "vocab", summary: "the closed vocabulary of questions and answers",
    help: """
      Prints every word a synthetic question or answer can hold, sorted, on one line \
      (what=words; text splits into words at spaces, and '?' is a word of its own), the \
      answer words alone (what=answers), or the question templates, one per line as TASK \
      KIND TEMPLATE with {shape}, {shapes} and {color} slots (what=templates).
      """,
    options: [
      Option(
        "what", .choice(["words", "answers", "templates"]), default: "words",
        help: "which list to print")
    ]
  ) { ctx in
    switch ctx.args.string("what") {
    case "answers": ctx.print(SyntheticVocabulary.allAnswers.joined(separator: " "))
    case "templates":
      for t in SyntheticVocabulary.templates {
        ctx.print("\(t.task.rawValue) \(t.kind.rawValue) \(t.text)")
      }
    default: ctx.print(SyntheticVocabulary.allWords.joined(separator: " "))
    }
  }
}

/// A synthetic sample fed, kept as what generates it rather than as its pixels: the generator
/// gives the same sample for the same request, and a clip of thousands of frames would otherwise
/// stay in memory beside the next one generated.
public struct FedSynthetic: Sendable {
  public let task: SyntheticTask
  public let seed: Int
  public let size: SyntheticSize
  /// The question kind asked for (nil: the seed's own), as given to the generator.
  public let question: QuestionKind?
  /// The kind of the question the sample asks.
  public let questionKind: QuestionKind
  /// The indices the sample's tokens carry in the context.
  public let index: VisualInputIndex

  func sample(_ ctx: CommandContext) throws -> SyntheticSample {
    try SyntheticCommands.generate(ctx, task, seed: seed, size, question)
  }
}

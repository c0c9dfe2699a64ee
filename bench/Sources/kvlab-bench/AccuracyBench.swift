// The accuracy benchmark of the embedded model: held-out synthetic tasks
// answered under each cache setting, one JSON line per (sample, setting). bench/accuracy.py runs
// it, aggregates the lines into the README's tables and plots, and checks the CI subset.
import Foundation
import KVCache
import KVEngine
import KVModels
import KVTasks

enum AccuracyBench {
  /// What one run of the benchmark covers.
  struct Plan {
    var folder: String
    var experiment: String
    var tasks: [SyntheticTask]
    var count: Int
    var seed0: Int
    var fractions: [Double]
    var policies: [String]
    var modes: [PrefillMode]
    var threads: Int
  }

  /// One cache setting, its budget given as a share of the sample's visual tokens.
  struct Setting {
    var label: String
    var fraction: Double?
    var policy = "snapkv"
    var mode = PrefillMode.full
    var block: BlockSize? = .units(1)
    var bulk = false
    var schedule = BudgetSchedule.uniform
    /// Lower the input's resolution instead (needle-image: the longest edge in pixels;
    /// needle-video: keep every N-th frame). Nil: the input as generated.
    var resolution: Int?
    /// With `resolution`: compress the full-resolution input to the token count the lowered
    /// one has, instead of lowering it.
    var matchResolution = false
    /// The control: every image replaced by flat gray of the same size (full cache), so the
    /// model can answer only from the question: near chance if it reads the pixels.
    var blank = false
    /// What SnapKV scores fed blocks with: "block", "template", or "question" (the sample's
    /// own question, known before the images).
    var proxy = "block"
  }

  /// The settings of an experiment for one task.
  static func settings(_ plan: Plan, task: SyntheticTask) -> [Setting] {
    let full = Setting(label: "full", fraction: nil, block: nil)
    func budgeted(_ p: String, _ m: PrefillMode, _ f: Double) -> Setting {
      Setting(label: "\(p) \(m) \(percent(f))", fraction: f, policy: p, mode: m)
    }
    switch plan.experiment {
    case "main":
      var blank = Setting(label: "blank image", fraction: nil, block: nil)
      blank.blank = true
      return [full, blank]
        + plan.policies.flatMap { p in
          plan.modes.flatMap { m in plan.fractions.map { budgeted(p, m, $0) } }
        }
    case "oracle":
      // The upper bound next to the policies it bounds, capped, from the same run: SnapKV
      // (proxy=block), KeyDiff, and the oracle (the target's tokens, KeyDiff fills the rest).
      return [full]
        + plan.fractions.flatMap { f in
          ["snapkv", "keydiff", "oracle"].map { budgeted($0, .capped, f) }
        }
    case "bound":
      // The oracle told the question: SnapKV scoring from the sample's own question, alone and
      // as the oracle's fill (the target's tokens first). The best of what knows the question,
      // so the bound a query-aware policy is measured against.
      return [full]
        + plan.fractions.flatMap { f in
          [("snapkv", "question"), ("oracle-snapkv", "oracle+question")].map { p, name in
            var s = budgeted(p, .capped, f)
            s.proxy = "question"
            s.label = "\(name) capped \(percent(f))"
            return s
          }
        }
    case "structure":
      // Structure-aware policies, capped: grid pooling and per-unit floors over SnapKV told the
      // question and over KeyDiff (no query), and on the clip InfiniPot-V, with value norm and
      // with the question's attention filling. SnapKV told the question alone and the oracle it
      // fills are `bound`'s (deterministic: the same seeds give the same answers there).
      var policies: [(label: String, policy: String, proxy: String)] = [
        ("gridpool+question", "gridpool base=snapkv kernel=3 pooling=max", "question"),
        ("gridpool keydiff", "gridpool base=keydiff kernel=3 pooling=max", "block"),
        ("floors+question", "floors base=snapkv floor=0.5", "question"),
        ("floors keydiff", "floors base=keydiff floor=0.5", "block"),
      ]
      if task == .needleVideo {
        policies += [
          ("infinipot", "infinipot", "block"),
          ("infinipot+question", "infinipot fill=snapkv", "question"),
        ]
      }
      return [full]
        + plan.fractions.flatMap { f in
          policies.map { p in
            var s = budgeted(p.policy, .capped, f)
            s.proxy = p.proxy
            s.label = "\(p.label) capped \(percent(f))"
            return s
          }
        }
    case "blocks":
      // The block-size ablation at one budget: the structure's own unit, then 3 fixed sizes.
      let f = ablationFraction
      let unit = task.isClip ? "frame" : "tile"
      return [full]
        + [
          (BlockSize.units(1), unit), (.tokens(16), "16"), (.tokens(64), "64"),
          (.tokens(256), "256"),
        ]
        .map { b, name in
          var s = budgeted("snapkv", .capped, f)
          s.block = b
          s.label = "block \(name)"
          return s
        }
    case "bulk":
      let f = ablationFraction
      return [full]
        + [PrefillMode.sequential, .capped].flatMap { m in
          [false, true].map { bulk in
            var s = budgeted("snapkv", m, f)
            s.bulk = bulk
            s.label = "\(m) \(bulk ? "bulk" : "block")"
            return s
          }
        }
    case "proxy":
      // SnapKV capped with each proxy, at every budget: does knowing the question help?
      return [full]
        + plan.fractions.flatMap { f in
          ["block", "question", "template"].map { proxy in
            var s = budgeted("snapkv", .capped, f)
            s.proxy = proxy
            s.label = "proxy=\(proxy) \(percent(f))"
            return s
          }
        }
    case "schedule":
      return [full]
        + plan.fractions.flatMap { f in
          [BudgetSchedule.uniform, .pyramid(slope: 0.5)].map { schedule in
            var s = budgeted("snapkv", .capped, f)
            s.schedule = schedule
            s.label = "\(schedule == .uniform ? "static" : "pyramid 0.5") \(percent(f))"
            return s
          }
        }
    case "resolution":
      // needle-image: 512 px → 256, 128, 64 (17, 5, 1 tiles); needle-video: every 2nd, 4th,
      // 8th frame. Each against SnapKV capped at the token count the lowered input has.
      let steps = task == .needleImage ? [256, 128, 64] : task == .needleVideo ? [2, 4, 8] : []
      return [full]
        + steps.flatMap { r -> [Setting] in
          let name = task == .needleImage ? "\(r) px" : "1/\(r) frames"
          var lower = Setting(label: "resolution \(name)", fraction: nil, block: nil)
          lower.resolution = r
          var compress = Setting(label: "snapkv capped to \(name)", fraction: nil)
          compress.mode = .capped
          compress.resolution = r
          compress.matchResolution = true
          return [lower, compress]
        }
    default:
      return []
    }
  }

  /// A policy by name, optionally with `key=value` options after it ("floors floor=0.5");
  /// SnapKV with an 8-query observation window (its default, 32, is more than a single-tile
  /// task's whole budget: 16 visual tokens and about as much text; the structure policies'
  /// SnapKV base defaults to 8). "oracle" fills with KeyDiff, "oracle-NAME" with NAME (SnapKV's
  /// window 8 too); its targets are given per sample in `answer`.
  static func policy(_ text: String) throws -> any EvictionPolicy {
    let words = text.split(separator: " ").map(String.init)
    let name = words.first ?? ""
    if name.hasPrefix("oracle-") {
      return OraclePolicy(fill: try policy(String(text.dropFirst("oracle-".count))))
    }
    var options: [String: String] = name == "snapkv" ? ["window": "8"] : [:]
    for w in words.dropFirst() {
      let kv = w.split(separator: "=", maxSplits: 1).map(String.init)
      guard kv.count == 2 else { throw Failure("policy '\(text)': '\(w)' is not key=value") }
      options[kv[0]] = kv[1]
    }
    return try PolicyCatalog.make(name, options: options)
  }

  /// The budget of the block-size and bulk ablations.
  static let ablationFraction = 0.10

  static func percent(_ f: Double) -> String { "\(Int((f * 100).rounded()))%" }

  /// The reply's first word, as `synthetic ask` judges it.
  static func firstWord(_ reply: String) -> String {
    reply.lowercased().split(whereSeparator: { !($0.isLetter || $0 == "-") }).first.map(String.init)
      ?? ""
  }

  struct Outcome {
    var answer: String
    var visualTokens: Int
    /// nil when the reply was cut by a refusal (its question's tokens were not reported).
    var promptTokens: Int?
    var kvPeak: Int
    /// The oracle's target tokens (nil for the other policies).
    var targets: Int?
    /// A refusal after the first word of the reply was complete (see `answer`).
    var lateRefusal: String?
  }

  /// The reply's first word once another piece has begun after it; nil while it may go on.
  static func completeFirstWord(_ reply: String) -> String? {
    let chars = Array(reply.lowercased())
    func inWord(_ c: Character) -> Bool { c.isLetter || c == "-" }
    guard let start = chars.firstIndex(where: inWord),
      let end = chars[start...].firstIndex(where: { !inWord($0) })
    else { return nil }
    return String(chars[start..<end])
  }

  /// Feeds `sample` (lowered to `resolution` if given) into a fresh session over `parent`'s
  /// model with `settings`, asks its question greedily, and reports the reply.
  static func answer(
    _ parent: Session, _ sample: SyntheticSample, _ settings: CacheSettings, resolution: Int?
  ) throws -> Outcome {
    let session = try parent.sharingModel(settings: settings)
    var targets: Int?
    if let oracle = settings.policy as? OraclePolicy {
      // Its targets are this sample's, at the indices the fresh session's first feed takes.
      let t = try session.syntheticTargets(sample)
      try session.configurePolicy(t.oracle(fill: oracle.fill))
      targets = t.keys.count
    }
    let fed: FeedReport
    if let r = resolution, sample.task == .needleVideo {
      fed = try session.feedFrames(
        stride(from: 0, to: sample.images.count, by: r).map { sample.images[$0] })
    } else if let r = resolution, sample.task == .needleImage {
      guard let idefics = parent.vision as? Idefics3Model else {
        throw Failure("resolution: needs an Idefics3 model")
      }
      let original = idefics.splitter.longestEdge
      idefics.splitter.longestEdge = r
      defer { idefics.splitter.longestEdge = original }
      fed = try session.feed(sample)
    } else {
      fed = try session.feed(sample)
    }
    var reply = ""
    let asked: GenerationReport
    do {
      asked = try session.ask(
        sample.question, options: GenerationOptions(maxTokens: 4), onText: { reply += $0 })
    } catch let refusal {
      // A refusal once the reply's first word is complete (the next piece began another word)
      // comes too late to change the answer, which is that word: a reply that runs on holds
      // its tokens in SnapKV's window, and closing the turn adds protected text, so a budget
      // sized for the prompt can refuse the turn's end. The answer stands; the refusal is kept.
      guard completeFirstWord(reply) != nil else { throw refusal }
      return Outcome(
        answer: reply, visualTokens: fed.visualTokens, promptTokens: nil,
        kvPeak: session.meter.reading(.kv).highWater, targets: targets,
        lateRefusal: "\(refusal)")
    }
    return Outcome(
      answer: asked.text, visualTokens: fed.visualTokens,
      promptTokens: fed.tokens + asked.prefillTokens, kvPeak: session.meter.reading(.kv).highWater,
      targets: targets)
  }

  static func run(_ plan: Plan) throws {
    let parent = Session(options: EngineOptions(threads: plan.threads))
    _ = try parent.load(plan.folder)
    for task in plan.tasks {
      let list = settings(plan, task: task)
      guard !list.isEmpty else { continue }
      for seed in plan.seed0..<(plan.seed0 + plan.count) {
        let sample = try SyntheticGenerator.generate(task, seed: UInt64(seed))
        // The full cache first: its visual and text token counts size every budget.
        let full = try answer(parent, sample, CacheSettings(), resolution: nil)
        let textTokens = full.promptTokens! - full.visualTokens
        var lowered: [Int: Outcome] = [:]  // resolution → the lowered input's full-cache run
        for s in list {
          var outcome: Outcome?
          var budget: Int?
          var failure: String?
          do {
            if s.blank {
              var gray = sample
              gray.images = sample.images.map {
                RGBImage(
                  width: $0.width, height: $0.height,
                  pixels: Array(repeating: 128, count: $0.pixels.count))
              }
              outcome = try answer(parent, gray, CacheSettings(), resolution: nil)
            } else if s.fraction == nil && s.mode == .full && s.resolution == nil {
              outcome = full
            } else if let r = s.resolution, !s.matchResolution {
              outcome = try answer(parent, sample, CacheSettings(), resolution: r)
              lowered[r] = outcome
            } else {
              let visual: Int
              if let r = s.resolution {
                guard let low = lowered[r] else { throw Failure("resolution \(r) not run yet") }
                visual = low.visualTokens
              } else {
                visual = max(1, Int((s.fraction! * Double(full.visualTokens)).rounded()))
              }
              budget = textTokens + visual
              var c = CacheSettings(
                budget: .tokens(budget!), policy: try policy(s.policy), mode: s.mode,
                block: s.block, retention: RetentionOptions(protectText: true))
              c.bulk = s.bulk
              c.schedule = s.schedule
              switch s.proxy {
              case "question": c.proxy = .question(sample.question)
              case "template": c.proxy = .template
              default: c.proxy = .block
              }
              outcome = try answer(parent, sample, c, resolution: nil)
            }
          } catch {
            // A setting this sample cannot run (e.g. a pyramid layer's share below the protected
            // text) is reported, not fatal: the table shows it.
            failure = "\(error)"
          }
          emit([
            "kind": "accuracy", "experiment": plan.experiment, "task": task.rawValue,
            "seed": seed, "question_kind": sample.questionKind.rawValue, "setting": s.label,
            "fraction": s.fraction ?? NSNull(), "policy": s.mode == .full ? NSNull() : s.policy,
            "mode": s.mode.rawValue, "budget": budget ?? NSNull(),
            "visual_tokens": outcome?.visualTokens ?? NSNull(), "text_tokens": textTokens,
            "expected": sample.answer, "answer": outcome?.answer ?? NSNull(),
            "correct": outcome.map { firstWord($0.answer) == sample.answer } ?? false,
            "kv_peak": outcome?.kvPeak ?? NSNull(), "error": failure ?? NSNull(),
            "oracle_targets": outcome?.targets ?? NSNull(),
            "late_refusal": outcome?.lateRefusal ?? NSNull(),
          ])
        }
      }
    }
  }
}

import Foundation
import KVEngine
import KVModels

/// Images, clips and the layout of what was fed: `feed image`, `feed frames`, `show tokens`,
/// `info model`, `info models`.
public enum VisionCommands {
  public static var all: [Command] { [feedImage, feedFrames, showTokens, infoModel, infoModels] }

  static let feedImage = Command(
    "feed", verb: "image", summary: "add an image to the context",
    help: """
      Decodes PATH (PNG, JPEG or PPM), preprocesses it as the loaded vision-language model's \
      processor does (Idefics3: tiles plus a global image; LLaVA: one image; Qwen2-VL: a grid \
      of merged patches) and prefills it into the chat's user turn, the vision tower running \
      one tile or image per block. split=off feeds an Idefics3 image as one tile.
      """,
    positionals: [
      Positional(
        "PATH", .path(extensions: ["png", "jpg", "jpeg", "ppm", "pnm"]), help: "the image file")
    ],
    options: [
      Option(
        "split", .toggle, help: "Idefics3: cut the image into tiles (default: the model's setting)"),
      SessionCommands.timing,
    ]
  ) { ctx in
    let typed = ctx.args.positional("PATH")!
    let split = ctx.args.string("split").map { $0 == "on" }
    let report = try ctx.session.feedImage(ctx.resolve(typed), split: split)
    printFeed(ctx, what: "image \(typed)", report, unit: unitName(ctx.session))
  }

  static let feedFrames = Command(
    "feed", verb: "frames", summary: "add a clip: a folder of frames or a video",
    help: """
      Feeds the frames of a clip into the chat's user turn: the images of a folder in natural \
      name order, or the frames of a video (ffmpeg must be installed), decoded as a stream \
      while they are prefilled: at most fps= frames a second, between start= and end= \
      (seconds or [h:]mm:ss). every=N keeps every N-th frame, max=N the first N kept. \
      times=on (a video, SmolVLM) states each frame's time in the prompt as SmolVLM's \
      processor does.
      """,
    positionals: [
      Positional("SOURCE", .path(extensions: []), help: "a folder of images, or a video file")
    ],
    options: [
      Option(
        "fps", .number(0.001...240), default: "1", help: "at most this many frames a second of video"
      ),
      Option("every", .int(1...100_000), default: "1", help: "keep every N-th frame"),
      Option("max", .int(1...100_000), help: "keep at most N frames"),
      Option("start", .text, placeholder: "TIME", help: "a video: from this time (seconds or mm:ss)"),
      Option("end", .text, placeholder: "TIME", help: "a video: up to this time (seconds or mm:ss)"),
      Option(
        "times", .toggle, default: "on",
        help: "a video: frame times in the prompt where the family states them"),
      SessionCommands.timing,
    ]
  ) { ctx in
    let typed = ctx.args.positional("SOURCE")!
    let source = ctx.resolve(typed)
    let every = ctx.args.int("every")
    let max = ctx.args.string("max").map { _ in ctx.args.int("max") }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else {
      throw ctx.error(
        "\(typed): " + BoundedFile.missing(source, notThere: "no such file or folder"))
    }
    if !isDirectory.boolValue {
      return try VideoFeed.run(ctx, typed: typed, path: source, every: every, max: max)
    }
    for name in ["start", "end"] where ctx.args.string(name) != nil {
      throw ctx.error("\(name)= applies to a video, not a folder of frames")
    }
    let frames = try Frames.names(folder: source, every: every, max: max)
    let report = try ctx.session.feedFrames(frames)
    printFeed(
      ctx, what: "\(frames.names.count) frames of \(typed)", report, unit: unitName(ctx.session))
    if ctx.args.toggle("timing") {
      ctx.print(
        "time: frame decoding and preprocessing \(Mask.seconds(report.pixelSeconds)), vision tower \(Mask.seconds(report.visionSeconds)), decoder \(Mask.seconds(Swift.max(0, report.seconds - report.pixelSeconds - report.visionSeconds)))"
      )
    }
  }

  /// What the loaded family calls one visual unit.
  static func unitName(_ session: Session) -> String { session.family?.visualUnit ?? "image" }

  static func printFeed(_ ctx: CommandContext, what: String, _ r: FeedReport, unit: String) {
    var line =
      "fed \(what): \(Format.plural(r.visualUnits, unit)), \(r.visualTokens) visual + \(r.tokens - r.visualTokens) text tokens (context \(r.contextTokens)"
      + (r.waitingBlocks > 0 ? "; \(Format.plural(r.waitingBlocks, "block")) waiting)" : ")")
    if ctx.args.toggle("timing") {
      line +=
        ", \(Mask.seconds(r.seconds)) (\(Mask.rate(Double(r.tokens) / Swift.max(r.seconds, 1e-9), unit: "tok/s")))"
    }
    ctx.print(line)
    // A share of the visual tokens became tokens for this input: say what it came to.
    if ctx.session.cacheSettings.share != nil, r.visualTokens > 0 {
      ctx.print(CacheCommands.budgetLine(ctx.session))
    }
  }

  static let showTokens = Command(
    "show", verb: "tokens", summary: "the layout of the context: text, images, tiles, frames",
    help: """
      Lists what the context holds, one row per fed input: its kind, tokens, and for images \
      and clips the visual units (tiles, frames) with their token grids; text rows show the \
      start of the text.
      """
  ) { ctx in
    let s = ctx.session
    guard s.model != nil else { throw EngineError.noModel }
    var rows = [["input", "kind", "tokens", "what"]]
    var byInput: [Int: [PromptSegment]] = [:]
    for seg in s.segments {
      // Text runs merge across feeds: split them back by input.
      let origins = seg.origins
      var start = 0
      for i in 1...seg.count
      where i == seg.count || origins[i].input != origins[start].input {
        byInput[origins[start].input, default: []].append(
          seg.visual == nil ? seg.slice(start..<i) : seg)
        start = i
      }
    }
    for input in byInput.keys.sorted() {
      let segs = byInput[input]!
      let total = segs.reduce(0) { $0 + $1.count }
      let units = segs.filter { $0.visual != nil }
      if units.isEmpty {
        let modality = segs.first?.firstOrigin?.modality ?? .text
        let text = s.tokenizer?.decode(segs.flatMap(\.tokens)) ?? ""
        rows.append([
          String(input), modality.rawValue, String(total), Format.preview(text, width: 44),
        ])
        continue
      }
      let first = units[0].firstOrigin!
      let visual = units.reduce(0) { $0 + $1.count }
      let grids = Set(units.map { "\($0.visual!.tokenRows)×\($0.visual!.tokenCols)" }).sorted()
      let frames = Set(units.compactMap { $0.firstOrigin?.frame }).count
      var what =
        first.modality == .video ? "clip \(first.image ?? 0): " : "image \(first.image ?? 0): "
      if frames > 0 && unitName(s) != "temporal patch" {
        what += "\(Format.plural(frames, "frame")), "
      }
      what +=
        "\(Format.plural(units.count, unitName(s))) of \(grids.joined(separator: ", ")) tokens"
      what += "; \(total - visual) text"
      rows.append([String(input), first.modality.rawValue, String(total), what])
    }
    // Counted as `feed` counts: visual tokens are the vision tower's (the units' grids); the
    // image markers and prompts around them are text.
    let visual = s.segments.visualTokens
    for line in Format.table(rows, left: [1, 3]) { ctx.print(line) }
    ctx.print(
      "context: \(s.contextCount) tokens (\(visual) visual + \(s.contextCount - visual) text)")
  }

  static let infoModel = Command(
    "info", verb: "model", summary: "the loaded model: architecture, sizes, vision tokens",
    help: """
      Prints the loaded model's family, decoder shape, parameter count (decoder and vision \
      tower), KV cache bytes per token, and what one image, tile or frame costs in tokens.
      """
  ) { ctx in
    let s = ctx.session
    guard let model = s.model, let m = ctx.repl.loaded else { throw EngineError.noModel }
    let c = model.config
    ctx.print("model: \(m.name) (\(m.architecture))")
    ctx.print(
      "decoder: \(c.architecture), \(c.layers) layers, hidden \(c.hiddenSize), \(c.heads) heads / \(c.kvHeads) KV heads × \(c.headDim), vocab \(c.vocabularySize)"
        + (c.mropeSection.map { ", M-RoPE sections \($0)" } ?? ""))
    let vision = s.vision?.visionParameterCount ?? 0
    ctx.print(
      "parameters: \(Format.count(m.parameters)) (decoder \(Format.count(m.parameters - vision)), vision \(Format.count(vision)))"
    )
    ctx.print("kv cache: \(Format.bytes(c.kvBytesPerToken)) per token (float32, all layers)")
    if let v = s.vision {
      ctx.print("vision: \(v.unitDescription)")
    } else {
      ctx.print("vision: none (a text model)")
    }
  }

  static let infoModels = Command(
    "info", verb: "models", summary: "the model families kvlab loads",
    help: """
      Lists every model family kvlab can load: the config.json model_type values a Hugging \
      Face folder may have, the GGUF general.architecture values a file may have, what one \
      visual unit is called in `feed` and `show tokens`, and the family's own feed options. \
      A family not listed is refused by `load` with the same list.
      """
  ) { ctx in
    var rows = [["family", "model_type (folder)", "architecture (gguf)", "visual unit", "options"]]
    for f in ModelRegistry.families {
      rows.append([
        f.name, f.modelTypes.joined(separator: ", "),
        f.ggufArchitectures.isEmpty ? "-" : f.ggufArchitectures.joined(separator: ", "),
        f.visualUnit ?? "- (text)",
        f.feedOptions.isEmpty ? "-" : f.feedOptions.map { "\($0)=" }.joined(separator: " "),
      ])
    }
    for line in Format.table(rows, left: [0, 1, 2, 3, 4]) { ctx.print(line) }
  }
}

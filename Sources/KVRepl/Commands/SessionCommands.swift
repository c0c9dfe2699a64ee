import Foundation
import KVEngine
import KVModels
import KVTensor

/// The engine session's commands: load, feed, ask, generate, tokenize, logits, reset.
public enum SessionCommands {
  public static var all: [Command] {
    [load, feedText, ask, generate, tokenize, logits, fidelity, reset]
  }

  static let timing = Option(
    "timing", .toggle, default: "off", help: "also print times and rates (as ~values)")

  static let load = Command(
    "load", summary: "load a model",
    help: """
      Loads a GGUF model (llama-architecture text decoders such as SmolLM2) or a Hugging Face \
      model folder (a llama/qwen2 decoder, or an Idefics3/SmolVLM, LLaVA or Qwen2-VL \
      vision-language model). Without PATH, loads the embedded default model, \
      \(EngineOptions.embeddedModel) (kvlab's own small vision-language model, in weights/). \
      Replaces any loaded model and empties the context. A GGUF's matrices stay in the \
      precision the file stores them in, read in place from the file (precision=stored); \
      precision=f32 dequantizes them to float32, the reference path whose numerics match \
      transformers' (`fidelity` measures the distance between the two). A folder's F16 and \
      BF16 matrices likewise stay 16-bit, read in place (exact in float32).
      """,
    positionals: [
      Positional(
        "PATH", .path(extensions: []), optional: true, help: "a .gguf file or a model folder")
    ],
    options: [
      Option(
        "precision", .choice(["stored", "f32"]), default: "stored",
        help: "GGUF matrices as stored (quantized, mapped) or dequantized to float32"),
      timing,
    ]
  ) { ctx in
    let typed = ctx.args.positional("PATH")
    let precision = WeightPrecision(rawValue: ctx.args.string("precision") ?? "stored") ?? .stored
    let report = try ctx.session.load(typed.map { ctx.resolve($0) }, precision: precision)
    ctx.repl.loaded = report
    var weights = Format.bytes(report.weightBytes + report.mappedWeightBytes)
    if report.mappedWeightBytes > 0 {
      weights += " (\(report.weightFormat), \(Format.bytes(report.mappedWeightBytes)) mapped)"
    }
    var line =
      "loaded \(report.name): \(report.architecture), \(report.layers) layers, vocab \(report.vocabulary), \(Format.count(report.parameters)) parameters, weights \(weights)"
    if ctx.args.toggle("timing") { line += ", \(Mask.seconds(report.seconds))" }
    ctx.print(line)
  }

  static let fidelity = Command(
    "fidelity", summary: "the fast path's distance from the float32 reference",
    help: """
      Loads the model's GGUF a second time dequantized to float32 (the reference path, whose \
      numerics match transformers') and runs both on the parity prompts: the largest |Δ| over \
      every logit of every position, how many positions have the same argmax, whether each \
      prompt's greedy continuation of STEPS tokens is the same, and the perplexity of the \
      longest prompt under both. The context and cache are left as they are. Values that \
      depend on the kernel path print as ~values.
      """,
    options: [
      Option("steps", .int(1...256), default: "16", help: "greedy tokens per prompt")
    ]
  ) { ctx in
    let steps = ctx.args.int("steps")
    let r = try ctx.session.fidelity(steps: steps)
    let m = ctx.repl.loaded
    ctx.print(
      "fidelity: \(m?.weightFormat ?? "stored") on ~\(KernelPath.current.rawValue), prefill \(PrefillKernel.current.rawValue), against float32 (the same file dequantized), \(r.prompts) prompts"
    )
    func e(_ v: Float) -> String { "~" + String(format: "%.2e", v) }
    ctx.print(
      "logits: max |Δ| \(e(r.prefillMaxAbsDiff)) over \(r.positions) prompt positions, \(e(r.decodeMaxAbsDiff)) over the greedy steps (largest |logit| \(String(format: "%.1f", r.maxAbsLogit))); argmax equal at \(r.argmaxAgreements)/\(r.positions)"
    )
    var greedy = "greedy \(steps) tokens: \(r.greedyIdentical)/\(r.prompts) prompts identical"
    if !r.greedyDivergence.isEmpty {
      greedy +=
        " (" + r.greedyDivergence.map { "\($0.0) differs from token \($0.1 + 1)" }.joined(separator: ", ") + ")"
    }
    ctx.print(greedy)
    let change = 100 * (r.perplexity / r.referencePerplexity - 1)
    ctx.print(
      "perplexity (\(Fidelity.prompts.last!.name), \(r.textTokens) tokens): ~\(String(format: "%.4f", r.perplexity)) against ~\(String(format: "%.4f", r.referencePerplexity)) (~\(String(format: "%+.3f", change))%)"
    )
  }

  static let feedText = Command(
    "feed", verb: "text", summary: "add text to the context",
    help: """
      Tokenizes TEXT and prefills it into the cache. By default the text goes into the chat's \
      user turn (opened with the template's system prompt when needed), so a later `ask` \
      asks about it; raw=on appends the text as is, without any template. `@FILE` feeds the \
      text of a file (UTF-8, at most 8 MiB; relative to the script's folder when replayed); \
      write `@@` for a text that starts with @.
      """,
    positionals: [Positional("TEXT", .text, help: "the text, in quotes, or @FILE")],
    options: [
      Option("raw", .toggle, default: "off", help: "append the text without the chat template"),
      timing,
    ]
  ) { ctx in
    let report = try ctx.session.feedText(
      try textArgument(ctx, ctx.args.positional("TEXT")!), raw: ctx.args.toggle("raw"))
    var line =
      "fed \(report.tokens) tokens (context \(report.contextTokens)"
      + (report.waitingBlocks > 0
        ? "; \(Format.plural(report.waitingBlocks, "block")) waiting)" : ")")
    if ctx.args.toggle("timing") {
      line +=
        ", \(Mask.seconds(report.seconds)) (\(Mask.rate(Double(report.tokens) / max(report.seconds, 1e-9), unit: "tok/s")))"
    }
    ctx.print(line)
  }

  /// The most a file fed with `feed text @FILE` may hold: far more text than any context takes,
  /// and little enough to read whole before tokenizing.
  static let maxTextFileBytes = 8 << 20

  /// TEXT as typed, or for `@FILE` the file's text: one-line errors name the file (missing, a
  /// folder, too large, binary, not UTF-8, empty).
  static func textArgument(_ ctx: CommandContext, _ typed: String) throws -> String {
    guard typed.hasPrefix("@") else { return typed }
    if typed.hasPrefix("@@") { return String(typed.dropFirst()) }
    let name = String(typed.dropFirst())
    guard !name.isEmpty else {
      throw ctx.error("@ needs a file name (feed text @notes.txt; @@ for a text starting with @)")
    }
    let path = ctx.resolve(name)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ctx.error("\(name): " + BoundedFile.missing(path, notThere: "no such file"))
    }
    if isDirectory.boolValue { throw ctx.error("\(name): is a folder, not a text file") }
    let bytes: [UInt8]
    do {
      bytes = try BoundedFile.contents(path, limit: maxTextFileBytes, kind: "a text to feed")
    } catch let f as BoundedFile.Failure {
      throw ctx.error("\(name): \(f.message)")
    }
    if let nul = bytes.firstIndex(of: 0) {
      throw ctx.error("\(name): a binary file (a NUL byte at offset \(nul)), not text")
    }
    guard var text = String(validating: bytes, as: UTF8.self) else {
      throw ctx.error("\(name): not UTF-8 text")
    }
    if text.unicodeScalars.first == "\u{FEFF}" { text = String(text.unicodeScalars.dropFirst()) }
    guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
      throw ctx.error("\(name): no text to feed (the file is empty or blank)")
    }
    return text
  }

  static let generationOptions: [Option] = [
    Option("max", .int(1...65536), default: "64", help: "most tokens to generate"),
    Option("temp", .number(0...10), default: "0", help: "sampling temperature; 0 = greedy"),
    Option(
      "top-k", .int(0...1_000_000), default: "0", help: "sample among the k likeliest; 0 = all"),
    Option(
      "top-p", .number(0...1), default: "1", help: "sample from the smallest set with this mass"),
    Option("seed", .int(0...4_294_967_295), default: "0", help: "random seed for sampling"),
    timing,
  ]

  static func generationOptions(_ args: Arguments) -> GenerationOptions {
    GenerationOptions(
      maxTokens: args.int("max"), temperature: Float(args.number("temp")), topK: args.int("top-k"),
      topP: Float(args.number("top-p")), seed: UInt64(args.int("seed")))
  }

  /// Streams generated text, ends its line, and prints timings when asked.
  static func stream(
    _ ctx: CommandContext, _ body: (_ onText: (String) -> Void) throws -> GenerationReport
  ) throws {
    var last = "\n"
    let report = try body { piece in
      guard !piece.isEmpty else { return }
      ctx.write(piece)
      last = piece
    }
    if !last.hasSuffix("\n") { ctx.write("\n") }
    if ctx.args.toggle("timing") {
      var parts: [String] = []
      if report.prefillTokens > 0 {
        parts.append(
          "prefill \(report.prefillTokens) tokens \(Mask.seconds(report.prefillSeconds)) (\(Mask.rate(Double(report.prefillTokens) / max(report.prefillSeconds, 1e-9), unit: "tok/s")))"
        )
      }
      parts.append(
        "decode \(report.tokens.count) tokens \(Mask.seconds(report.decodeSeconds)) (\(Mask.rate(Double(report.tokens.count) / max(report.decodeSeconds, 1e-9), unit: "tok/s")))"
      )
      parts.append("stop \(report.stoppedOnEOS ? "eos" : "max")")
      ctx.print(parts.joined(separator: ", "))
    }
  }

  static let ask = Command(
    "ask", summary: "ask a question and stream the answer",
    help: """
      Closes the chat's user turn with QUESTION, opens the assistant turn and generates until \
      the end-of-turn token or max tokens, printing text as it comes. Greedy by default \
      (temp=0), so the answer replays exactly. Ctrl-C stops it, keeping what was generated.
      """,
    positionals: [Positional("QUESTION", .text, help: "the question, in quotes")],
    options: generationOptions
  ) { ctx in
    let question = ctx.args.positional("QUESTION")!
    let options = generationOptions(ctx.args)
    try stream(ctx) { try ctx.session.ask(question, options: options, onText: $0) }
  }

  static let generate = Command(
    "generate", summary: "continue the context",
    help: """
      Generates a continuation of what was fed, without any chat template, until the \
      end-of-text token or max tokens; each token is fed back into the cache.
      """,
    options: generationOptions
  ) { ctx in
    let options = generationOptions(ctx.args)
    try stream(ctx) { try ctx.session.generate(options: options, onText: $0) }
  }

  static let tokenize = Command(
    "tokenize", summary: "print the token ids of text",
    help: "Prints the ids the loaded model's tokenizer gives TEXT (no chat template, nothing fed).",
    positionals: [Positional("TEXT", .text, help: "the text, in quotes")]
  ) { ctx in
    let ids = try ctx.session.tokenize(ctx.args.positional("TEXT")!)
    ctx.print(ids.isEmpty ? "(no tokens)" : ids.map(String.init).joined(separator: " "))
  }

  static let logits = Command(
    "logits", summary: "write the logits of every fed position to .npy",
    help: """
      Recomputes the logits of every position of the context and writes them to FILE.npy as a \
      float32 NumPy array of shape (tokens, vocabulary). The session's cache is not changed.
      """,
    options: [
      Option(
        "out", .path(extensions: ["npy"]), required: true, placeholder: "FILE.npy",
        help: "the file to write")
    ]
  ) { ctx in
    let typed = ctx.args.string("out")!
    let shape = try ctx.session.writeLogits(to: ctx.resolve(typed))
    ctx.print("wrote \(typed): \(shape.rows) x \(shape.cols) float32")
  }

  static let reset = Command(
    "reset", summary: "empty the context and the cache",
    help: "Forgets everything fed and generated; the model stays loaded."
  ) { ctx in
    ctx.session.reset()
    // The synthetic sample fed is gone with the context (its question, its target).
    ctx.repl.syntheticFed = nil
    ctx.repl.syntheticQuestion = nil
    ctx.print("context cleared")
  }
}

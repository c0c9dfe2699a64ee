import Foundation
import KVCache
import KVModels
import KVTensor

/// How far the fast path (matrices at their stored precision, kvlab's own kernels) is from the
/// float32 reference path (the same file dequantized, matching transformers): every logit of
/// the parity prompts, the greedy continuation of each, and the perplexity of a fixed text.
public struct FidelityReport: Sendable {
  public var prompts: Int
  /// Prompt positions compared (every column of each), prefilled as one block.
  public var positions: Int
  /// The largest |Δlogit| over the prompts' positions (the prefill: sgemm on dequantized tiles)
  /// and over the decode steps (the matrix-vector kernels on the stored bytes).
  public var prefillMaxAbsDiff: Float
  public var decodeMaxAbsDiff: Float
  public var maxAbsDiff: Float { max(prefillMaxAbsDiff, decodeMaxAbsDiff) }
  /// The reference's largest |logit|, for scale.
  public var maxAbsLogit: Float
  public var argmaxAgreements: Int
  public var greedySteps: Int
  /// Prompts whose greedy continuation is the same token for token: at every step the fast
  /// path's argmax is the reference's (both are fed the reference's tokens, so the logits of
  /// every step can be compared).
  public var greedyIdentical: Int
  /// The first differing step of each prompt that differs (name, step from 0).
  public var greedyDivergence: [(String, Int)]
  public var textTokens: Int
  public var perplexity: Double
  public var referencePerplexity: Double
}

public enum Fidelity {
  /// The prompts of the transformers parity fixtures (scripts/gen_parity_fixtures.py; a test
  /// keeps the two equal). The last is also the perplexity text.
  public static let prompts: [(name: String, text: String)] = [
    (
      "capital",
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ),
    (
      "story",
      "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker named Elias. Every morning he opened the shutters of his shop, wound the hundred clocks that lined its walls, and waited for the first customer of the day."
    ),
    (
      "long",
      "The history of mathematics spans thousands of years. Early civilizations such as the Babylonians and Egyptians developed arithmetic and geometry for trade, astronomy and construction. The Greeks introduced deductive proof: Euclid's Elements organized geometry into axioms and theorems, and Archimedes estimated pi by inscribing polygons in a circle. In India, mathematicians created the decimal place-value system with zero, which spread through the Islamic world, where al-Khwarizmi wrote the treatise that gave algebra its name. During the Renaissance, European mathematicians solved cubic equations, and Descartes joined algebra and geometry with coordinates. Newton and Leibniz independently invented calculus in the seventeenth century, opening the way to modern physics. In the nineteenth century, Gauss, Riemann and Cauchy made analysis rigorous, while Galois and Abel founded group theory while studying polynomial equations. The twentieth century brought set theory, Godel's incompleteness theorems, and the birth of computer science with Turing's abstract machines. Today mathematics underpins cryptography, machine learning, and the simulation of everything from weather to galaxies. Unicode too: naïve café, Ελληνικά, 日本語のテキスト, emoji 🚀✨ and tabs\tand  double  spaces. Students often meet these ideas in a different order: counting, then fractions, then algebra, and only later the proofs that hold it all together. def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# 12345 + 67890 = 80235"
    ),
  ]

  /// Compares `fast` with `reference` (the same weights) on `prompts`, greedy for `steps`.
  public static func measure(
    fast: LlamaModel, reference: LlamaModel, tokenizer: BPETokenizer, steps: Int = 16,
    cancellation: CancellationFlag? = nil
  ) throws -> FidelityReport {
    var report = FidelityReport(
      prompts: prompts.count, positions: 0, prefillMaxAbsDiff: 0, decodeMaxAbsDiff: 0,
      maxAbsLogit: 0, argmaxAgreements: 0,
      greedySteps: steps, greedyIdentical: 0, greedyDivergence: [], textTokens: 0, perplexity: 0,
      referencePerplexity: 0)
    let vocab = fast.config.vocabularySize
    for (index, prompt) in prompts.enumerated() {
      let ids = tokenizer.encode(prompt.text)
      let (fastPrefill, fastCache) = try run(fast, ids)
      let (referencePrefill, referenceCache) = try run(reference, ids)
      var a = fastPrefill
      var b = referencePrefill
      for r in 0..<ids.count {
        report.prefillMaxAbsDiff = max(report.prefillMaxAbsDiff, maxAbsDiff(a.row(r), b.row(r), vocab))
        for v in 0..<vocab { report.maxAbsLogit = max(report.maxAbsLogit, abs(b.row(r)[v])) }
        if argmax(a.row(r), vocab) == argmax(b.row(r), vocab) { report.argmaxAgreements += 1 }
      }
      report.positions += ids.count
      if index == prompts.count - 1 {
        report.textTokens = ids.count
        report.perplexity = perplexity(a, ids, vocab)
        report.referencePerplexity = perplexity(b, ids, vocab)
      }
      // Greedy: both fed the reference's choice, one token at a time (the decode kernels).
      var fastRow = a.row(ids.count - 1)
      var referenceRow = b.row(ids.count - 1)
      var divergence: Int?
      for step in 0..<steps {
        if cancellation?.isSet == true { throw EngineError.cancelled("fidelity stopped") }
        let next = argmax(referenceRow, vocab)
        if divergence == nil && argmax(fastRow, vocab) != next { divergence = step }
        if step == steps - 1 { break }
        let position = ids.count + step
        a = try decode(fast, next, at: position, cache: fastCache)
        b = try decode(reference, next, at: position, cache: referenceCache)
        fastRow = a.row(0)
        referenceRow = b.row(0)
        report.decodeMaxAbsDiff = max(report.decodeMaxAbsDiff, maxAbsDiff(fastRow, referenceRow, vocab))
      }
      if let divergence {
        report.greedyDivergence.append((prompt.name, divergence))
      } else {
        report.greedyIdentical += 1
      }
    }
    return report
  }

  /// Every position's logits for `ids` from an empty cache.
  private static func run(_ model: LlamaModel, _ ids: [Int]) throws -> (Matrix, DenseKVCache) {
    let c = model.config
    let cache = DenseKVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, meter: nil)
    let logits = try model.forward(
      model.embed(ids, meter: nil), positions: Array(0..<ids.count),
      origins: ids.map { _ in TokenOrigin(modality: .text, input: 0) }, cache: cache,
      logits: .all, meter: nil)!
    return (logits, cache)
  }

  /// The logits after feeding `token` at `position`.
  private static func decode(_ model: LlamaModel, _ token: Int, at position: Int, cache: DenseKVCache)
    throws -> Matrix
  {
    try model.forward(
      model.embed([token], meter: nil), positions: [position],
      origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
      meter: nil)!
  }

  private static func maxAbsDiff(
    _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int
  ) -> Float {
    var worst: Float = 0
    for v in 0..<n { worst = max(worst, abs(x[v] - y[v])) }
    return worst
  }

  private static func argmax(_ row: UnsafeMutablePointer<Float>, _ n: Int) -> Int {
    Sampler.argmax(UnsafeBufferPointer(start: row, count: n))
  }

  /// exp of the mean negative log-likelihood of ids[1...] given the logits before each.
  private static func perplexity(_ logits: Matrix, _ ids: [Int], _ vocab: Int) -> Double {
    var nll = 0.0
    for t in 1..<ids.count {
      let row = logits.row(t - 1)
      var peak = -Double.infinity
      for v in 0..<vocab { peak = max(peak, Double(row[v])) }
      var sum = 0.0
      for v in 0..<vocab { sum += Foundation.exp(Double(row[v]) - peak) }
      nll += peak + Foundation.log(sum) - Double(row[ids[t]])
    }
    return Foundation.exp(nll / Double(ids.count - 1))
  }
}

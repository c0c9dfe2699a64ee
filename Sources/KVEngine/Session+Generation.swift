import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
  // MARK: generation

  /// Asks a question in the chat: closes the user turn (opening one if none is open), opens the
  /// assistant turn, generates, and closes the assistant turn so another question can follow.
  public func ask(
    _ question: String, options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard tokenizer != nil else { throw EngineError.noModel }
    try requireNothingPending()
    // The question and the answer are not stepped through: the answer needs them prefilled.
    let wasStepping = stepping
    stepping = false
    defer { stepping = wasStepping }
    let was = turnState
    let wasAsk = lastAsk
    let fed = contextCount
    lastAsk = AskPoint(
      question: question, options: options, segments: segments,
      nextRopePosition: nextRopePosition, feeds: feeds, visualInputs: visualInputs,
      userTurnOpen: userTurnOpen, lastFedVisual: lastFedVisual)
    let start = Date()
    let input = feeds
    let piece = openUserTurn() + question + chat.turnEnd + chat.assistantPrefix
    userTurnOpen = false
    lastFedVisual = false
    let prompt = try textSegment(piece, input: input)
    do {
      // The question itself is the query now.
      try restoringTurnOnRefusal(was) { try prefill([prompt], proxy: false) }
    } catch {
      if contextCount == fed { lastAsk = wasAsk }
      throw error
    }
    feeds += 1
    let prefillSeconds = Date().timeIntervalSince(start)
    var report = try generate(options: options, onText: onText)
    // Close the assistant turn; the stop token the model produced is not in the cache yet.
    try prefill([try textSegment(chat.turnEnd, input: input)], proxy: false)
    report.prefillTokens = prompt.count
    report.prefillSeconds = prefillSeconds
    return report
  }

  /// Continues the context: each chosen token is fed back, until a stop token (the chat's end
  /// of turn, EOS) or `maxTokens`. The stop token itself is not fed (`ask` closes the turn).
  public func generate(
    options: GenerationOptions, onText: (String) -> Void
  ) throws -> GenerationReport {
    guard let model, let tokenizer, let cache = activeCache else { throw EngineError.noModel }
    try requireNothingPending()
    guard var logits = lastLogits else {
      throw EngineError.invalid("nothing fed yet; feed text first")
    }
    let start = Date()
    var sampler = Sampler(options: options)
    var decoder = tokenizer.makeStreamingDecoder()
    var produced: [Int] = []
    var text = ""
    var stoppedOnEOS = false
    while produced.count < options.maxTokens {
      if cancellation.isSet {
        throw EngineError.cancelled("generation stopped after \(produced.count) tokens")
      }
      let next = sampler.sample(UnsafeBufferPointer(logits.storage.buffer))
      if stopIDs.contains(next) {
        stoppedOnEOS = true
        break
      }
      let segment = try tokenSegment([next], input: feeds, modality: .generated)
      var out: Matrix?
      try mapCacheError { out = try run([segment], model: model, cache: cache, logits: .last) }
      guard let out else { break }
      append(segment)
      logits = out
      lastLogits = out
      produced.append(next)
      let piece = decoder.append(next)
      text += piece
      onText(piece)
    }
    text += decoder.finish()
    return GenerationReport(
      text: text, tokens: produced, stoppedOnEOS: stoppedOnEOS, prefillTokens: 0,
      prefillSeconds: 0, decodeSeconds: Date().timeIntervalSince(start))
  }
}

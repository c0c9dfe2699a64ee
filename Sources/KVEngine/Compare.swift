import Foundation
import KVCache
import KVTensor

/// One re-run of `compare`: the settings, the answer, and what it cost.
public struct CompareRun: Sendable {
  public var settings: String
  public var answer: String
  /// The meter's K/V and activation high-water marks over the re-run (its own meter: the
  /// shared weights are not in it).
  public var kvPeak: Int
  public var activationsPeak: Int
  /// The process's peak RSS over the re-run (VmHWM after resetting it; nil without /proc).
  public var rssPeak: Int?
  /// Prefilling the inputs and the question.
  public var prefillSeconds: Double
}

extension Session {
  /// Re-runs the inputs and the question of the last `ask` (or, given `question`, the current
  /// inputs and that question) under `settings` in a separate session over the same model, and
  /// answers greedily with up to `maxTokens` tokens. This session is left as it was.
  public func rerun(settings: CacheSettings, question: String?, maxTokens: Int) throws -> CompareRun
  {
    guard model != nil else { throw EngineError.noModel }
    let point = question == nil ? lastAsk : nil
    guard let question = question ?? point?.question else {
      throw EngineError.invalid("nothing asked yet: ask a question first, or give question=\"...\"")
    }
    ProcessMemory.resetPeakRSS()
    let start = Date()
    let child = try fork(settings: settings, from: point)
    let fed = Date().timeIntervalSince(start)
    let report = try child.ask(
      question, options: GenerationOptions(maxTokens: maxTokens), onText: { _ in })
    return CompareRun(
      settings: settings.description, answer: report.text,
      kvPeak: child.meter.reading(.kv).highWater,
      activationsPeak: child.meter.reading(.activations).highWater,
      rssPeak: ProcessMemory.peakRSS(), prefillSeconds: fed + report.prefillSeconds)
  }
}

extension Session {
  /// A new session over this one's loaded model (weights and vision tower shared, its own meter
  /// and cache) with `settings` and nothing fed: what a benchmark runs each setting in. What
  /// this session holds stays here (the new one starts from an empty context).
  public func sharingModel(settings: CacheSettings) throws -> Session {
    let empty = AskPoint(
      question: "", options: GenerationOptions(), segments: [], nextRopePosition: 0, feeds: 0,
      visualInputs: 0, userTurnOpen: false, lastFedVisual: false)
    return try fork(settings: settings, from: empty)
  }
}

import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

// MARK: re-running under other settings (compare)

/// Where a question was asked: the context as laid out before it, and the chat's turn state.
public struct AskPoint {
  public let question: String
  public let options: GenerationOptions
  let segments: SegmentLog
  let nextRopePosition: Int
  let feeds: Int
  let visualInputs: Int
  let userTurnOpen: Bool
  let lastFedVisual: Bool
}

extension Session {
  /// A new session over the same model (weights shared, not copied or charged again), with
  /// its own meter and a cache made for `settings`, into which the context of `point` (or the
  /// current context) is prefilled again from its segments: images re-read and re-encoded.
  /// This session is not touched.
  func fork(settings: CacheSettings, from point: AskPoint?) throws -> Session {
    guard let model, let tokenizer else { throw EngineError.noModel }
    try requireNothingPending()
    let child = Session(options: options, cancellation: cancellation)
    child.model = model
    child.vision = vision
    child.tokenizer = tokenizer
    child.modelPath = modelPath
    child.chat = chat
    child.stopIDs = stopIDs
    child.cacheSettings = settings
    try mapCacheError { child.kv = try child.cacheBuilder(model.config).make(settings) }
    let fed = point?.segments ?? segments
    child.nextRopePosition = point?.nextRopePosition ?? nextRopePosition
    child.feeds = point?.feeds ?? feeds
    child.visualInputs = point?.visualInputs ?? visualInputs
    child.userTurnOpen = point?.userTurnOpen ?? userTurnOpen
    child.lastFedVisual = point?.lastFedVisual ?? lastFedVisual
    try child.refill(fed)
    return child
  }
}

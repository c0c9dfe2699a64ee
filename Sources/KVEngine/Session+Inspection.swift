import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
  // MARK: inspection

  /// Writes the logits of every position of the context to a float32 .npy (`tokens × vocab`),
  /// recomputed in prefill-sized chunks over a scratch cache so the session's own cache is
  /// untouched and the table never sits in memory whole.
  public func writeLogits(to path: String) throws -> (rows: Int, cols: Int) {
    guard let model else { throw EngineError.noModel }
    try requireNothingPending()
    guard contextCount > 0 else { throw EngineError.invalid("nothing fed yet; feed text first") }
    let c = model.config
    let scratch = cacheBuilder(c).full()
    // The writer fills a temporary file and renames it into place at the end: on any error
    // (a write refused, the file size limit, Ctrl-C) it is removed and `path` is untouched.
    let writer: NPYWriter
    do {
      writer = try NPYWriter(path: path, shape: [contextCount, c.vocabularySize])
    } catch let failure as NPYWriter.Failure {
      throw EngineError.invalid(failure.description)
    }
    defer { writer.abandon() }
    do {
      var done = 0
      // Clips are laid out again as their blocks are reached, never whole.
      try PromptParts(segments).blocks(BlockScheduler(blockSize: options.prefillChunk)) { block in
        if cancellation.isSet {
          throw EngineError.cancelled("logits stopped after \(done) positions")
        }
        guard let out = try run(block, model: model, cache: scratch, logits: .all, at: done) else {
          return
        }
        try writer.append(UnsafeBufferPointer(out.storage.buffer))
        done += out.rows
      }
      try writer.close()
    } catch let failure as NPYWriter.Failure {
      throw EngineError.invalid(failure.description)
    }
    return (contextCount, c.vocabularySize)
  }

  /// What the cache holds now: tokens and bytes.
  public var cacheSummary: (tokens: Int, capacity: Int, bytes: Int)? {
    kv?.summary
  }
}

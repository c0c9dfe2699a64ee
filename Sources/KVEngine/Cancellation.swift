import Synchronization

/// Set from a signal handler (Ctrl-C) or another thread; the engine checks it between blocks
/// and generated tokens, so a cancelled command leaves the session consistent.
public final class CancellationFlag: Sendable {
  private let flag = Atomic<Bool>(false)
  public init() {}
  public func set() { flag.store(true, ordering: .relaxed) }
  public func clear() { flag.store(false, ordering: .relaxed) }
  public var isSet: Bool { flag.load(ordering: .relaxed) }
}

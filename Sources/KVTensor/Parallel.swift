import CKVKernels
import Dispatch
import Foundation

/// Work split across a fixed number of threads, deterministically: every kernel run through
/// `Parallel` computes each output element with the same operations in the same order whatever
/// the thread count, so results are bitwise identical for 1, 2 or n threads. No reduction ever
/// crosses a work item, so the order in which threads pick items cannot change a result.
///
/// The thread count is the one configured for BLAS (`BLAS.threads`, set from `--threads`): one
/// knob for the whole process, no extra global state.
public enum Parallel {
  /// Runs `body(item, worker)` for every item in 0..<count on up to `threads` threads; worker
  /// (in 0..<threads) names the thread, for per-thread scratch. Items are handed out in order,
  /// one at a time, to whichever thread is free (list costly items first). `body` must only
  /// write memory that its item or its worker owns, and what an item computes must not depend
  /// on the worker.
  public static func forEach(
    _ count: Int, threads: Int = BLAS.threads, _ body: (_ item: Int, _ worker: Int) -> Void
  ) {
    let workers = min(max(1, threads), count)
    if workers <= 1 {
      for i in 0..<count { body(i, 0) }
      return
    }
    let next = ItemCounter()
    region(workers) { worker in
      while true {
        let i = next.take()
        if i >= count { return }
        body(i, worker)
      }
    }
  }

  /// Splits `rows` into contiguous chunks of at least `grain` rows, one chunk per thread, and
  /// calls `body(range)` for each. For row-wise kernels whose rows are independent.
  public static func rows(
    _ rows: Int, grain: Int = 1, threads: Int = BLAS.threads, _ body: (Range<Int>) -> Void
  ) {
    let chunks = min(max(1, threads), max(1, rows / max(1, grain)))
    if chunks <= 1 {
      if rows > 0 { body(0..<rows) }
      return
    }
    region(chunks) { c in
      body((rows * c / chunks)..<(rows * (c + 1) / chunks))
    }
  }

  /// body(w) for w in 0..<workers at once, on the kernels' thread pool (`kvk_parallel`).
  static func region(_ workers: Int, _ body: (Int) -> Void) {
    withoutActuallyEscaping(body) { body in
      let job = Job(body)
      withExtendedLifetime(job) {
        kvk_parallel(
          workers,
          { context, worker in
            Unmanaged<Job>.fromOpaque(context!).takeUnretainedValue().body(worker)
          }, Unmanaged.passUnretained(job).toOpaque())
      }
    }
  }

  private final class Job {
    let body: (Int) -> Void
    init(_ body: @escaping (Int) -> Void) { self.body = body }
  }

  /// Runs `body` with OpenBLAS restricted to one thread (so that several of our threads can
  /// call it at once without oversubscribing the cores), restoring the count afterwards.
  /// OpenBLAS 0.3.21 (pthread) is safe to call concurrently with one thread per call:
  /// `KernelsTests.testConcurrentSingleThreadedBLASEqualsSerial` checks threaded results against
  /// serial ones bit for bit. The count is process-wide: two independent callers overlapping
  /// here could restore it in the wrong order (one forward at a time per process, as now).
  public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
    let saved = BLAS.threads
    if saved == 1 { return try body() }
    BLAS.setThreads(1)
    defer { BLAS.setThreads(saved) }
    return try body()
  }
}

/// A shared counter handing out work-item indices.
private final class ItemCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var value = 0

  func take() -> Int {
    lock.lock()
    defer { lock.unlock() }
    let v = value
    value += 1
    return v
  }
}

import Foundation

/// The planned frames of a video, decoded by ffmpeg into a pipe (rawvideo rgb24 at the video's
/// own size) and read one at a time. A reader thread keeps up to `lookahead` frames decoded
/// ahead, so decoding the next frames overlaps whatever the caller does with the current one;
/// nothing else is held. `close()` (and deinit) kills and reaps ffmpeg.
public final class VideoStream: @unchecked Sendable {
  public let plan: VideoPlan
  private let child: Subprocess
  private let condition = NSCondition()
  private var queue: [RGBImage] = []
  private var ended = false
  private var closed = false
  private var failure: ImageError? = nil
  private let lookahead: Int
  private let readerDone = DispatchSemaphore(value: 0)
  /// Frames handed out so far.
  public private(set) var delivered = 0
  /// Seconds `next()` spent waiting for ffmpeg (decoding not hidden behind the caller's work).
  public private(set) var waitSeconds = 0.0

  /// Starts ffmpeg on `plan`'s frames.
  public init(
    _ plan: VideoPlan, lookahead: Int = 2,
    searchPath: String? = ProcessInfo.processInfo.environment["PATH"]
  ) throws {
    self.plan = plan
    self.lookahead = max(1, lookahead)
    guard let ffmpeg = Frames.findFFmpeg(searchPath: searchPath) else {
      throw ImageError(path: plan.path, message: Frames.ffmpegMissing)
    }
    child = try Subprocess(ffmpeg, Self.arguments(plan), name: plan.path)
    Thread.detachNewThread { [self] in readLoop() }
  }

  /// ffmpeg's arguments for `plan`. "file:" makes ffmpeg read the path as a plain file (never
  /// a protocol or an option); -copyts keeps the container's timestamps, which the select
  /// filter reads. With start= in a seekable container, -ss before -i jumps to the keyframe
  /// before the first planned frame (less a millisecond) instead of decoding the video from its
  /// beginning; -noaccurate_seek passes every frame from that keyframe on, so the select
  /// filter still picks the planned frames exactly, by their own timestamps, and the prompt's
  /// times are theirs.
  public static func arguments(_ plan: VideoPlan) -> [String] {
    var seek: [String] = []
    if plan.seekable, plan.selection.start != nil, let first = plan.times.first,
      first - plan.origin > 1e-3
    {
      seek = ["-noaccurate_seek", "-ss", String(format: "%.6f", first - plan.origin - 1e-3)]
    }
    return ["-hide_banner", "-loglevel", "error", "-nostdin", "-copyts"] + seek + [
      "-i", "file:" + plan.path, "-map", "0:v:0", "-vf", plan.selection.filter(origin: plan.origin),
      "-fps_mode", "passthrough", "-frames:v", String(plan.frameCount),
      "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
  }

  private func readLoop() {
    let bytes = plan.frameBytes
    defer { readerDone.signal() }
    while true {
      condition.lock()
      while queue.count >= lookahead && !closed { condition.wait() }
      let stop = closed
      condition.unlock()
      if stop { return }
      var pixels = [UInt8](repeating: 0, count: bytes)
      let got = pixels.withUnsafeMutableBytes { child.readFully(into: $0) }
      condition.lock()
      defer {
        condition.broadcast()
        condition.unlock()
      }
      if got == bytes {
        queue.append(RGBImage(width: plan.width, height: plan.height, pixels: pixels))
        continue
      }
      ended = true
      if got > 0 || closed { return }
      return
    }
  }

  /// The next planned frame, or nil after the last. Errors: ffmpeg failed (its last message),
  /// or the video ended before all planned frames (a damaged or truncated file).
  public func next() throws -> RGBImage? {
    if let failure { throw failure }
    if delivered == plan.frameCount {
      close()
      return nil
    }
    let t0 = Date()
    condition.lock()
    while queue.isEmpty && !ended && !closed { condition.wait() }
    let frame = queue.isEmpty ? nil : queue.removeFirst()
    condition.broadcast()
    condition.unlock()
    waitSeconds += Date().timeIntervalSince(t0)
    if let frame {
      delivered += 1
      if delivered == plan.frameCount { close() }
      return frame
    }
    // The pipe ended early: ffmpeg's own message, else a short count.
    let (status, lines) = child.finish()
    let last = lines.last.map { VideoPlan.clean($0, path: plan.path) }
    let error = ImageError(
      path: plan.path,
      message: status != 0
        ? "ffmpeg failed (exit status \(status)) after \(delivered) of \(plan.frameCount) frames: \(last ?? "no message")"
        : "the video ended after \(delivered) of \(plan.frameCount) frames (damaged or truncated"
          + (last.map { ": \($0))" } ?? ")"))
    failure = error
    close()
    throw error
  }

  /// Stops ffmpeg (killed if it still runs, then reaped) and the reader. Safe to call again.
  public func close() {
    condition.lock()
    let already = closed
    closed = true
    condition.broadcast()
    condition.unlock()
    if already { return }
    child.stop()  // the pipe then ends, so a reader blocked in read() returns
    readerDone.wait()
    condition.lock()
    queue.removeAll()
    condition.unlock()
  }

  deinit { close() }
}

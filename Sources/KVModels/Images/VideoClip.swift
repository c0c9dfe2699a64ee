import Foundation

/// The planned frames of a video as image sources for a clip's layout: frame i is decoded when
/// the prefill reaches it, from one `VideoStream` read in order. A later pass over the frames (a
/// cache rebuilt under new settings, a logits dump, a comparison) asks for them from the start
/// again: the stream is restarted then. Nothing is held per frame; only the stream's few frames
/// of lookahead.
public final class VideoClip: @unchecked Sendable {
  public let plan: VideoPlan
  private let lookahead: Int
  private let searchPath: String?
  private let lock = NSLock()
  private var stream: VideoStream?
  /// Called with each frame index as it is decoded for the first pass (progress).
  public var onFrame: (@Sendable (Int) -> Void)?
  /// Seconds spent waiting for ffmpeg, over all passes.
  public private(set) var decodeWaitSeconds = 0.0
  /// Frames decoded, over all passes (a rebuild decodes them again).
  public private(set) var framesDecoded = 0

  public init(
    _ plan: VideoPlan, lookahead: Int = 2,
    searchPath: String? = ProcessInfo.processInfo.environment["PATH"]
  ) {
    self.plan = plan
    self.lookahead = lookahead
    self.searchPath = searchPath
  }

  /// Planned frame `index` as a source at the video's size, decoded when its pixels are asked.
  public func source(_ index: Int) -> ImageSource {
    ImageSource(width: plan.width, height: plan.height) { [self] in try frame(index) }
  }

  /// Frame `index`: read on from the open stream, or from a new one when `index` lies behind it.
  public func frame(_ index: Int) throws -> RGBImage {
    lock.lock()
    defer { lock.unlock() }
    if let s = stream, s.delivered > index {
      s.close()
      stream = nil
    }
    if stream == nil {
      stream = try VideoStream(plan, lookahead: lookahead, searchPath: searchPath)
    }
    let s = stream!
    while true {
      let before = s.waitSeconds
      let image: RGBImage?
      do {
        image = try s.next()
      } catch {
        stream = nil
        throw error
      }
      decodeWaitSeconds += s.waitSeconds - before
      guard let image else {
        stream = nil
        throw ImageError(path: plan.path, message: "frame \(index + 1) is past the clip's end")
      }
      framesDecoded += 1
      if s.delivered - 1 == index {
        if s.delivered == plan.frameCount { stream = nil }  // closed by the stream itself
        onFrame?(index)
        return image
      }
    }
  }

  /// Stops the open stream, if any (ffmpeg killed and reaped).
  public func close() {
    lock.lock()
    defer { lock.unlock() }
    stream?.close()
    stream = nil
  }

  deinit { stream?.close() }
}

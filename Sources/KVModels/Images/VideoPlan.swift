import Foundation

/// Which frames of a video a feed takes: at most `fps` a second (a frame is taken when it lies
/// at least 1/fps after the last one taken), from `start` to before `end` (seconds from the
/// video's first timestamp), then every `every`-th of those, then the first `max`.
public struct VideoSelection: Sendable, Equatable {
  public var fps: Double
  public var every: Int
  public var max: Int?
  public var start: Double?
  public var end: Double?

  public init(
    fps: Double = 1, every: Int = 1, max: Int? = nil, start: Double? = nil, end: Double? = nil
  ) {
    self.fps = fps
    self.every = every
    self.max = max
    self.start = start
    self.end = end
  }

  /// The indices into `times` (ascending presentation times, seconds) this selection takes,
  /// with `origin` the time that start= and end= count from. `VideoStream` asks ffmpeg's
  /// select filter for the same frames with the same double arithmetic (`filter(origin:)`).
  func pick(_ times: [Double], origin: Double) -> [Int] {
    let step = 1.0 / fps
    let lo = start.map { origin + $0 }
    let hi = end.map { origin + $0 }
    var previous: Double? = nil
    var taken: [Int] = []
    var seen = 0
    for (i, t) in times.enumerated() {
      if let lo, !(t >= lo) { continue }
      if let hi, !(t < hi) { continue }
      if let p = previous, !(t - p >= step) { continue }
      previous = t
      if seen % every == 0 { taken.append(i) }
      seen += 1
      if let max, taken.count == max { break }
    }
    return taken
  }

  /// The ffmpeg filter that passes the frames `pick` takes (before `max`, which is ffmpeg's
  /// -frames:v): a time window and spacing on the frames' own timestamps, then every N-th.
  func filter(origin: Double) -> String {
    func g(_ x: Double) -> String { String(format: "%.17g", x) }
    var terms: [String] = []
    if let start { terms.append("gte(t\\,\(g(origin + start)))") }
    if let end { terms.append("lt(t\\,\(g(origin + end)))") }
    terms.append("(isnan(prev_selected_t)+gte(t-prev_selected_t\\,\(g(1.0 / fps))))")
    var f = "select='\(terms.joined(separator: "*"))'"
    if every > 1 { f += ",select='not(mod(n\\,\(every)))'" }
    return f
  }
}

/// A video as ffprobe describes it, and the frames a selection takes from it: found by reading
/// the container's packet timestamps (no decoding), so the frame count and times are known
/// before anything is fed.
public struct VideoPlan: Sendable, Equatable {
  public var path: String
  public var codec: String
  public var width: Int
  public var height: Int
  /// The container's first timestamp (seconds); start=, end= and the prompt's times count from it.
  public var origin: Double
  /// The video's length in seconds (the container's duration, else the last frame's time).
  public var duration: Double
  /// Presentation times (seconds, from the container) of the frames taken, in order.
  public var times: [Double]
  public var selection: VideoSelection
  /// Whether ffmpeg's -ss lands where asked in this container: one that indexes its keyframes
  /// (MP4/MOV, Matroska/WebM). Elsewhere (MPEG-TS, raw streams) its seek can land past the
  /// time, so the stream decodes from the beginning and the select filter skips to start=.
  public var seekable = false

  public var frameCount: Int { times.count }
  /// Times in the prompt: seconds from the video's start.
  public var promptTimes: [Double] { times.map { Swift.max(0, $0 - origin) } }
  public var frameBytes: Int { width * height * 3 }

  /// Probes `path` with ffprobe (next to ffmpeg on `searchPath`) and plans `selection`.
  /// Errors (one line each, naming the file): no such file, ffmpeg missing, not a video, no
  /// video stream, a codec ffmpeg cannot decode, a frame over `maxPixels`, a damaged or truncated
  /// container, no frames in the selection.
  public static func probe(
    _ path: String, selection: VideoSelection, maxPixels: Int = ImageDecoder.defaultMaxPixels,
    searchPath: String? = ProcessInfo.processInfo.environment["PATH"]
  ) throws -> VideoPlan {
    func fail(_ m: String) -> ImageError { ImageError(path: path, message: m) }
    let s = selection
    guard s.fps.isFinite, s.fps > 0 else { throw fail("fps= must be a positive number, got \(s.fps)") }
    guard s.every >= 1 else { throw fail("every= must be at least 1, got \(s.every)") }
    if let max = s.max, max < 1 { throw fail("max= must be at least 1, got \(max)") }
    if let a = s.start, !(a.isFinite && a >= 0) { throw fail("start= must be 0 or more seconds") }
    if let b = s.end, !(b.isFinite && b > (s.start ?? 0)) {
      throw fail("end= must come after start=")
    }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
      throw fail("no such file")
    }
    guard !isDir.boolValue else { throw fail("is a folder: use it as a folder of frames") }
    guard let ffprobe = Frames.findTool("ffprobe", searchPath: searchPath) else {
      throw fail(Frames.ffmpegMissing)
    }
    let run = try Subprocess.capture(
      ffprobe,
      [
        "-hide_banner", "-v", "error", "-select_streams", "v:0",
        "-show_entries", "stream=codec_type,codec_name,width,height,time_base",
        "-show_entries", "format=start_time,duration,format_name", "-show_entries", "packet=pts,dts,flags",
        "-of", "compact", "file:" + path,
      ], name: path)
    let complaint = run.errorLines.last.map { Self.clean($0, path: path) }
    guard run.status == 0 else {
      throw fail("not a video ffmpeg can read (\(complaint ?? "ffprobe exit status \(run.status)"))")
    }

    var stream: [String: String]? = nil
    var format: [String: String] = [:]
    var ticks: [Int64] = []
    for line in run.output.split(whereSeparator: \.isNewline) {
      let fields = line.split(separator: "|")
      guard let kind = fields.first else { continue }
      var kv: [String: String] = [:]
      for f in fields.dropFirst() {
        if let eq = f.firstIndex(of: "=") { kv[String(f[..<eq])] = String(f[f.index(after: eq)...]) }
      }
      switch kind {
      case "stream": stream = kv
      case "format": format = kv
      case "packet":
        if kv["flags"]?.contains("D") == true { continue }  // demuxer-discarded (edit lists)
        if let t = Int64(kv["pts"] ?? "") ?? Int64(kv["dts"] ?? "") { ticks.append(t) }
      default: continue
      }
    }
    guard let stream else { throw fail("has no video stream") }
    let codec = stream["codec_name"] ?? "unknown"
    guard codec != "unknown", !codec.isEmpty else {
      throw fail("unknown video codec: ffmpeg has no decoder for it")
    }
    guard let w = Int(stream["width"] ?? ""), let h = Int(stream["height"] ?? ""), w > 0, h > 0
    else { throw fail("the video stream has no frame size (codec \(codec))") }
    guard w <= 1 << 16, h <= 1 << 16, w * h <= maxPixels else {
      throw fail("frames of \(w)×\(h) are over the limit of \(maxPixels) pixels")
    }
    // A damaged or truncated container: refused before anything is fed.
    if let complaint { throw fail("damaged or truncated (\(complaint))") }
    let tb = (stream["time_base"] ?? "").split(separator: "/").compactMap { Double($0) }
    guard tb.count == 2, tb[0] > 0, tb[1] > 0 else { throw fail("the video stream has no time base") }
    // t = pts × time base, as ffmpeg's select filter computes it.
    let unit = tb[0] / tb[1]
    let times = ticks.sorted().map { Double($0) * unit }
    guard !times.isEmpty else { throw fail("has no frames") }
    let origin = Double(format["start_time"] ?? "") ?? times[0]
    let duration = Double(format["duration"] ?? "") ?? (times.last! - origin)
    let picked = selection.pick(times, origin: origin)
    guard !picked.isEmpty else {
      throw fail(
        "no frames in the selection (\(times.count) frames over \(Frames.clock(duration))"
          + (s.start.map { ", start=\(Frames.clock($0))" } ?? "")
          + (s.end.map { ", end=\(Frames.clock($0))" } ?? "") + ")")
    }
    let container = (format["format_name"] ?? "").split(separator: ",")
    return VideoPlan(
      path: path, codec: codec, width: w, height: h, origin: origin, duration: duration,
      times: picked.map { times[$0] }, selection: selection,
      seekable: container.contains { ["mov", "mp4", "matroska", "webm"].contains($0) })
  }

  /// ffprobe's message without its "[demuxer @ 0x…] " prefix or a repeat of the file name.
  static func clean(_ line: String, path: String) -> String {
    var s = Substring(line)
    if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
      s = s[s.index(after: close)...].drop { $0 == " " }
    }
    for prefix in ["file:" + path + ": ", path + ": "] where s.hasPrefix(prefix) {
      s = s.dropFirst(prefix.count)
    }
    return String(s)
  }
}

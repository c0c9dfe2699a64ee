import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Frames for video input: the images of a folder, or the frames `ffmpeg` extracts from a video.
/// Only paths are gathered here; each frame is decoded when it is fed (`ImageDecoder.decode`), so
/// a long clip never sits in memory decoded all at once.
public enum Frames {
  /// The images in `folder` (recognised by their first bytes: PNG, JPEG, binary PPM/PGM; hidden
  /// files and sub-folders skipped) in natural order (frame2 before frame10), then every `every`-th
  /// one starting with the first, then at most `max` of those.
  public static func list(folder: String, every: Int = 1, max: Int? = nil) throws -> [String] {
    func fail(_ m: String) -> ImageError { ImageError(path: folder, message: m) }
    guard every >= 1 else { throw fail("every= must be at least 1, got \(every)") }
    if let max, max < 1 { throw fail("max= must be at least 1, got \(max)") }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir) else {
      throw fail(BoundedFile.missing(folder, notThere: "no such folder"))
    }
    guard isDir.boolValue else { throw fail("not a folder") }
    let (names, undecodable) = try listNames(folder)
    var images: [String] = []
    var skipped = 0
    // A name that is not UTF-8 cannot be passed on as a path: an image under such a name is an
    // error (dropping the frame without a word would change the clip), anything else skipped.
    for raw in undecodable where raw.first != UInt8(ascii: ".") {
      let path = Array(folder.utf8) + [UInt8(ascii: "/")] + raw
      if isImageFile(path: path) {
        throw fail(
          "file name \(escaped(raw)) is not valid UTF-8: rename it (the frame would be skipped)")
      }
      skipped += 1
    }
    for name in names where !name.hasPrefix(".") {
      let path = (folder as NSString).appendingPathComponent(name)
      if isImageFile(path) {
        images.append(name)
      } else {
        skipped += 1
      }
    }
    guard !images.isEmpty else {
      throw fail(
        "no images in this folder (PNG, JPEG or binary PPM/PGM, recognised by their first bytes; "
          + "\(skipped) other \(skipped == 1 ? "entry" : "entries") skipped)")
    }
    images.sort { naturalLess($0, $1) }
    var picked = stride(from: 0, to: images.count, by: every).map { images[$0] }
    if let max, picked.count > max { picked.removeLast(picked.count - max) }
    return picked.map { (folder as NSString).appendingPathComponent($0) }
  }

  /// The folder's entries (without "." and ".."): names that are UTF-8, and the raw bytes of
  /// those that are not (FileManager would drop or mangle them).
  static func listNames(_ folder: String) throws -> (names: [String], undecodable: [[UInt8]]) {
    guard let dir = opendir(folder) else {
      throw ImageError(
        path: folder,
        message: "cannot list the folder: \(String(cString: strerror(errno)).lowercased())")
    }
    defer { closedir(dir) }
    var names: [String] = []
    var undecodable: [[UInt8]] = []
    while let entry = readdir(dir) {
      let raw = withUnsafeBytes(of: entry.pointee.d_name) { buffer in
        Array(buffer.prefix { $0 != 0 })
      }
      if raw == [0x2E] || raw == [0x2E, 0x2E] { continue }
      if let name = String(validating: raw, as: UTF8.self) {
        names.append(name)
      } else {
        undecodable.append(raw)
      }
    }
    return (names, undecodable)
  }

  /// A name's bytes as Python writes undecodable ones: `"fr\xffame.png"`.
  static func escaped(_ raw: [UInt8]) -> String {
    "\"" + raw.map { b in
      (0x20..<0x7F).contains(b) && b != 0x22 && b != 0x5C
        ? String(Character(Unicode.Scalar(b))) : String(format: "\\x%02x", b)
    }.joined() + "\""
  }

  /// Whether `path` is a regular file whose first bytes are a supported image signature.
  static func isImageFile(_ path: String) -> Bool { isImageFile(path: Array(path.utf8)) }

  static func isImageFile(path: [UInt8]) -> Bool {
    // Non-blocking: a FIFO in the folder must not stall the listing.
    let fd = (path + [0]).withUnsafeBufferPointer { p in
      p.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_RDONLY | O_NONBLOCK) }
    }
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
    var head = [UInt8](repeating: 0, count: 8)
    let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 8) }
    guard n > 0 else { return false }
    return ImageFormat.detect(Array(head.prefix(n))) != nil
  }

  /// Natural order: runs of digits compare as numbers (frame2 < frame10, any length), the rest
  /// by Unicode scalars; names with the same key ("frame2", "frame02") fall back to `<`.
  public static func naturalLess(_ a: String, _ b: String) -> Bool {
    let x = Array(a.unicodeScalars)
    let y = Array(b.unicodeScalars)
    var i = 0
    var j = 0
    func isDigit(_ s: Unicode.Scalar) -> Bool { s.value >= 48 && s.value <= 57 }
    while i < x.count && j < y.count {
      if isDigit(x[i]) && isDigit(y[j]) {
        var ei = i
        var ej = j
        while ei < x.count && isDigit(x[ei]) { ei += 1 }
        while ej < y.count && isDigit(y[ej]) { ej += 1 }
        // Compare the digit runs as numbers of any length: strip leading zeros, then compare
        // lengths, then digits.
        var si = i
        var sj = j
        while si < ei - 1 && x[si] == "0" { si += 1 }
        while sj < ej - 1 && y[sj] == "0" { sj += 1 }
        if ei - si != ej - sj { return ei - si < ej - sj }
        for k in 0..<(ei - si) where x[si + k] != y[sj + k] {
          return x[si + k].value < y[sj + k].value
        }
        i = ei
        j = ej
      } else {
        if x[i] != y[j] { return x[i].value < y[j].value }
        i += 1
        j += 1
      }
    }
    if (x.count - i) != (y.count - j) { return (x.count - i) < (y.count - j) }
    return a < b  // same natural key ("frame2" vs "frame02"): any fixed order
  }

  /// The message when a video is given and `ffmpeg` is not on PATH.
  public static let ffmpegMissing =
    "ffmpeg is not installed (apt-get install ffmpeg) — or pass a folder of frames"

  /// The `ffmpeg` executable on `searchPath` (a PATH-style list), or nil.
  public static func findFFmpeg(searchPath: String? = ProcessInfo.processInfo.environment["PATH"])
    -> String?
  {
    for dir in (searchPath ?? "").split(separator: ":") where !dir.isEmpty {
      let candidate = (String(dir) as NSString).appendingPathComponent("ffmpeg")
      var isDir: ObjCBool = false
      if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue,
        access(candidate, X_OK) == 0
      {
        return candidate
      }
    }
    return nil
  }

  /// Frames extracted from a video into a temporary folder, removed when this is released.
  public final class Extracted: @unchecked Sendable {
    public let video: String
    public let folder: String
    /// The extracted frames (after `every` and `max`), in order.
    public let paths: [String]

    init(video: String, folder: String, paths: [String]) {
      self.video = video
      self.folder = folder
      self.paths = paths
    }

    deinit { try? FileManager.default.removeItem(atPath: folder) }
  }

  /// Runs `ffmpeg` to extract PNG frames of `video` at `fps` frames per second into a new
  /// temporary folder, then applies `every` and `max` as `list(folder:)` does (ffmpeg stops after
  /// the frames `max` needs). Errors: the video does not exist, ffmpeg is not on `searchPath`,
  /// ffmpeg fails (its last message), or it produced no frames.
  public static func extract(
    video: String, fps: Double, every: Int = 1, max: Int? = nil,
    searchPath: String? = ProcessInfo.processInfo.environment["PATH"]
  ) throws -> Extracted {
    func fail(_ m: String) -> ImageError { ImageError(path: video, message: m) }
    guard fps.isFinite, fps > 0 else { throw fail("fps= must be a positive number, got \(fps)") }
    guard every >= 1 else { throw fail("every= must be at least 1, got \(every)") }
    if let max, max < 1 { throw fail("max= must be at least 1, got \(max)") }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: video, isDirectory: &isDir) else {
      throw fail(BoundedFile.missing(video, notThere: "no such file"))
    }
    guard !isDir.boolValue else { throw fail("is a folder: use it as a folder of frames") }
    guard let ffmpeg = findFFmpeg(searchPath: searchPath) else { throw fail(ffmpegMissing) }

    let folder = (NSTemporaryDirectory() as NSString).appendingPathComponent(
      "kvlab-frames-\(UUID().uuidString)")
    do {
      try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
      throw fail("cannot create a temporary folder for the frames at \(folder)")
    }
    var ok = false
    defer { if !ok { try? FileManager.default.removeItem(atPath: folder) } }

    var args = [
      // "file:" makes ffmpeg read the path as a plain file: a name like "http://…",
      // "concat:…" or "-x" is never taken for a protocol or an option.
      "-hide_banner", "-loglevel", "error", "-nostdin", "-i", "file:" + video,
      "-vf", "fps=\(formatFPS(fps))",
    ]
    if let max { args += ["-frames:v", String((max - 1) * every + 1)] }
    args.append((folder as NSString).appendingPathComponent("frame%06d.png"))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: ffmpeg)
    process.arguments = args
    let stderr = Pipe()
    process.standardError = stderr
    process.standardOutput = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    do {
      try process.run()
    } catch {
      throw fail("cannot run \(ffmpeg): \(error.localizedDescription)")
    }
    let errorText = String(
      decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationReason == .exit, process.terminationStatus == 0 else {
      let last = errorText.split(whereSeparator: \.isNewline).last.map(String.init) ?? "no message"
      throw fail("ffmpeg failed (exit status \(process.terminationStatus)): \(last)")
    }
    let paths: [String]
    do {
      paths = try list(folder: folder, every: every, max: max)
    } catch {
      throw fail("ffmpeg extracted no frames at fps=\(formatFPS(fps))")
    }
    ok = true
    return Extracted(video: video, folder: folder, paths: paths)
  }

  /// 2 → "2", 0.5 → "0.5", 29.97 → "29.97".
  static func formatFPS(_ fps: Double) -> String {
    fps == fps.rounded() && abs(fps) < 1e15 ? String(Int(fps)) : String(fps)
  }
}

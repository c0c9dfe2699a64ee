import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Frames for video input from a folder of images (a video is streamed: `VideoPlan`,
/// `VideoStream`). Only paths are gathered here; each frame is decoded when it is fed
/// (`ImageDecoder.decode`), so a long clip never sits in memory decoded all at once.
public enum Frames {
  /// The images in `folder` (recognised by their first bytes: PNG, JPEG, binary PPM/PGM; hidden
  /// files and sub-folders skipped) in natural order (frame2 before frame10), then every `every`-th
  /// one starting with the first, then at most `max` of those.
  public static func list(folder: String, every: Int = 1, max: Int? = nil) throws -> [String] {
    try names(folder: folder, every: every, max: max).names.map {
      (folder as NSString).appendingPathComponent($0)
    }
  }

  /// The same frames as the folder and their names, the folder stored once (a long clip's list
  /// of full paths cost ~100 bytes a frame).
  public static func names(folder: String, every: Int = 1, max: Int? = nil) throws -> FolderNames {
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
    return FolderNames(prefix: folder.hasSuffix("/") ? folder : folder + "/", names: picked)
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
    findTool("ffmpeg", searchPath: searchPath)
  }

  /// The executable `name` on `searchPath` (a PATH-style list), or nil.
  public static func findTool(
    _ name: String, searchPath: String? = ProcessInfo.processInfo.environment["PATH"]
  ) -> String? {
    for dir in (searchPath ?? "").split(separator: ":") where !dir.isEmpty {
      let candidate = (String(dir) as NSString).appendingPathComponent(name)
      var isDir: ObjCBool = false
      if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue,
        access(candidate, X_OK) == 0
      {
        return candidate
      }
    }
    return nil
  }

  /// A time as typed: seconds ("90", "12.5") or a clock ("1:30", "1:02:03.5"); nil otherwise.
  public static func parseClock(_ text: String) -> Double? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard (1...3).contains(parts.count) else { return nil }
    var total = 0.0
    for (i, part) in parts.enumerated() {
      let last = i == parts.count - 1
      guard !part.isEmpty,
        part.allSatisfy({ $0.isASCII && ($0.isNumber || (last && $0 == ".")) }),
        let v = Double(part), v.isFinite
      else { return nil }
      if i > 0 && v >= 60 { return nil }
      total = total * 60 + v
    }
    return total
  }

  /// Seconds as a clock: 75 → "01:15", 3725 → "1:02:05" (whole seconds, rounded down).
  public static func clock(_ seconds: Double) -> String {
    let s = seconds.isFinite ? Swift.max(0, Int(seconds)) : 0
    let (h, m, r) = (s / 3600, s / 60 % 60, s % 60)
    return h > 0
      ? String(format: "%d:%02d:%02d", h, m, r) : String(format: "%02d:%02d", m, r)
  }

}

/// File names that share a folder, for the sources of a clip's frames: a session keeps each
/// frame's source for its life (to decode the frame again), and a path of its own per frame
/// (~100 bytes on the heap for a 50-byte path) grew the process with the frames fed. The
/// folder is stored once; a name of up to 15 bytes (`f000123.png`) is stored inline.
public final class FolderNames: Sendable {
  /// The folder's path up to and including its last "/" ("" for names in the current folder).
  public let prefix: String
  public let names: [String]

  public init(prefix: String, names: [String]) {
    self.prefix = prefix
    self.names = names
  }

  /// `paths` split into their common folder and names; nil when they are not all in one folder.
  public convenience init?(_ paths: [String]) {
    func split(_ p: String) -> (Substring, Substring) {
      guard let slash = p.lastIndex(of: "/") else { return ("", p[...]) }
      return (p[...slash], p[p.index(after: slash)...])
    }
    guard let first = paths.first else { return nil }
    let prefix = split(first).0
    var names: [String] = []
    names.reserveCapacity(paths.count)
    for p in paths {
      let (folder, name) = split(p)
      guard folder == prefix else { return nil }
      names.append(String(name))
    }
    self.init(prefix: String(prefix), names: names)
  }

  /// The path of name `i`, exactly as it was given.
  public func path(_ i: Int) -> String { prefix + names[i] }
}

extension ImageSource {
  /// Image files as sources, each decoded now for its size and again when its pixels are
  /// needed (as `init(path:)`); files of one folder share a `FolderNames`.
  public static func files(_ paths: [String]) throws -> [ImageSource] {
    guard let list = FolderNames(paths) else { return try paths.map { try ImageSource(path: $0) } }
    return try list.names.indices.map { i in
      let image = try ImageDecoder.decode(path: list.path(i))
      return ImageSource(width: image.width, height: image.height) {
        try ImageDecoder.decode(path: list.path(i))
      }
    }
  }
}

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A child process (ffprobe, ffmpeg) whose standard output is read by the caller and whose
/// standard error is kept (its last lines) for the error message. `stop()` kills and reaps it;
/// it runs on every path out (deinit included), so no child is ever left running.
final class Subprocess: @unchecked Sendable {
  let process = Process()
  private let out = Pipe()
  private let err = Pipe()
  private let lock = NSLock()
  private var errorText = ""
  private let errorDone = DispatchSemaphore(value: 0)
  private var stopped = false

  /// Starts `executable` with `arguments` (standard input: nothing).
  init(_ executable: String, _ arguments: [String], name: String) throws {
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    do {
      try process.run()
    } catch {
      throw ImageError(path: name, message: "cannot run \(executable): \(error.localizedDescription)")
    }
    let handle = err.fileHandleForReading
    Thread.detachNewThread { [self] in
      // Standard error is drained as it comes (a full pipe would stall the child); only the
      // last 8 KiB are kept.
      while true {
        let chunk = handle.availableData
        if chunk.isEmpty { break }
        lock.lock()
        errorText += String(decoding: chunk, as: UTF8.self)
        if errorText.utf8.count > 8192 { errorText = String(errorText.suffix(4096)) }
        lock.unlock()
      }
      errorDone.signal()
    }
  }

  /// The file descriptor of the child's standard output.
  var outputFD: Int32 { out.fileHandleForReading.fileDescriptor }

  /// Reads until `buffer` is full or the output ends; returns the bytes read.
  func readFully(into buffer: UnsafeMutableRawBufferPointer) -> Int {
    var got = 0
    while got < buffer.count {
      let n = read(outputFD, buffer.baseAddress! + got, buffer.count - got)
      if n > 0 {
        got += n
      } else if n < 0 && errno == EINTR {
        continue
      } else {
        break
      }
    }
    return got
  }

  /// Waits for the child to end by itself (its output read to the end); returns its exit status
  /// (128 + signal when killed) and its standard error's lines.
  func finish() -> (status: Int32, errorLines: [String]) {
    process.waitUntilExit()
    errorDone.wait()
    errorDone.signal()
    stopped = true
    lock.lock()
    defer { lock.unlock() }
    let status =
      process.terminationReason == .exit
      ? process.terminationStatus : 128 + process.terminationStatus
    return (status, errorText.split(whereSeparator: \.isNewline).map(String.init))
  }

  /// Kills the child if it still runs and reaps it. Safe to call more than once.
  func stop() {
    guard !stopped else { return }
    stopped = true
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
  }

  deinit { stop() }

  /// Runs a child to the end, its whole output kept.
  static func capture(_ executable: String, _ arguments: [String], name: String) throws
    -> (status: Int32, output: String, errorLines: [String])
  {
    let child = try Subprocess(executable, arguments, name: name)
    defer { child.stop() }
    let data = child.out.fileHandleForReading.readDataToEndOfFile()
    let (status, lines) = child.finish()
    return (status, String(decoding: data, as: UTF8.self), lines)
  }
}

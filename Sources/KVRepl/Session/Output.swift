import Foundation

/// Which stream a piece of output belongs to. Terminals get errors on stderr; recordings and
/// checks keep both, in the order they were written.
public enum OutputChannel: Sendable {
  case output, error
}

/// Where everything a command prints goes. Recording and checking capture exactly what the
/// user sees by putting their own sink in the path.
public protocol OutputSink: AnyObject {
  func write(_ text: String, to channel: OutputChannel)
  /// Called after each command (and after each streamed piece of generation).
  func flush()
}

/// stdout and stderr, flushed on every write so that pipes and terminals see output as it
/// happens (a Jupyter kernel reading the pipe, a generation streaming tokens).
public final class StandardSink: OutputSink {
  private let out: UnsafeMutablePointer<FILE>
  private let err: UnsafeMutablePointer<FILE>
  /// Whether the last character written to the terminal ended a line.
  public private(set) var atLineStart = true

  public init(out: UnsafeMutablePointer<FILE> = stdout, err: UnsafeMutablePointer<FILE> = stderr) {
    self.out = out
    self.err = err
  }

  public func write(_ text: String, to channel: OutputChannel) {
    guard !text.isEmpty else { return }
    switch channel {
    case .output:
      fputs(text, out)
      fflush(out)
    case .error:
      fflush(out)
      fputs(text, err)
      fflush(err)
    }
    atLineStart = text.hasSuffix("\n")
  }

  public func flush() {
    fflush(out)
    fflush(err)
  }
}

/// Keeps everything written, both channels in order. Used by `replay --check` and tests.
public final class CaptureSink: OutputSink {
  public private(set) var text = ""
  public init() {}
  public func write(_ text: String, to channel: OutputChannel) { self.text += text }
  public func flush() {}
  /// The output as lines; a final line without a newline still counts.
  public var lines: [String] { Self.lines(text) }

  static func lines(_ text: String) -> [String] {
    var parts = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if parts.last == "" { parts.removeLast() }
    return parts
  }
}

/// Writes to several sinks (the terminal and a recorder).
public final class TeeSink: OutputSink {
  public let sinks: [OutputSink]
  public init(_ sinks: [OutputSink]) { self.sinks = sinks }
  public func write(_ text: String, to channel: OutputChannel) {
    for s in sinks { s.write(text, to: channel) }
  }
  public func flush() { for s in sinks { s.flush() } }
}

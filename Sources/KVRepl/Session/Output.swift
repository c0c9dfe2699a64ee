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
  /// Whether the sink shows pictures (a notebook, the Jupyter kernel): views then send a PNG
  /// with their text; elsewhere only the text is written, and the PNG is never encoded.
  var showsImages: Bool { get }
  /// A picture and the text that stands for it where pictures are not shown.
  func display(png: [UInt8], text: String)
}

extension OutputSink {
  public var showsImages: Bool { false }
  public func display(png: [UInt8], text: String) { write(text, to: .output) }
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
/// With `keepsImages`, pictures are kept too, in order among the text (`parts`), for a
/// notebook's outputs; `text` always holds every text, a picture's included.
public final class CaptureSink: OutputSink {
  public enum Part: Equatable {
    case text(String)
    case image(png: [UInt8], text: String)
  }
  public private(set) var text = ""
  public private(set) var parts: [Part] = []
  public let keepsImages: Bool
  public init(keepsImages: Bool = false) { self.keepsImages = keepsImages }
  public func write(_ text: String, to channel: OutputChannel) {
    guard !text.isEmpty else { return }
    self.text += text
    if case .text(let last)? = parts.last {
      parts[parts.count - 1] = .text(last + text)
    } else {
      parts.append(.text(text))
    }
  }
  public var showsImages: Bool { keepsImages }
  public func display(png: [UInt8], text: String) {
    guard keepsImages else { return write(text, to: .output) }
    self.text += text
    parts.append(.image(png: png, text: text))
  }
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
  public var showsImages: Bool { sinks.contains { $0.showsImages } }
  public func display(png: [UInt8], text: String) {
    for s in sinks { s.display(png: png, text: text) }
  }
  public func flush() { for s in sinks { s.flush() } }
}

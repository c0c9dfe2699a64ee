import Foundation

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
  /// "system", "user", "assistant", ...
  public var role: String
  public var content: String

  public init(role: String, content: String) {
    self.role = role
    self.content = content
  }

  public static func system(_ content: String) -> ChatMessage { ChatMessage(role: "system", content: content) }
  public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "user", content: content) }
  public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "assistant", content: content) }
}

/// A ChatML prompt format (`<|im_start|>role\ncontent<|im_end|>\n` per message), as SmolLM2-Instruct's
/// `tokenizer.chat_template` renders it: when the conversation does not open with a system message,
/// the default system prompt (if any) is put first; `addGenerationPrompt` appends the opening of an
/// assistant turn.
public struct ChatTemplate: Sendable, Equatable {
  public var startMarker: String
  public var endMarker: String
  /// Put first when the conversation has messages and the first is not a system message.
  public var defaultSystemPrompt: String?

  public init(
    defaultSystemPrompt: String?, startMarker: String = "<|im_start|>", endMarker: String = "<|im_end|>"
  ) {
    self.defaultSystemPrompt = defaultSystemPrompt
    self.startMarker = startMarker
    self.endMarker = endMarker
  }

  /// SmolLM2-Instruct's template, with its default system prompt.
  public static let chatML = ChatTemplate(
    defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face")

  /// The token that ends a turn (generation stops there).
  public var stopToken: String { endMarker }

  // Pieces for building a prompt incrementally; `render` is their concatenation:
  // systemPrefix (when the first message is not a system one) + per message
  // (rolePrefix + content + turnEnd) + assistantPrefix (generation prompt).

  /// The default system turn, complete (`<|im_start|>system\n…<|im_end|>\n`); "" when there is none.
  public var systemPrefix: String {
    defaultSystemPrompt.map { rolePrefix("system") + $0 + turnEnd } ?? ""
  }
  /// `<|im_start|>user\n`
  public var userPrefix: String { rolePrefix("user") }
  /// `<|im_start|>assistant\n`: the generation prompt.
  public var assistantPrefix: String { rolePrefix("assistant") }
  /// `<|im_end|>\n`: what closes every turn.
  public var turnEnd: String { endMarker + "\n" }
  /// `<|im_start|>role\n`
  public func rolePrefix(_ role: String) -> String { startMarker + role + "\n" }

  public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
    var out = ""
    if let first = messages.first, first.role != "system" { out += systemPrefix }
    for m in messages { out += rolePrefix(m.role) + m.content + turnEnd }
    if addGenerationPrompt { out += assistantPrefix }
    return out
  }

  /// Recognises a ChatML Jinja template (a GGUF's `tokenizer.chat_template`, a tokenizer_config.json's
  /// `chat_template`) and reads its hard-coded default system prompt, if it has one. Nil for other
  /// formats.
  public init?(jinja source: String) {
    let start = "<|im_start|>"
    let end = "<|im_end|>"
    guard source.contains(start), source.contains(end) else { return nil }
    var prompt: String?
    // `'<|im_start|>system\n...<|im_end|>` inside a string literal: a literal newline or `\n`.
    for opener in [start + "system\n", start + "system\\n"] {
      guard let r = source.range(of: opener), let e = source.range(of: end, range: r.upperBound..<source.endIndex)
      else { continue }
      let raw = String(source[r.upperBound..<e.lowerBound])
      // only a constant (no Jinja expression) is a default prompt
      guard !raw.contains("{{"), !raw.contains("{%"), !raw.replacingOccurrences(of: "\\'", with: "").contains("'") else { continue }
      prompt = raw.replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "\\'", with: "'")
      break
    }
    self.init(defaultSystemPrompt: prompt)
  }

  /// The template of a GGUF file (`tokenizer.chat_template`), when it is ChatML.
  public init?(gguf: GGUFFile) {
    guard let source = gguf.metadata["tokenizer.chat_template"]?.string else { return nil }
    self.init(jinja: source)
  }
}

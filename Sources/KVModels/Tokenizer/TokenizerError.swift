/// A tokenizer that cannot be built: names the file and the problem, on one line.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
  /// The file the tokenizer was read from (a tokenizer.json, a GGUF), or a short label.
  public let file: String
  public let problem: String

  public init(file: String, problem: String) {
    self.file = file
    self.problem = problem
  }

  public var description: String {
    let oneLine = problem.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline)
      .joined(separator: " ")
    return "\(file): \(oneLine)"
  }
}

/// A string for an error message: quoted, control characters escaped, cut at 40 characters.
func quoted(_ s: String) -> String {
  var out = "\""
  for ch in s.unicodeScalars.prefix(40) {
    switch ch {
    case "\n": out += "\\n"
    case "\t": out += "\\t"
    case "\r": out += "\\r"
    case "\"": out += "\\\""
    default:
      if ch.value < 0x20 || ch.value == 0x7F {
        out += "\\u{\(String(ch.value, radix: 16))}"
      } else {
        out.unicodeScalars.append(ch)
      }
    }
  }
  if s.unicodeScalars.count > 40 { out += "…" }
  return out + "\""
}

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

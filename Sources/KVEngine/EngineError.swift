/// Why an engine command failed; one line, printed by the REPL after the command's name.
public enum EngineError: Error, CustomStringConvertible, Equatable {
  case noModel
  case cancelled(String)
  case invalid(String)
  case file(path: String, message: String)

  public var description: String {
    switch self {
    case .noModel: return "no model loaded (use 'load' first)"
    case .cancelled(let what): return "cancelled: \(what)"
    case .invalid(let why): return why
    case .file(let path, let message): return "\(path): \(message)"
    }
  }
}

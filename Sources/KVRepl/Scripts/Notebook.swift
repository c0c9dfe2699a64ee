import Foundation

/// A Jupyter notebook (nbformat 4) whose code cells hold kvlab commands, read and written
/// without Python.
///
/// A code cell's source is a script without `#>` lines: one command line per line, blank
/// lines and `#` comments allowed. Its outputs are `stream` outputs (`stdout`) holding what the
/// commands printed, error lines (`error: ...`) included, so a cell expected to fail can be
/// recorded as scripts record it, and `display_data` outputs for the views shown as pictures
/// (PNG, with their text as `text/plain`: what checks compare). Markdown and raw cells, metadata and everything else the
/// REPL does not know are kept as they are.
///
/// The file is written as nbformat writes it (`json.dumps(nb, sort_keys=True, indent=1,
/// ensure_ascii=False)` plus a newline; see `JSONWriter`), so writing what was read gives
/// the same bytes once a notebook has been written here or by Jupyter. Errors are
/// `error: notebook: FILE: what is wrong`; cells are numbered from 1 in file order, markdown
/// cells included (`cell 3`).
public struct Notebook {
  /// The whole document (an object with `cells`, `metadata`, `nbformat`, `nbformat_minor`).
  public private(set) var document: JSONValue
  /// The name messages use (the path as typed).
  public let displayName: String

  public struct Cell: Equatable {
    /// 1-based position among all cells.
    public var number: Int
    /// `code`, `markdown` or `raw`.
    public var kind: String
    /// The source as one text.
    public var source: String
    /// What the stored `stream` outputs hold, in order, as one text.
    public var outputText: String

    public var isCode: Bool { kind == "code" }

    /// `code cell 2: load model`: the code cell's number among the code cells (Jupyter's
    /// `In [2]` after a run from the top) and its first command line, cut at 60 characters.
    public func title(codeNumber: Int) -> String {
      let first = commandLines.first?.line.trimmingCharacters(in: .whitespaces) ?? "(no commands)"
      let shown = first.count > 60 ? first.prefix(59) + "…" : Substring(first)
      return "code cell \(codeNumber): \(shown)"
    }

    /// The stored output as lines (a final line without a newline still counts).
    public var outputLines: [String] { CaptureSink.lines(outputText) }

    /// The command lines with their 1-based line numbers in the cell (blank lines and `#`
    /// comments are left out).
    public var commandLines: [(line: String, number: Int)] {
      var out: [(String, Int)] = []
      for (k, raw) in Script.lines(source).enumerated() {
        var line = raw
        if line.hasSuffix("\r") { line.removeLast() }
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
        out.append((line, k + 1))
      }
      return out
    }
  }

  public private(set) var cells: [Cell]

  /// The metadata a kvlab notebook carries, added where a notebook lacks it.
  public static let kernelspec: JSONValue = .object([
    ("display_name", .string("kvlab")), ("language", .string("kvlab")), ("name", .string("kvlab")),
  ])
  public static let languageInfo: JSONValue = .object([("name", .string("kvlab"))])

  /// Reads a notebook's bytes; errors name `displayName`.
  public init(bytes: [UInt8], displayName: String) throws {
    self.displayName = displayName
    func bad(_ message: String) -> ReplError { ReplError("notebook", "\(displayName): \(message)") }
    let document: JSONValue
    do {
      document = try JSONReader.parse(bytes)
    } catch let e as JSONReader.Failure {
      throw bad("not JSON (\(e))")
    }
    guard case .object = document else {
      throw bad("not a notebook (the JSON is \(document.kind), not an object)")
    }
    switch document["nbformat"] {
    case .number("4"): break
    case .number(let n): throw bad("not an nbformat 4 notebook (nbformat \(n))")
    case nil: throw bad("not an nbformat 4 notebook (no nbformat field)")
    case let v?: throw bad("not an nbformat 4 notebook (nbformat is \(v.kind))")
    }
    guard case .array(let items)? = document["cells"] else {
      throw bad("not an nbformat 4 notebook (no 'cells' list)")
    }
    switch document["metadata"] {
    case nil, .object?: break
    case let v?: throw bad("metadata must be an object, not \(v.kind)")
    }
    var cells: [Cell] = []
    for (k, item) in items.enumerated() {
      let number = k + 1
      guard case .object = item else {
        throw bad("cell \(number): \(item.kind), not a cell object")
      }
      guard let kind = item["cell_type"]?.string else { throw bad("cell \(number): no cell_type") }
      guard ["code", "markdown", "raw"].contains(kind) else {
        throw bad("cell \(number): unknown cell_type '\(kind)' (expected code, markdown or raw)")
      }
      var source = ""
      var outputText = ""
      if kind == "code" {
        guard let s = Self.text(item["source"]) else {
          throw bad("cell \(number): source must be a string or a list of strings")
        }
        source = s
        switch item["outputs"] {
        case nil: break
        case .array(let outputs)?:
          for o in outputs {
            guard case .object = o else {
              throw bad("cell \(number): an output that is \(o.kind), not an object")
            }
            switch o["output_type"]?.string {
            case "stream":
              guard let t = Self.text(o["text"]) else {
                throw bad(
                  "cell \(number): a stream output's text must be a string or a list of strings")
              }
              outputText += t
            case "display_data":
              // A picture counts by the text that stands for it.
              guard let t = Self.text(o["data"]?["text/plain"]) else { continue }
              outputText += t
            default: continue
            }
          }
        case let v?: throw bad("cell \(number): outputs must be a list, not \(v.kind)")
        }
      }
      cells.append(Cell(number: number, kind: kind, source: source, outputText: outputText))
    }
    self.document = document
    self.cells = cells
  }

  /// A string, or a list of strings joined (nbformat's "multiline string").
  static func text(_ v: JSONValue?) -> String? {
    switch v {
    case .string(let s)?: return s
    case .array(let parts)?:
      var s = ""
      for p in parts {
        guard case .string(let t) = p else { return nil }
        s += t
      }
      return s
    default: return nil
    }
  }

  /// nbformat's `split_lines`: a text as a list of lines, each keeping its line end (`\n`,
  /// `\r\n` or `\r`).
  static func splitLines(_ text: String) -> JSONValue {
    var lines: [JSONValue] = []
    var current = ""
    for ch in text {
      current.append(ch)
      if ch == "\n" || ch == "\r\n" || ch == "\r" {
        lines.append(.string(current))
        current = ""
      }
    }
    if !current.isEmpty { lines.append(.string(current)) }
    return .array(lines)
  }

  /// Replaces a code cell's outputs with what a run printed: a `stdout` stream per run of
  /// text, a `display_data` (PNG and its text) per picture; sets its execution count.
  public mutating func setOutput(
    ofCell number: Int, parts: [CaptureSink.Part], executionCount: Int
  ) {
    guard case .object(var members) = document, case .array(var items)? = document["cells"],
      items.indices.contains(number - 1), cells[number - 1].isCode
    else { return }
    var cell = items[number - 1]
    var text = ""
    let outputs: [JSONValue] = parts.map { part in
      switch part {
      case .text(let t):
        text += t
        return .object([
          ("name", .string("stdout")), ("output_type", .string("stream")),
          ("text", Self.splitLines(t)),
        ])
      case .image(let png, let t):
        text += t
        return .object([
          (
            "data",
            .object([
              ("image/png", .string(Data(png).base64EncodedString() + "\n")),
              ("text/plain", Self.splitLines(t)),
            ])
          ),
          ("metadata", .object([])), ("output_type", .string("display_data")),
        ])
      }
    }
    cell.set("outputs", .array(outputs))
    cell.set("execution_count", .number(String(executionCount)))
    if cell["metadata"] == nil { cell.set("metadata", .object([])) }
    items[number - 1] = cell
    if let i = members.firstIndex(where: { $0.0 == "cells" }) { members[i].1 = .array(items) }
    document = .object(members)
    cells[number - 1].outputText = text
  }

  /// Makes the document a complete nbformat 4.5 kvlab notebook: every cell gets an `id`
  /// (`cell-N` where it had none), `nbformat_minor` is at least 5, and the metadata gets
  /// kvlab's `kernelspec` and `language_info` where it has none. Nothing present is changed.
  public mutating func complete() {
    guard case .array(var items)? = document["cells"] else { return }
    var taken = Set(items.compactMap { $0["id"]?.string })
    for k in items.indices where items[k]["id"] == nil {
      var id = "cell-\(k + 1)"
      var n = 1
      while taken.contains(id) {
        n += 1
        id = "cell-\(k + 1)-\(n)"
      }
      taken.insert(id)
      items[k].set("id", .string(id))
    }
    document.set("cells", .array(items))
    let minor = document["nbformat_minor"].flatMap { v -> Int? in
      if case .number(let n) = v { return Int(n) }
      return nil
    }
    if (minor ?? 0) < 5 { document.set("nbformat_minor", .number("5")) }
    var metadata = document["metadata"] ?? .object([])
    if metadata["kernelspec"] == nil { metadata.set("kernelspec", Self.kernelspec) }
    if metadata["language_info"] == nil { metadata.set("language_info", Self.languageInfo) }
    document.set("metadata", metadata)
  }

  /// The file's bytes, as nbformat writes them (with a final newline).
  public func serialized() -> [UInt8] { Array((JSONWriter.write(document) + "\n").utf8) }
}

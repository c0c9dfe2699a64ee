import Foundation
import KVEngine
import KVModels
import XCTest

@testable import KVRepl

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The hostile-input table (docs/bad-input.md), row by row: each row's file is built here (bytes written
/// to a temporary folder, or a small edit of a fixture), its command runs through a `Repl` as a
/// user types it, the one line printed must be the table's, and the session must still work
/// afterwards (the process did not trap, and a model loads and tokenizes).
///
/// The table is read from docs/bad-input.md (between `<!-- hostile-table -->` and
/// `<!-- /hostile-table -->`), so it cannot drift from what kvlab says; every row needs a case
/// here and every case a row.
final class HostileInputTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"
  static let images = repositoryRoot + "/Tests/KVModelsTests/Fixtures/images"
  /// The model the survival check loads after each row (the smallest fixture: 50 loads take no
  /// time, and it fits where row 24 refuses the Idefics3 one).
  static let aliveModel = vlm + "/qwen2_vl/model"

  struct Row {
    var number: Int
    var input: String
    var command: String
    var message: String
  }

  /// How a row's session is prepared: files written into its folder, commands run first (they
  /// must succeed), and the memory the engine is told is available (nil: the machine's).
  struct Case {
    var availableMemory: Int? = nil
    var before: [String] = []
    var needsDefaultModel = false
    var needsFFmpeg = false
    var setUp: (String) throws -> Void = { _ in }
  }

  // MARK: the table

  static func readTable() throws -> [Row] {
    let readme = try String(contentsOfFile: repositoryRoot + "/docs/bad-input.md", encoding: .utf8)
    guard let start = readme.range(of: "<!-- hostile-table -->"),
      let end = readme.range(of: "<!-- /hostile-table -->")
    else { throw TableError.message("docs/bad-input.md has no hostile-table markers") }
    var rows: [Row] = []
    for line in readme[start.upperBound..<end.lowerBound].split(separator: "\n") {
      guard line.hasPrefix("| "), line.hasSuffix(" |") else { continue }
      let cells = line.dropFirst(2).dropLast(2).components(separatedBy: " | ")
      guard cells.count == 4, let n = Int(cells[0]) else { continue }  // header, separator
      func code(_ s: String) throws -> String {
        guard s.hasPrefix("`"), s.hasSuffix("`"), s.count >= 2 else {
          throw TableError.message("row \(n): \(s) is not one `code` span")
        }
        return String(s.dropFirst().dropLast())
      }
      rows.append(
        Row(number: n, input: cells[1], command: try code(cells[2]), message: try code(cells[3])))
    }
    return rows
  }

  enum TableError: Error { case message(String) }

  func testTheTableHasACaseForEveryRowAndARowForEveryCase() throws {
    let rows = try Self.readTable()
    XCTAssertGreaterThanOrEqual(rows.count, 45)
    XCTAssertEqual(rows.map(\.number), Array(1...rows.count), "rows are numbered 1, 2, 3, …")
    XCTAssertEqual(Set(rows.map(\.number)), Set(cases.keys), "table rows vs cases")
  }

  /// Every row: the error line, then the session goes on.
  func testEveryRow() throws {
    let rows = try Self.readTable()
    for row in rows {
      guard let c = cases[row.number] else { continue }  // reported by the test above
      if c.needsDefaultModel, defaultModelPath == nil {
        print("HOSTILE \(row.number): skipped (no default model; run scripts/setup.sh)")
        continue
      }
      if c.needsFFmpeg, Frames.findFFmpeg() == nil {
        print("HOSTILE \(row.number): skipped (no ffmpeg; run scripts/setup.sh)")
        continue
      }
      try check(row, c)
    }
  }

  /// Rows 79 and 80: nothing in a script or a notebook reaches a shell.
  func testScriptsAndNotebooksCannotRunShellCommands() throws {
    let (repl, capture) = makeRepl()
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    try Self.write("!touch pwned\n", folder + "/sh.kvl")
    try Self.write(Self.notebook("%%bash\ntouch pwned\n"), folder + "/sh.ipynb")
    for line in ["replay sh.kvl", "notebook run sh.ipynb", "!touch pwned", "shell touch pwned"] {
      XCTAssertEqual(repl.run(line: line), .failed, line)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/pwned"), capture.text)
  }

  func check(_ row: Row, _ c: Case) throws {
    let what = "row \(row.number) (\(row.input))"
    let capture = CaptureSink()
    let session = Session(
      options: EngineOptions(
        threads: 2, modelDirectories: [repositoryRoot + "/models"],
        defaultModel: EngineOptions.textModelFile, availableMemory: c.availableMemory))
    let repl = Repl(session: session, output: capture)
    let folder = temporaryFolder(self)
    repl.workingDirectory = folder
    try c.setUp(folder)
    for line in c.before {
      XCTAssertEqual(repl.run(line: line), .ok, "\(what): \(line): \(capture.text)")
    }
    // `notebook run` marks each code cell it runs (`── code cell 1: …`); the marker is not part
    // of the error the row documents.
    let printed = output(of: row.command, in: repl, capture, expecting: .failed)
      .split(separator: "\n", omittingEmptySubsequences: false)
      .filter { !$0.hasPrefix("── code cell ") }.joined(separator: "\n")
    XCTAssertEqual(printed, row.message + "\n", what)
    if printed != row.message + "\n" { print("HOSTILE \(row.number) ACTUAL: \(printed)") }
    // The session survived: it answers, loads a model and uses it.
    XCTAssertEqual(repl.run(line: "echo alive"), .ok, what)
    XCTAssertTrue(capture.text.hasSuffix("alive\n"), what)
    XCTAssertEqual(repl.run(line: "load \(Self.aliveModel)"), .ok, "\(what): \(capture.text)")
    XCTAssertEqual(repl.run(line: #"tokenize "still here""#), .ok, "\(what): \(capture.text)")
  }

  // MARK: file builders

  static func write(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  static func write(_ text: String, _ path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  }

  /// A FIFO: opening it for reading would wait for a writer forever.
  static func fifo(_ path: String) throws {
    guard mkfifo(path, 0o644) == 0 else {
      throw TableError.message("mkfifo \(path): \(String(cString: strerror(errno)))")
    }
  }

  /// A sparse file of `size` bytes (no disk used): reading it whole would allocate them all.
  static func sparse(_ path: String, size: Int) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
      throw TableError.message("cannot create \(path)")
    }
    guard truncate(path, off_t(size)) == 0 else {
      throw TableError.message("truncate \(path): \(String(cString: strerror(errno)))")
    }
  }

  /// A copy of a fixture model folder as `folder/m`, for edits.
  static func copyModel(_ family: String, into folder: String) throws -> String {
    let copy = folder + "/m"
    try FileManager.default.copyItem(atPath: "\(vlm)/\(family)/model", toPath: copy)
    return copy
  }

  /// Edits a JSON object file in place.
  static func editJSON(_ path: String, _ change: (inout [String: Any]) -> Void) throws {
    let url = URL(fileURLWithPath: path)
    var object = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    change(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
  }

  /// `folder/m`: a fixture model whose config.json's `key` object gets `changes`.
  static func editedConfig(
    _ family: String, _ folder: String, section: String?, _ changes: [String: Any]
  ) throws {
    let m = try copyModel(family, into: folder)
    try editJSON(m + "/config.json") { c in
      if let section {
        var s = c[section] as! [String: Any]
        for (k, v) in changes { s[k] = v }
        c[section] = s
      } else {
        for (k, v) in changes { c[k] = v }
      }
    }
  }

  /// A safetensors file: the JSON header as given (padded to 8 bytes), then `data` bytes.
  static func safetensors(header: String, data: Int, lengthField: UInt64? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var out: [UInt8] = []
    withUnsafeBytes(of: (lengthField ?? UInt64(h.count)).littleEndian) { out += $0 }
    return out + h + [UInt8](repeating: 0, count: data)
  }

  /// GGUF files byte by byte (little-endian), as GGUFTests builds them.
  struct GGUF {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) {
      u64(UInt64(s.utf8.count))
      bytes += s.utf8
    }
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
      bytes += Array("GGUF".utf8)
      u32(version)
      u64(tensors)
      u64(kvs)
    }
    mutating func kvString(_ key: String, _ value: String) {
      string(key)
      u32(8)
      string(value)
    }
    mutating func kvU32(_ key: String, _ value: UInt32) {
      string(key)
      u32(4)
      u32(value)
    }
    mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
      string(name)
      u32(UInt32(dims.count))
      for d in dims { u64(d) }
      u32(type)
      u64(offset)
    }
    mutating func pad(to alignment: Int) {
      while bytes.count % alignment != 0 { bytes.append(0) }
    }
    mutating func zeros(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }
  }

  /// One F32 tensor "a" of `dims` at offset `offset`, `data` bytes of data, after `kvs`.
  static func gguf(
    kvs: [(inout GGUF) -> Void] = [], tensorCount: UInt64? = nil, version: UInt32 = 3,
    dims: [UInt64] = [4], type: UInt32 = 0, offset: UInt64 = 0, data: Int = 16
  ) -> [UInt8] {
    var g = GGUF()
    g.header(version: version, tensors: tensorCount ?? 1, kvs: UInt64(kvs.count))
    for kv in kvs { kv(&g) }
    g.tensor("a", dims: dims, type: type, offset: offset)
    g.pad(to: 32)
    g.zeros(data)
    return g.bytes
  }

  /// A llama GGUF with only the metadata DecoderConfig reads (no tensors, no tokenizer): enough
  /// to get as far as the size checks.
  static func llamaMetadata(hidden: UInt32, vocab: UInt32, layers: UInt32 = 1, ff: UInt32 = 64)
    -> [UInt8]
  {
    var g = GGUF()
    g.header(tensors: 0, kvs: 7)
    g.kvString("general.architecture", "llama")
    g.kvU32("llama.embedding_length", hidden)
    g.kvU32("llama.attention.head_count", 1)
    g.kvU32("llama.feed_forward_length", ff)
    g.kvU32("llama.block_count", layers)
    g.kvU32("llama.vocab_size", vocab)
    g.kvU32("llama.attention.key_length", 64)
    return g.bytes
  }

  /// A binary PPM header claiming `width`×`height`, with `data` bytes of pixels.
  static func ppm(_ width: Int, _ height: Int, data: Int) -> [UInt8] {
    Array("P6\n\(width) \(height)\n255\n".utf8) + [UInt8](repeating: 128, count: data)
  }

  /// A JPEG fixture with its frame header (SOF) edited to claim `width`×`height`.
  static func jpeg(claiming width: UInt16, _ height: UInt16) throws -> [UInt8] {
    var b = try [UInt8](Data(contentsOf: URL(fileURLWithPath: images + "/jpeg_444_37x29.jpg")))
    var i = 2
    while i + 9 < b.count {
      guard b[i] == 0xFF else { break }
      let marker = b[i + 1]
      let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
      if (0xC0...0xC2).contains(marker) {
        b[i + 5] = UInt8(height >> 8)
        b[i + 6] = UInt8(height & 0xFF)
        b[i + 7] = UInt8(width >> 8)
        b[i + 8] = UInt8(width & 0xFF)
        return b
      }
      i += 2 + length
    }
    throw TableError.message("no SOF marker in the JPEG fixture")
  }

  /// A notebook with one code cell holding `source`.
  static func notebook(_ source: String) -> String {
    let cell: [String: Any] = [
      "cell_type": "code", "id": "c1", "metadata": [:], "outputs": [], "execution_count": NSNull(),
      "source": source,
    ]
    let nb: [String: Any] = [
      "cells": [cell], "metadata": [:], "nbformat": 4, "nbformat_minor": 5,
    ]
    let data = try! JSONSerialization.data(withJSONObject: nb, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
  }

  // MARK: the cases, by row number

  static let gib = 1 << 30
  static let mib = 1 << 20

  let cases: [Int: Case] = {
    var c: [Int: Case] = [:]
    let idefics = "load \(vlm)/idefics3/model"

    // GGUF
    c[1] = Case { try write([UInt8](), $0 + "/empty.gguf") }
    c[2] = Case { try write("hello, this is not a model\n", $0 + "/notes.gguf") }
    c[3] = Case { try write(gguf(version: 1), $0 + "/v1.gguf") }
    c[4] = Case { try write(gguf(tensorCount: 1 << 40), $0 + "/count.gguf") }
    c[5] = Case {
      // tokenizer.ggml.tokens: an array of 2^40 strings.
      try write(
        gguf(kvs: [
          { g in
            g.string("tokenizer.ggml.tokens")
            g.u32(9)
            g.u32(8)
            g.u64(1 << 40)
          }
        ]), $0 + "/vocab.gguf")
    }
    c[6] = Case {
      var b = gguf(kvs: [{ $0.kvString("general.architecture", "llama") }])
      b.replaceSubrange(24..<32, with: [UInt8](repeating: 0xFF, count: 8))  // key length
      try write(b, $0 + "/key.gguf")
    }
    c[7] = Case { try write(gguf(dims: [1 << 32, 1 << 32]), $0 + "/dims.gguf") }
    c[8] = Case { try write(gguf(dims: [1 << 20, 1 << 10]), $0 + "/big.gguf") }
    c[9] = Case { try write(gguf(offset: 1 << 30), $0 + "/offset.gguf") }
    c[10] = Case { try write(gguf(type: 99), $0 + "/type.gguf") }
    c[11] = Case(needsDefaultModel: true) { folder in
      let real = try Data(contentsOf: URL(fileURLWithPath: defaultModelPath!))
      try real.prefix(4 << 20).write(to: URL(fileURLWithPath: folder + "/cut.gguf"))
    }
    c[12] = Case(availableMemory: 8 * gib) {
      try write(llamaMetadata(hidden: 1 << 20, vocab: 1 << 20), $0 + "/huge.gguf")
    }
    c[13] = Case(availableMemory: 64 * mib, needsDefaultModel: true) {
      try FileManager.default.createSymbolicLink(
        atPath: $0 + "/small.gguf", withDestinationPath: defaultModelPath!)
    }
    c[14] = Case { try write(llamaMetadata(hidden: 0, vocab: 100), $0 + "/zero.gguf") }
    c[15] = Case { try fifo($0 + "/pipe.gguf") }

    // safetensors
    c[16] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write([UInt8](), m + "/model.safetensors")
    }
    c[17] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(safetensors(header: "{}", data: 0, lengthField: 1 << 40), m + "/model.safetensors")
    }
    c[18] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(safetensors(header: "{not json", data: 0), m + "/model.safetensors")
    }
    c[19] = Case { folder in
      // 1024×1024 float32 = 4 MiB claimed; the file has 64 bytes of data.
      let m = try copyModel("llava", into: folder)
      try write(
        safetensors(
          header: #"{"w":{"dtype":"F32","shape":[1024,1024],"data_offsets":[0,4194304]}}"#, data: 64
        ),
        m + "/model.safetensors")
    }
    c[20] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(
        safetensors(
          header:
            #"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#,
          data: 16), m + "/model.safetensors")
    }
    c[21] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(
        safetensors(
          header: #"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#, data: 12),
        m + "/model.safetensors")
    }
    c[22] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try FileManager.default.removeItem(atPath: m + "/model.safetensors")
      try fifo(m + "/model.safetensors")
    }
    c[23] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(
        safetensors(header: #"{"a":"# + String(repeating: "[", count: 100_000), data: 0),
        m + "/model.safetensors")
    }
    c[24] = Case(availableMemory: 600 << 10) { _ = try copyModel("idefics3", into: $0) }

    // config.json
    c[25] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(#"{"model_type": "llava", "#, m + "/config.json")
    }
    c[26] = Case { try editedConfig("llava", $0, section: nil, ["model_type": "blip2"]) }
    c[27] = Case {
      try editedConfig("idefics3", $0, section: "text_config", ["num_hidden_layers": -1])
    }
    c[28] = Case {
      try editedConfig("idefics3", $0, section: "vision_config", ["num_hidden_layers": -1])
    }
    c[29] = Case {
      try editedConfig(
        "idefics3", $0, section: "text_config", ["hidden_size": 1 << 20, "vocab_size": 1 << 20])
    }
    c[30] = Case {
      try editedConfig("llava", $0, section: "vision_config", ["hidden_size": 1 << 40])
    }
    c[31] = Case {
      try editedConfig("qwen2_vl", $0, section: "vision_config", ["mlp_ratio": 1e300])
    }
    c[32] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try FileManager.default.removeItem(atPath: m + "/config.json")
      try fifo(m + "/config.json")
    }
    c[33] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try sparse(m + "/config.json", size: 2 * gib)
    }

    c[34] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(String(repeating: "[", count: 100_000), m + "/config.json")
    }
    // tokenizer.json
    func tokenizerEdit(_ change: @escaping (inout [String: Any]) -> Void) -> (String) throws -> Void
    {
      return { folder in
        let m = try copyModel("llava", into: folder)
        try editJSON(m + "/tokenizer.json", change)
      }
    }
    c[35] = Case(
      setUp: tokenizerEdit { t in
        var model = t["model"] as! [String: Any]
        var vocab = model["vocab"] as! [String: Any]
        vocab["<far>"] = 1 << 40
        model["vocab"] = vocab
        t["model"] = model
      })
    c[36] = Case(
      setUp: tokenizerEdit { t in
        var added = t["added_tokens"] as! [Any]
        added.append(["id": 1 << 40, "content": "<far>", "special": true])
        t["added_tokens"] = added
      })
    c[37] = Case(
      setUp: tokenizerEdit { t in
        var model = t["model"] as! [String: Any]
        var vocab = model["vocab"] as! [String: Any]
        vocab["<float>"] = 1e300
        model["vocab"] = vocab
        t["model"] = model
      })
    c[38] = Case(
      setUp: tokenizerEdit { t in
        var model = t["model"] as! [String: Any]
        model["type"] = "Unigram"
        t["model"] = model
      })
    c[39] = Case(
      setUp: tokenizerEdit { t in
        var model = t["model"] as! [String: Any]
        model["merges"] = ["zzzq zzzr"]
        t["model"] = model
      })
    c[40] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try sparse(m + "/tokenizer.json", size: 2 * gib)
    }

    c[41] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(String(repeating: "[", count: 100_000), m + "/tokenizer.json")
    }
    c[42] = Case { folder in
      let m = try copyModel("llava", into: folder)
      try write(#"{"model": {"type": "BPE", "vocab": {"#, m + "/tokenizer.json")
    }

    // preprocessor_config.json
    func prepEdit(_ family: String, _ change: @escaping (inout [String: Any]) -> Void) -> (
      String
    ) throws -> Void {
      return { folder in
        let m = try copyModel(family, into: folder)
        try editJSON(m + "/preprocessor_config.json", change)
      }
    }
    c[43] = Case(setUp: prepEdit("idefics3") { $0["size"] = ["longest_edge": 4096] })
    c[44] = Case(
      before: ["load m"],
      setUp: { folder in
        try prepEdit("idefics3") { $0["do_resize"] = false }(folder)
        try write(ppm(2000, 2000, data: 2000 * 2000 * 3), folder + "/big.ppm")
      })
    c[45] = Case(setUp: prepEdit("llava") { $0["size"] = ["shortest_edge": 100_000] })
    c[46] = Case(setUp: prepEdit("qwen2_vl") { $0["patch_size"] = 0 })
    c[47] = Case(
      setUp: prepEdit("qwen2_vl") { $0["size"] = ["shortest_edge": 256, "longest_edge": 1e12] })
    c[48] = Case { folder in
      let m = try copyModel("qwen2_vl", into: folder)
      try write("[1, 2", m + "/preprocessor_config.json")
    }

    c[49] = Case(
      setUp: prepEdit("qwen2_vl") {
        $0["size"] = ["shortest_edge": 1_000_000, "longest_edge": 1024]
      })
    c[50] = Case(
      setUp: prepEdit("llava") { $0["crop_size"] = ["height": 16384, "width": 16384] })
    // images (fed to the tiny Idefics3)
    c[51] = Case(before: [idefics]) {
      try VisionBadInputTests.png(width: 100_000, height: 100_000).write(
        to: URL(fileURLWithPath: $0 + "/h.png"))
    }
    c[52] = Case(before: [idefics]) { folder in
      let whole = try Data(contentsOf: URL(fileURLWithPath: vlm + "/images/img_70x40.png"))
      try whole.prefix(100).write(to: URL(fileURLWithPath: folder + "/t.png"))
    }
    c[53] = Case(before: [idefics]) { try write(jpeg(claiming: 65000, 65000), $0 + "/h.jpg") }
    c[54] = Case(before: [idefics]) { try write(ppm(100_000, 100_000, data: 16), $0 + "/h.ppm") }
    c[55] = Case(before: [idefics]) { try write(ppm(64, 64, data: 100), $0 + "/short.ppm") }
    c[56] = Case(before: [idefics]) { try fifo($0 + "/pipe.png") }
    c[57] = Case(before: [idefics]) { try sparse($0 + "/huge.png", size: 2 * gib) }
    c[58] = Case(before: [idefics]) { try write("hello\n", $0 + "/n.png") }

    c[59] = Case(before: [idefics]) { folder in
      try FileManager.default.createDirectory(
        atPath: folder + "/clip", withIntermediateDirectories: true)
      try fifo(folder + "/clip/000.png")
    }
    // scripts
    c[60] = Case { try write([0x65, 0xFF, 0xFE, 0x0A], $0 + "/bin.kvl") }
    c[61] = Case {
      try write("echo " + String(repeating: "x", count: 70000) + "\n", $0 + "/long.kvl")
    }
    c[62] = Case { try write("replay loop.kvl\n", $0 + "/loop.kvl") }
    c[63] = Case { try fifo($0 + "/pipe.kvl") }
    c[64] = Case { try sparse($0 + "/huge.kvl", size: gib) }
    c[65] = Case { folder in
      try write("not a model\n", folder + "/notes.gguf")
      try write("# a hostile model\nload notes.gguf\necho never\n", folder + "/s.kvl")
    }

    // notebooks
    c[66] = Case { try write(#"{"cells": ["#, $0 + "/bad.ipynb") }
    c[67] = Case { try write(String(repeating: "[", count: 100_000), $0 + "/deep.ipynb") }
    c[68] = Case {
      try write(
        #"{"metadata": {}, "nbformat": 3, "nbformat_minor": 0, "worksheets": []}"#,
        $0 + "/old.ipynb")
    }
    c[69] = Case { try fifo($0 + "/pipe.ipynb") }
    c[70] = Case(availableMemory: gib) {
      try write(notebook("budget 100GiB\necho never\n"), $0 + "/nb.ipynb")
    }

    // REPL commands
    c[71] = Case(availableMemory: gib, before: [idefics])
    c[72] = Case(availableMemory: gib)
    c[73] = Case()
    c[74] = Case()
    c[75] = Case()
    c[76] = Case(before: [idefics])
    c[77] = Case(before: [idefics])
    c[78] = Case(availableMemory: mib, before: [idefics, "budget 1024 tokens"])
    // No way in: kvlab has no shell escape, in scripts or notebooks (and no flag to add one).
    c[79] = Case { try write("!touch pwned\necho never\n", $0 + "/sh.kvl") }
    c[80] = Case { try write(notebook("%%bash\ntouch pwned\n"), $0 + "/sh.ipynb") }
    videoCases(into: &c)
    addSecondRound(&c, idefics: idefics)
    return c
  }()
}

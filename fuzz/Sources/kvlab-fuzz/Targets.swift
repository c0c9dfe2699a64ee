import Foundation
import KVModels
import KVRepl

/// One fuzz target: a format kvlab reads from strangers, driven through the same entry point
/// the REPL uses. Each must only ever throw (a clear error) or return: a trap, a sanitizer
/// report, a hang or a large allocation is a finding.
struct FuzzTarget: Sendable {
  let name: String
  let about: String
  let run: @convention(c) (UnsafeRawPointer?, Int) -> CInt
}

/// Every target, by the name `scripts/fuzz.sh` and the corpus folders use.
let fuzzTargets: [FuzzTarget] = [
  FuzzTarget(
    name: "gguf", about: "GGUF header, metadata, tensor table, tokenizer and model config",
    run: fuzzGGUF),
  FuzzTarget(
    name: "safetensors", about: "safetensors header, the non-finite scan and tensor conversion", run: fuzzSafetensors),
  FuzzTarget(name: "config", about: "config.json / preprocessor_config.json", run: fuzzConfig),
  FuzzTarget(
    name: "tokenizer", about: "tokenizer.json, then encode and decode", run: fuzzTokenizer),
  FuzzTarget(name: "script", about: "a .kvl script: lines, lexer, command table", run: fuzzScript),
  FuzzTarget(
    name: "notebook", about: "an .ipynb notebook: JSON reader, cells, writer", run: fuzzNotebook),
  FuzzTarget(name: "png", about: "PNG decoding through the libpng shim", run: fuzzPNG),
  FuzzTarget(name: "jpeg", about: "JPEG decoding through the TurboJPEG shim", run: fuzzJPEG),
]

// MARK: - Files

/// The file readers take paths and map them, as `load` does. Each input is written to one
/// scratch file per process, unlinked at once (in /dev/shm, memory, where there is one) and reached
/// through /proc/self/fd, so nothing is left behind however the run ends.
final class ScratchFile: Sendable {
  let fd: CInt

  init() {
    var made: CInt = -1
    for folder in ["/dev/shm", NSTemporaryDirectory()] where made < 0 {
      var template = Array(
        ((folder as NSString).appendingPathComponent("kvlab-fuzz-XXXXXX")).utf8CString)
      made = mkstemp(&template)
      if made >= 0 { unlink(template) }
    }
    precondition(
      made >= 0, "kvlab-fuzz: cannot create a scratch file in /dev/shm or the temporary folder")
    fd = made
  }

  /// The file holding exactly `data`, by a path the readers can open.
  func path(holding data: UnsafeRawBufferPointer) -> String? {
    guard ftruncate(fd, 0) == 0 else { return nil }
    var done = 0
    while done < data.count {
      let n = pwrite(fd, data.baseAddress! + done, data.count - done, off_t(done))
      if n <= 0 { return nil }
      done += n
    }
    return "/proc/self/fd/\(fd)"
  }
}

let scratch = ScratchFile()

func withMemoryFile(_ data: UnsafeRawBufferPointer, _ body: (String) -> Void) {
  if let path = scratch.path(holding: data) { body(path) }
}

func bytes(_ data: UnsafeRawPointer?, _ count: Int) -> UnsafeRawBufferPointer {
  UnsafeRawBufferPointer(start: count > 0 ? data : nil, count: count)
}

/// Tensors up to this many elements are converted too (bounded work per input).
let maxConvertedElements = 1 << 16

// MARK: - Targets

func fuzzGGUF(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  withMemoryFile(bytes(data, count)) { path in
    guard let file = try? GGUFFile(path: path) else { return }
    _ = try? file.firstNonFinite()  // the load-time scan
    for name in file.tensorNames {
      guard let info = try? file.tensor(name), info.elementCount <= maxConvertedElements else {
        continue
      }
      _ = try? file.dequantized(name, category: .weights, meter: nil)
    }
    if let tokenizer = try? BPETokenizer(gguf: file) {
      let ids = tokenizer.encode("Hello, world! <|im_start|> 123 ünïcødé")
      _ = tokenizer.decode(ids)
    }
    _ = ChatTemplate(gguf: file)
    if let config = try? DecoderConfig(gguf: file) { try? config.validate(source: path) }
    // The whole model only from small files: its float32 weights stay within ~8x the input.
    if file.fileSize < 1 << 20 { _ = try? LlamaModel.load(gguf: file, meter: nil) }
  }
  return 0
}

func fuzzSafetensors(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  withMemoryFile(bytes(data, count)) { path in
    guard let file = try? SafetensorsFile(path: path) else { return }
    _ = file.firstNonFinite()  // the load-time scan: every float tensor, whatever its size
    for name in file.tensorNames {
      guard let info = try? file.tensor(name), info.elementCount <= maxConvertedElements else {
        continue
      }
      _ = try? file.floats(name)
    }
  }
  return 0
}

func fuzzConfig(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  let json = Data(bytes(data, count))
  guard let value = try? JSONValue.parse(json), let dict = value.object else { return 0 }
  for key in [nil, "text_config"] as [String?] {
    let part = key.map { dict[$0] ?? .null } ?? value
    if let config = try? part.decode(DecoderConfig.self) {
      try? config.validate(source: "config.json")
    }
  }
  if let p = try? ImagePreprocessor(config: dict) { _ = try? p.outputSize(height: 480, width: 640) }
  _ = try? Idefics3ImageSplitter(config: dict, path: "preprocessor_config.json")
  return 0
}

func fuzzTokenizer(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  withMemoryFile(bytes(data, count)) { path in
    guard let tokenizer = try? BPETokenizer(tokenizerJSON: path) else { return }
    let ids = tokenizer.encode("Hello, world! <|im_start|>user 12345 ünïcødé\n\t  end")
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(Array(0..<min(64, tokenizer.vocabularySize)))
  }
  return 0
}

func fuzzScript(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  let text = String(decoding: bytes(data, count), as: UTF8.self)
  guard let script = try? Script(text: text, displayName: "fuzz.kvl") else { return 0 }
  let table = CommandTable(Repl.standardCommands)
  for entry in script.entries {
    guard let commands = try? Lexer.commands(entry.line) else { continue }
    for tokens in commands { _ = try? table.parse(tokens) }
    _ = Lexer.partial(entry.line)
  }
  _ = Script.rewrite(
    text, outputs: Dictionary(uniqueKeysWithValues: script.entries.map { ($0.lineNumber, ["x"]) }))
  return 0
}

func fuzzNotebook(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
  guard let notebook = try? Notebook(bytes: Array(bytes(data, count)), displayName: "fuzz.ipynb")
  else { return 0 }
  _ = notebook.serialized()
  return 0
}

func fuzzImage(_ data: UnsafeRawPointer?, _ count: Int, _ format: ImageFormat) -> CInt {
  let input = Array(bytes(data, count))
  // Only this target's format: the other decoders have their own target and corpus.
  guard ImageFormat.detect(input) == format else { return 0 }
  _ = try? ImageDecoder.decode(input, name: "fuzz." + format.rawValue, maxPixels: 1 << 22)
  return 0
}

func fuzzPNG(_ data: UnsafeRawPointer?, _ count: Int) -> CInt { fuzzImage(data, count, .png) }
func fuzzJPEG(_ data: UnsafeRawPointer?, _ count: Int) -> CInt { fuzzImage(data, count, .jpeg) }

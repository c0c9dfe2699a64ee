import Foundation
import KVTensor

/// A Hugging Face model folder as published: `config.json`, the weights in `model.safetensors` or
/// in shards listed by `model.safetensors.index.json`, and optionally
/// `preprocessor_config.json`. Opening reads and validates the config and every shard's header
/// (each mapped, not read); tensors are converted to float32 on request.
public final class HFModelFolder: @unchecked Sendable {
  public let path: String
  /// config.json, parsed.
  public let config: [String: JSONValue]
  /// `model_type` ("llava", "qwen2_vl", "idefics3", "llama", ...), if present.
  public var modelType: String? { config["model_type"]?.string }
  /// `architectures` (["LlavaForConditionalGeneration"], ...), empty if absent.
  public var architectures: [String] { config["architectures"]?.array?.compactMap(\.string) ?? [] }
  /// The safetensors files, in name order.
  public let files: [SafetensorsFile]
  /// Every tensor name, sorted.
  public var tensorNames: [String] {
    files.count == 1 ? files[0].tensorNames.sorted() : location.keys.sorted()
  }
  /// Tensor → index in `files`, when there are several (one file answers for itself).
  private let location: [String: Int]

  /// Whether some file of the folder holds a tensor of this name.
  public func hasTensor(_ name: String) -> Bool { fileIndex(name) != nil }

  private func fileIndex(_ name: String) -> Int? {
    files.count == 1 ? (files[0].hasTensor(name) ? 0 : nil) : location[name]
  }

  /// Refuses weights holding a value that is not a finite number (a NaN or an infinity makes
  /// every logit NaN), naming the file and the tensor: one pass over every float tensor's bytes.
  public func requireFiniteWeights() throws {
    for file in files {
      if let (tensor, index) = file.firstNonFinite() {
        throw SafetensorsError(
          path: file.path,
          message:
            "tensor \(GGUFFile.quoted(tensor)): element \(index) is not a finite number (NaN or infinity)"
        )
      }
    }
  }

  public init(path: String) throws {
    self.path = path
    let fm = FileManager.default
    func fail(_ m: String) -> SafetensorsError { SafetensorsError(path: path, message: m) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw fail("no such folder") }
    guard isDir.boolValue else {
      throw fail("not a folder (a Hugging Face model folder holds config.json and *.safetensors)")
    }

    // config.json
    guard fm.fileExists(atPath: file("config.json")) else {
      throw fail("no config.json in this folder")
    }
    self.config = try Self.readJSONObject(file("config.json"))

    // Weights
    let indexPath = file("model.safetensors.index.json")
    var shardNames: [String]
    var expected: [String: String] = [:]  // tensor → shard, from the index
    if fm.fileExists(atPath: indexPath) {
      let index = try Self.readJSONObject(indexPath)
      guard let map = index["weight_map"]?.object else {
        throw SafetensorsError(path: indexPath, message: "no \"weight_map\" object")
      }
      for (tensor, shard) in map {
        guard let s = shard.string else {
          throw SafetensorsError(
            path: indexPath,
            message:
              "weight_map[\(GGUFFile.quoted(tensor))] must be a file name, got \(shard.brief)")
        }
        guard !s.contains("/"), s != "..", s != "." else {
          throw SafetensorsError(
            path: indexPath, message: "shard name \(GGUFFile.quoted(s)) is not a plain file name")
        }
        expected[tensor] = s
      }
      shardNames = Array(Set(expected.values)).sorted()
      for s in shardNames where !fm.fileExists(atPath: file(s)) {
        let count = expected.values.filter { $0 == s }.count
        throw fail(
          "missing safetensors shard \(GGUFFile.quoted(s)) (model.safetensors.index.json places "
            + "\(count) tensor\(count == 1 ? "" : "s") there)")
      }
    } else if fm.fileExists(atPath: file("model.safetensors")) {
      shardNames = ["model.safetensors"]
    } else {
      let all = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter {
        $0.hasSuffix(".safetensors")
      }
      guard !all.isEmpty else {
        throw fail(
          "no model.safetensors, model.safetensors.index.json or other *.safetensors in this folder"
        )
      }
      shardNames = all.sorted()
    }

    var files: [SafetensorsFile] = []
    var location: [String: Int] = [:]
    for (i, name) in shardNames.enumerated() {
      let f = try SafetensorsFile(path: file(name))
      for t in shardNames.count == 1 ? [] : f.tensorInfos.lazy.map(\.name) {
        if let j = location[t] {
          throw fail("tensor \(GGUFFile.quoted(t)) is in both \(shardNames[j]) and \(name)")
        }
        location[t] = i
      }
      files.append(f)
    }
    for (tensor, shard) in expected {
      let at = shardNames.count == 1 ? (files[0].hasTensor(tensor) ? 0 : nil) : location[tensor]
      guard let i = at, shardNames[i] == shard else {
        throw fail(
          "model.safetensors.index.json places tensor \(GGUFFile.quoted(tensor)) in \(shard), "
            + (at.map { "but it is in \(shardNames[$0])" }
              ?? "which has no such tensor"))
      }
    }
    self.files = files
    self.location = location
  }

  static func readJSONObject(_ path: String) throws -> [String: JSONValue] {
    let data: Data
    do {
      data = Data(try BoundedFile.contents(path, limit: BoundedFile.jsonLimit))
    } catch let f as BoundedFile.Failure {
      throw SafetensorsError(path: path, message: f.message)
    }
    let value: JSONValue
    do {
      value = try JSONValue.parse(data)
    } catch let e as JSONParseError {
      throw SafetensorsError(path: path, message: e.fileMessage)
    }
    guard let object = value.object else {
      throw SafetensorsError(path: path, message: "not a JSON object")
    }
    return object
  }

  /// The file holding `name` and the tensor's description.
  public func tensor(_ name: String) throws -> (file: SafetensorsFile, info: SafetensorsTensorInfo)
  {
    guard let i = fileIndex(name) else {
      throw SafetensorsError(
        path: path, message: "no tensor named \(GGUFFile.quoted(name)) in the model's safetensors")
    }
    return (files[i], try files[i].tensor(name))
  }

  /// The tensor as float32 values, after checking its shape when `shape` is given.
  public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
    let (file, _) = try checkedTensor(name, shape: shape)
    return try file.floats(name)
  }

  /// The tensor as a metered FloatBuffer, after checking its shape when `shape` is given.
  public func loaded(
    _ name: String, shape: [Int]? = nil, category: MemoryCategory, meter: MemoryMeter?
  )
    throws -> FloatBuffer
  {
    let (file, _) = try checkedTensor(name, shape: shape)
    return try file.loaded(name, category: category, meter: meter)
  }

  /// The tensor, or an error when its shape is not what the config implies.
  @discardableResult
  public func checkedTensor(_ name: String, shape: [Int]?) throws -> (
    file: SafetensorsFile, info: SafetensorsTensorInfo
  ) {
    let (file, info) = try tensor(name)
    if let shape, shape != info.shape {
      throw SafetensorsError(
        path: file.path,
        message:
          "tensor \(GGUFFile.quoted(name)) has shape \(info.shape), but config.json implies \(shape)"
      )
    }
    return (file, info)
  }

  /// Decodes config.json, or its sub-object at `key` ("text_config", "vision_config"), as `T`.
  public func decodeConfig<T: Decodable>(_ type: T.Type, at key: String? = nil) throws -> T {
    let configPath = (path as NSString).appendingPathComponent("config.json")
    var value = JSONValue.object(config)
    if let key {
      guard let sub = config[key], sub.object != nil else {
        throw SafetensorsError(path: configPath, message: "no \"\(key)\" object")
      }
      value = sub
    }
    do {
      return try value.decode(T.self)
    } catch let DecodingError.keyNotFound(k, ctx) {
      throw SafetensorsError(
        path: configPath,
        message:
          "\(key.map { "\"\($0)\": " } ?? "")missing \"\(Self.keyPath(ctx.codingPath + [k]))\"")
    } catch let DecodingError.typeMismatch(_, ctx) {
      throw SafetensorsError(
        path: configPath,
        message:
          "\(key.map { "\"\($0)\": " } ?? "")\"\(Self.keyPath(ctx.codingPath))\" has the wrong type"
      )
    } catch let DecodingError.valueNotFound(_, ctx) {
      throw SafetensorsError(
        path: configPath,
        message: "\(key.map { "\"\($0)\": " } ?? "")\"\(Self.keyPath(ctx.codingPath))\" is null")
    } catch let DecodingError.dataCorrupted(ctx) {
      throw SafetensorsError(
        path: configPath,
        message: "\"\(([key].compactMap { $0 } + [Self.keyPath(ctx.codingPath)]).joined(separator: "."))\": "
          + ctx.debugDescription)
    } catch let e as SafetensorsError {
      throw e
    } catch {
      throw SafetensorsError(
        path: configPath, message: "\(key.map { "\"\($0)\": " } ?? "")\(error)")
    }
  }

  private static func keyPath(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
  }

  /// The image preprocessing of `preprocessor_config.json`, or nil when the folder has none.
  public func imagePreprocessor() throws -> ImagePreprocessor? {
    let p = (path as NSString).appendingPathComponent("preprocessor_config.json")
    guard FileManager.default.fileExists(atPath: p) else { return nil }
    do {
      return try ImagePreprocessor(config: try Self.readJSONObject(p), path: p)
    } catch let e as ImagePreprocessor.ConfigError {
      throw SafetensorsError(path: p, message: String(e.message.dropFirst(p.count + 2)))
    }
  }
}

import Foundation
import KVTensor

/// A model as loaded: its decoder, tokenizer and chat layout, and the vision tower in front of
/// the decoder when the family has one.
public struct LoadedModel {
  public let family: ModelFamily
  public let decoder: LlamaModel
  public let tokenizer: BPETokenizer
  public let chat: ChatLayout
  public let vision: (any VisionLanguageModel)?
}

/// One family of models kvlab loads: the names that select it (config.json's `model_type`, a
/// GGUF's `general.architecture`) and how to build it from a folder or a file. What differs
/// per family beyond that (prompt layout, tensor names, the visual unit, options such as
/// `split=`) lives in the family's model type, never in the engine or the REPL.
public struct ModelFamily: Sendable, CustomStringConvertible {
  public let name: String
  /// config.json `model_type` values that select this family.
  public let modelTypes: [String]
  /// GGUF `general.architecture` values that select this family.
  public let ggufArchitectures: [String]
  /// What one visual unit is called in reports ("tile", "image"); nil for a text decoder.
  public let visualUnit: String?
  /// Options a feed of this family takes beyond the common ones (`split`).
  public let feedOptions: [String]
  let loadFolder:
    (@Sendable (ModelFamily, HFModelFolder, String, MemoryMeter?) throws -> LoadedModel)?
  let loadGGUF:
    (@Sendable (ModelFamily, GGUFFile, WeightPrecision, MemoryMeter?) throws -> LoadedModel)?

  public var hasVision: Bool { visualUnit != nil }

  public var description: String { name }

  /// A vision-language family: `model` builds it from a folder whose `model_type` is one of
  /// `modelTypes`; its visual unit and feed options are the model type's own.
  public static func vision<Model: VisionLanguageFamily>(
    _ name: String, _ model: Model.Type, modelTypes: [String]
  ) -> ModelFamily {
    ModelFamily(
      name: name, modelTypes: modelTypes, ggufArchitectures: [], visualUnit: Model.unitName,
      feedOptions: Model.feedOptions,
      loadFolder: { family, folder, type, meter in
        let vlm = try Model(folder: folder, modelType: type, meter: meter)
        return LoadedModel(
          family: family, decoder: vlm.decoder,
          tokenizer: vlm.tokenizer, chat: vlm.chat, vision: vlm)
      }, loadGGUF: nil)
  }

  /// A llama-style decoder: from a Hugging Face folder (config.json + safetensors +
  /// tokenizer.json, ChatML) and from a GGUF file (its tokenizer and chat template).
  public static func decoder(_ name: String, modelTypes: [String], ggufArchitectures: [String])
    -> ModelFamily
  {
    ModelFamily(
      name: name, modelTypes: modelTypes, ggufArchitectures: ggufArchitectures, visualUnit: nil,
      feedOptions: [],
      loadFolder: { family, folder, _, meter in
        let config = try folder.decodeConfig(DecoderConfig.self)
        let tokenizer = try VisionLanguageModels.tokenizer(in: folder)
        let model = try LlamaModel.load(
          folder: folder, prefix: try LlamaModel.tensorPrefix(in: folder), config: config,
          meter: meter)
        return LoadedModel(
          family: family, decoder: model, tokenizer: tokenizer,
          chat: ChatLayout(.chatML), vision: nil)
      },
      loadGGUF: { family, gguf, precision, meter in
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel.load(gguf: gguf, precision: precision, meter: meter)
        return LoadedModel(
          family: family, decoder: model, tokenizer: tokenizer,
          chat: ChatLayout(ChatTemplate(gguf: gguf) ?? .chatML), vision: nil)
      })
  }
}

/// A vision-language model type the registry can build: its constructor from a folder and
/// what the REPL says about its input.
public protocol VisionLanguageFamily: VisionLanguageModel {
  /// What one visual unit of this family is called ("tile", "image", "temporal patch").
  static var unitName: String { get }
  /// Feed options of this family (`split` for a family that tiles images).
  static var feedOptions: [String] { get }
  /// Builds the model from an opened folder whose config.json has `modelType`.
  init(folder: HFModelFolder, modelType: String, meter: MemoryMeter?) throws
}

extension VisionLanguageFamily {
  public static var feedOptions: [String] { [] }
}

/// Every family kvlab loads, one line each (docs/adding-a-model.md). A folder is matched by
/// config.json's `model_type`, a GGUF file by `general.architecture`.
public enum ModelRegistry {
  public static let families: [ModelFamily] = [
    .decoder("llama", modelTypes: ["llama"], ggufArchitectures: ["llama"]),
    .decoder("qwen2", modelTypes: ["qwen2"], ggufArchitectures: ["qwen2"]),
    .decoder("qwen3", modelTypes: ["qwen3"], ggufArchitectures: ["qwen3"]),
    .vision("idefics3", Idefics3Model.self, modelTypes: ["idefics3", "smolvlm"]),
    .vision("llava", LlavaModel.self, modelTypes: ["llava"]),
    .vision("qwen2_vl", Qwen2VLModel.self, modelTypes: ["qwen2_vl"]),
    .vision("qwen2_5_vl", Qwen2VLModel.self, modelTypes: ["qwen2_5_vl"]),
    .vision("internvl", InternVLModel.self, modelTypes: ["internvl"]),
  ]

  public static func family(named name: String) -> ModelFamily? {
    families.first { $0.name == name }
  }

  public static func family(modelType: String) -> ModelFamily? {
    families.first { $0.modelTypes.contains(modelType) }
  }

  public static func family(ggufArchitecture: String) -> ModelFamily? {
    families.first { $0.ggufArchitectures.contains(ggufArchitecture) }
  }

  /// Every `model_type` a folder may have, in registry order.
  public static var modelTypes: [String] { families.flatMap(\.modelTypes) }
  /// Every GGUF architecture a file may have.
  public static var ggufArchitectures: [String] { families.flatMap(\.ggufArchitectures) }
  /// The vision-language families' names (what a `feed image` needs loaded).
  public static var visionFamilies: [String] { families.filter(\.hasVision).map(\.name) }

  /// Builds the model of an opened Hugging Face folder, chosen by its `model_type`.
  public static func load(folder: HFModelFolder, meter: MemoryMeter?) throws -> LoadedModel {
    let type = folder.modelType ?? "(none)"
    guard let family = family(modelType: type), let load = family.loadFolder else {
      throw ModelError(
        path: (folder.path as NSString).appendingPathComponent("config.json"),
        message:
          "model_type '\(type)' is not a supported architecture (\(modelTypes.joined(separator: ", ")))"
      )
    }
    return try load(family, folder, type, meter)
  }

  /// The family of an opened GGUF file, or an error naming the architectures kvlab reads (the
  /// cheapest check: made before the tokenizer or any weight is read).
  public static func family(of gguf: GGUFFile) throws -> ModelFamily {
    guard let arch = gguf.metadata["general.architecture"]?.string else {
      throw ModelError(path: gguf.path, message: "no general.architecture in metadata")
    }
    guard let family = family(ggufArchitecture: arch), family.loadGGUF != nil else {
      throw ModelError(
        path: gguf.path,
        message:
          "architecture '\(arch)' is not supported (\(ggufArchitectures.joined(separator: ", ")))")
    }
    return family
  }

  /// Builds the model of an opened GGUF file (`precision`: the matrices as stored, or float32).
  public static func load(gguf: GGUFFile, precision: WeightPrecision, meter: MemoryMeter?) throws
    -> LoadedModel
  {
    let family = try family(of: gguf)
    return try family.loadGGUF!(family, gguf, precision, meter)
  }
}

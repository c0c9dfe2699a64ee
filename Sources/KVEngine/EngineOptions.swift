import Foundation

public struct EngineOptions: Sendable {
  /// Threads for BLAS and the engine's own loops.
  public var threads: Int
  /// Tokens per prefill forward: bounds activation memory; results do not depend on it
  /// beyond float rounding.
  public var prefillChunk: Int
  /// Folders searched for the default model, in order.
  public var modelDirectories: [String]
  /// What `load` with no path loads: a file or model folder name looked up in
  /// `modelDirectories`.
  public var defaultModel: String
  /// Bytes `load` and `budget` may allocate: nil (the default) asks the system at each check
  /// (`SystemMemory.available()`, MemAvailable); a number pretends, so that tests can provoke
  /// the refusals without a machine too small for the model.
  public var availableMemory: Int?

  public init(
    threads: Int = 2, prefillChunk: Int = 512,
    modelDirectories: [String] = EngineOptions.modelFolders,
    defaultModel: String = EngineOptions.embeddedModel, availableMemory: Int? = nil
  ) {
    self.threads = threads
    self.prefillChunk = prefillChunk
    self.modelDirectories = modelDirectories
    self.defaultModel = defaultModel
    self.availableMemory = availableMemory
  }

  /// The model `load` uses when given no path: kvlab's own vision-language model, trained on the
  /// synthetic tasks and committed under `weights/` (weights/kvlab-shapes/MODEL_CARD.md).
  public static let embeddedModel = "kvlab-shapes"
  /// The folders models live in, relative to the repository (or the working folder): the
  /// committed embedded model in `weights/`, what `scripts/setup.sh` fetches in `models/`.
  public static let modelFolders = ["weights", "models"]
  /// The environment variable naming one more folder to look in first (read by the `kvlab`
  /// executable; named here so that the error of a failed look-up can say it).
  public static let modelsVariable = "KVLAB_MODELS"
  /// The text model `scripts/setup.sh` fetches into `models/`.
  public static let textModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf"
}

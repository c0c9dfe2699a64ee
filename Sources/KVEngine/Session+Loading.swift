import Foundation
import KVCache
import KVModels
import KVTasks
import KVTensor

extension Session {
  // MARK: load

  /// Resolves the default model: the first `modelDirectories` entry holding it.
  public func defaultModelPath() -> String? {
    options.modelDirectories.map {
      ($0 as NSString).appendingPathComponent(options.defaultModel)
    }
    .first { FileManager.default.fileExists(atPath: $0) }
  }

  /// Loads a GGUF decoder, or a Hugging Face folder (config.json + safetensors): a
  /// vision-language model (Idefics3/SmolVLM, LLaVA, Qwen2-VL) or a llama/qwen2 decoder.
  /// `precision` applies to GGUF files: `.f32` dequantizes every matrix (the reference path).
  public func load(_ path: String?, precision: WeightPrecision = .stored) throws -> LoadReport {
    if path?.isEmpty == true { throw EngineError.invalid("empty model path") }
    guard let path = path ?? defaultModelPath() else {
      throw EngineError.invalid(
        "default model \(options.defaultModel) not found in \(options.modelDirectories.joined(separator: ", ")); "
          + "set \(EngineOptions.modelsVariable) to the folder that holds it, or give its path (load PATH)"
      )
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw EngineError.file(
        path: path, message: BoundedFile.missing(path, notThere: "no such file"))
    }
    let start = Date()
    // Drop the old model first so its memory is not held twice.
    unload()
    let name: String
    var visionParameters = 0
    if isDirectory.boolValue {
      guard
        FileManager.default.fileExists(
          atPath: (path as NSString).appendingPathComponent("config.json"))
      else {
        throw EngineError.file(
          path: path,
          message:
            "is a folder without config.json; expected a .gguf file or a Hugging Face model folder")
      }
      let folder = try HFModelFolder(path: path)
      // Matrices (2-D) stay as stored, mapped pages being resident memory too; vectors and
      // patch kernels become float32 (so do 2-D position tables, a few MiB at most, counted
      // as stored). The shapes are checked before each allocation.
      let stored = folder.files.reduce(0.0) { total, file in
        file.tensorInfos.reduce(total) {
          $0 + Double($1.dataOffsets.count) * ($1.shape.count == 2 ? 1 : 4.0 / Double($1.dtype.byteSize))
        }
      }
      let float32 = folder.files.allSatisfy { $0.tensorInfos.allSatisfy { $0.dtype == .F32 } }
      try checkFits(path: path, bytes: stored, form: float32 ? "float32" : "as stored")
      try folder.requireFiniteWeights()  // as GGUF weights are scanned below
      install(try ModelRegistry.load(folder: folder, meter: meter))
      visionParameters = vision?.visionParameterCount ?? 0
      name = (path as NSString).lastPathComponent
    } else {
      let gguf = try GGUFFile(path: path)
      // Cheapest checks first: an unsupported architecture is reported before the tokenizer or
      // any weight is read.
      _ = try ModelRegistry.family(of: gguf)
      let config = try DecoderConfig(gguf: gguf)
      // As stored, the weights take the file's bytes per element (mapped pages are resident
      // memory too); float32 takes 4. A file without tensors is counted as float32.
      let elements = gguf.tensors.values.reduce(0.0) { $0 + Double($1.elementCount) }
      let stored = gguf.tensors.values.reduce(0.0) { $0 + Double($1.byteCount) }
      let perElement = precision == .f32 || elements == 0 ? 4 : stored / elements
      try checkFits(
        path: path, bytes: perElement * config.weightElementCount,
        form: precision == .f32 ? "float32" : "as stored")
      // Every float the weights hold must be finite (a NaN scale makes every logit NaN): one
      // pass over the mapped bytes, on by default (its cost is measured in the README).
      if let (tensor, index, kind) = try gguf.firstNonFinite() {
        throw EngineError.file(
          path: path,
          message: "tensor \(tensor): \(kind) \(index) is not a finite number (NaN or infinity)")
      }
      install(try ModelRegistry.load(gguf: gguf, precision: precision, meter: meter))
      name = gguf.metadata["general.name"]?.string ?? (path as NSString).lastPathComponent
    }
    guard let model, let tokenizer else { throw EngineError.noModel }
    guard tokenizer.vocabularySize <= model.config.vocabularySize else {
      let size = tokenizer.vocabularySize
      unload()
      throw ModelError(
        path: path,
        message: "tokenizer has \(size) tokens, model only \(model.config.vocabularySize)")
    }
    modelPath = path
    reset()
    let c = model.config
    return LoadReport(
      path: path, name: name,
      architecture: vision?.family ?? c.architecture,
      parameters: model.parameterCount + visionParameters, layers: c.layers,
      vocabulary: c.vocabularySize, kvBytesPerToken: c.kvBytesPerToken,
      weightBytes: meter.reading(.weights).current,
      mappedWeightBytes: meter.reading(.mapped).current, weightFormat: model.weightFormat,
      seconds: Date().timeIntervalSince(start))
  }

  /// Measures the loaded GGUF model (matrices at their stored precision) against its float32
  /// reference: the same file loaded again dequantized for the measurement (not charged to
  /// the session's meter), then dropped. The session itself is unchanged.
  public func fidelity(steps: Int) throws -> FidelityReport {
    guard let model, let tokenizer, let path = modelPath else { throw EngineError.noModel }
    var isDirectory: ObjCBool = false
    guard vision == nil, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory),
      !isDirectory.boolValue
    else {
      throw EngineError.invalid(
        "fidelity compares a GGUF model with its float32 reference; this model is float32 already")
    }
    guard model.weightFormat != "F32" else {
      throw EngineError.invalid(
        "the loaded model is float32 already (precision=f32): load it with precision=stored")
    }
    let gguf = try GGUFFile(path: path)
    try checkFits(path: path, bytes: 4 * model.config.weightElementCount)
    let reference = try LlamaModel.load(gguf: gguf, precision: .f32, meter: nil)
    return try Fidelity.measure(
      fast: model, reference: reference, tokenizer: tokenizer, steps: steps,
      cancellation: cancellation)
  }

  /// Bytes that may be allocated now (`EngineOptions.availableMemory`, else the system's).
  func availableMemory() -> Int? { options.availableMemory ?? SystemMemory.available() }

  /// Refuses a model whose weights would not fit in the memory available, before any is read.
  func checkFits(path: String, bytes: Double, form: String = "float32") throws {
    guard let available = availableMemory(), bytes > Double(available) else { return }
    throw EngineError.file(
      path: path,
      message:
        "needs \(SystemMemory.describe(bytes)) of memory for its weights (\(form)), "
        + "\(SystemMemory.describe(available)) available")
  }

  func install(_ loaded: LoadedModel) {
    family = loaded.family
    model = loaded.decoder
    vision = loaded.vision
    tokenizer = loaded.tokenizer
    chat = loaded.chat
    stopIDs = Set(chat.stopTokens.compactMap { loaded.tokenizer.id(of: $0) })
    if let eos = loaded.tokenizer.eosID { stopIDs.insert(eos) }
  }

  public func unload() {
    memoryTrace = []
    lastAsk = nil
    kv = nil
    model = nil
    vision = nil
    family = nil
    pendingBlocks = []
    tokenizer = nil
    modelPath = nil
    contextCount = 0
    segments = []
    nextRopePosition = 0
    userTurnOpen = false
    lastFedVisual = false
    lastLogits = nil
  }

  /// Empties the cache and the context; the model stays loaded.
  public func reset() {
    lastAsk = nil
    pendingBlocks = []
    stepsRun = 0
    contextCount = 0
    segments = []
    nextRopePosition = 0
    feeds = 0
    visualInputs = 0
    userTurnOpen = false
    lastFedVisual = false
    lastLogits = nil
    // Release the old cache before allocating the new one, so the two never coexist.
    kv = nil
    guard let model else { return }
    let builder = cacheBuilder(model.config)
    do {
      kv = try builder.make(cacheSettings)
    } catch {
      // A budget set before loading that this model cannot honour (e.g. bytes below one
      // token): the full cache, and the settings say so.
      cacheSettings.mode = .full
      kv = .full(builder.full())
    }
  }
}

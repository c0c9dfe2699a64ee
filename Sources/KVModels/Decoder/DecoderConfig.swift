/// Hyper-parameters of a llama-style decoder (llama, qwen2, qwen3), decoded straight from a Hugging Face
/// config.json (Codable keys as transformers writes them) or built from GGUF metadata.
public struct DecoderConfig: Codable, Equatable, Sendable {
  public var architecture: String
  public var hiddenSize: Int
  public var intermediateSize: Int
  public var layers: Int
  public var heads: Int
  public var kvHeads: Int
  public var headDim: Int
  public var vocabularySize: Int
  public var ropeTheta: Float
  public var rmsNormEps: Float
  public var contextLength: Int
  public var tiedEmbeddings: Bool
  public var attentionBias: Bool
  /// Qwen2-VL's M-RoPE: how the d/2 rotary frequencies split over the temporal, height and
  /// width position axes (`rope_parameters.mrope_section`); nil for 1-D RoPE.
  public var mropeSection: [Int]? = nil

  enum CodingKeys: String, CodingKey {
    case architecture = "model_type"
    case hiddenSize = "hidden_size"
    case intermediateSize = "intermediate_size"
    case layers = "num_hidden_layers"
    case heads = "num_attention_heads"
    case kvHeads = "num_key_value_heads"
    case headDim = "head_dim"
    case vocabularySize = "vocab_size"
    case ropeTheta = "rope_theta"
    case rmsNormEps = "rms_norm_eps"
    case contextLength = "max_position_embeddings"
    case tiedEmbeddings = "tie_word_embeddings"
    case attentionBias = "attention_bias"
    case mropeSection = "mrope_section"
  }

  public init(
    architecture: String, hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int,
    kvHeads: Int, headDim: Int, vocabularySize: Int, ropeTheta: Float, rmsNormEps: Float,
    contextLength: Int, tiedEmbeddings: Bool, attentionBias: Bool
  ) {
    self.architecture = architecture
    self.hiddenSize = hiddenSize
    self.intermediateSize = intermediateSize
    self.layers = layers
    self.heads = heads
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.vocabularySize = vocabularySize
    self.ropeTheta = ropeTheta
    self.rmsNormEps = rmsNormEps
    self.contextLength = contextLength
    self.tiedEmbeddings = tiedEmbeddings
    self.attentionBias = attentionBias
  }

  /// Qwen3's per-head RMSNorm of Q and K (before RoPE): a property of the family, so it is
  /// not a stored field (config.json has no key for it).
  public var qkNorm: Bool { ["qwen3", "qwen3_text"].contains(architecture) }

  /// Keys of config.json that are read but not stored.
  enum ExtraKeys: String, CodingKey {
    case ropeParameters = "rope_parameters"  // transformers 5: {"rope_theta", "rope_type", ...}
    case ropeScaling = "rope_scaling"  // transformers 4: {"type" / "rope_type", ...}
    case mlpBias = "mlp_bias"
    case hiddenAct = "hidden_act"
    case useSlidingWindow = "use_sliding_window"
  }

  /// `rope_parameters` (transformers 5) or `rope_scaling` (4): only the fields this reads.
  struct RopeParameters: Decodable {
    var ropeTheta: Float?
    var ropeType: String?
    var type: String?
    var mropeSection: [Int]?
    enum CodingKeys: String, CodingKey {
      case ropeTheta = "rope_theta", ropeType = "rope_type", type, mropeSection = "mrope_section"
    }
  }

  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let extra = try decoder.container(keyedBy: ExtraKeys.self)
    architecture = try c.decode(String.self, forKey: .architecture)
    hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
    intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
    layers = try c.decode(Int.self, forKey: .layers)
    heads = try c.decode(Int.self, forKey: .heads)
    kvHeads = try c.decodeIfPresent(Int.self, forKey: .kvHeads) ?? heads
    // heads 0 (refused by `validate`) must not divide by zero first.
    headDim =
      try c.decodeIfPresent(Int.self, forKey: .headDim) ?? (heads > 0 ? hiddenSize / heads : 0)
    vocabularySize = try c.decode(Int.self, forKey: .vocabularySize)
    // transformers 5 writes rope_theta inside rope_parameters (a top-level rope_theta is 4.x).
    // A per-layer-type rope_parameters (a dict of dicts) decodes with every field nil.
    let rope = try? extra.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
    let scaling = try? extra.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling)
    ropeTheta =
      try rope?.ropeTheta ?? c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
    // Scaled RoPE (linear, dynamic, yarn, llama3, longrope) changes every angle: refuse it,
    // naming the key the file wrote it under.
    for (key, params) in [(ExtraKeys.ropeParameters, rope), (.ropeScaling, scaling)] {
      for kind in [params?.ropeType, params?.type].compactMap({ $0 })
      where !["default", "mrope"].contains(kind) {
        throw DecodingError.dataCorruptedError(
          forKey: key, in: extra,
          debugDescription:
            "rope type '\(kind)' is not supported (default, mrope: scaled RoPE is not implemented)")
      }
    }
    if try extra.decodeIfPresent(Bool.self, forKey: .mlpBias) == true {
      throw DecodingError.dataCorruptedError(
        forKey: .mlpBias, in: extra, debugDescription: "true is not supported (no MLP biases)")
    }
    if let act = try extra.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
      throw DecodingError.dataCorruptedError(
        forKey: .hiddenAct, in: extra,
        debugDescription: "'\(act)' is not supported (silu)")
    }
    // Qwen2/Qwen3 with sliding-window layers would attend differently past the window.
    if try extra.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) == true {
      throw DecodingError.dataCorruptedError(
        forKey: .useSlidingWindow, in: extra,
        debugDescription: "true is not supported (sliding-window attention is not implemented)")
    }
    mropeSection = rope?.mropeSection ?? scaling?.mropeSection
    rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
    contextLength = try c.decodeIfPresent(Int.self, forKey: .contextLength) ?? 2048
    tiedEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tiedEmbeddings) ?? false
    // qwen2 always has q/k/v biases; llama has them only when attention_bias is set.
    attentionBias =
      try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
      ?? ["qwen2", "qwen2_vl_text", "qwen2_vl", "qwen2_5_vl_text", "qwen2_5_vl"].contains(
        architecture)
  }

  /// Float32 elements of the decoder's weights once loaded: the embedding, per layer the fused
  /// q/k/v (and its bias), the output projection (and its bias), gate/up/down and two norms,
  /// the final norm and an untied output head. A Double: a hostile file's dimensions can
  /// multiply past Int (each is at most 2^20, checked by `validate`).
  public var weightElementCount: Double {
    let d = Double(hiddenSize)
    let q = Double(heads * headDim)
    let kv = Double(kvHeads * headDim)
    let vocab = Double(vocabularySize)
    var layer = (q + 2 * kv) * d + d * q + 3 * Double(intermediateSize) * d + 2 * d
    if attentionBias { layer += q + 2 * kv + d }
    if qkNorm { layer += 2 * Double(headDim) }
    return vocab * d * (tiedEmbeddings ? 1 : 2) + Double(layers) * layer + d
  }

  /// Bytes of K and V per cached token, all layers, float32.
  public var kvBytesPerToken: Int { 2 * layers * kvHeads * headDim * 4 }

  /// Checks that the numbers describe a model this decoder can run; `source` names the file.
  public func validate(source: String) throws {
    func bad(_ why: String) -> ModelError { ModelError(path: source, message: why) }
    for (name, v) in [
      ("hidden size", hiddenSize), ("intermediate size", intermediateSize), ("layers", layers),
      ("heads", heads), ("kv heads", kvHeads), ("head dim", headDim),
      ("vocabulary size", vocabularySize),
    ] where v <= 0 || v > 1 << 20 {
      throw bad("\(name) \(v) is out of range")
    }
    if heads % kvHeads != 0 { throw bad("\(heads) heads is not a multiple of \(kvHeads) KV heads") }
    if headDim % 2 != 0 { throw bad("head dim \(headDim) must be even for RoPE") }
    if !(rmsNormEps > 0) { throw bad("rms_norm_eps must be positive") }
    if !(ropeTheta > 0) { throw bad("rope_theta must be positive") }
    if let m = mropeSection, m.reduce(0, +) != headDim / 2 || m.contains(where: { $0 < 0 }) {
      throw bad("mrope_section \(m) must split the \(headDim / 2) rotary frequencies")
    }
  }
}

/// A model file that cannot be used: one line naming the file and what is wrong with it.
public struct ModelError: Error, CustomStringConvertible {
  public let path: String
  public let message: String
  public init(path: String, message: String) {
    self.path = path
    self.message = message
  }
  public var description: String { "\(path): \(message)" }
}

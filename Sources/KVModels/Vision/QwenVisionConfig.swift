import Foundation
import KVTensor

/// The `vision_config` of Qwen2-VL or Qwen2.5-VL, read into one shape. The two name the same
/// numbers differently: Qwen2-VL's `embed_dim` is the tower's width and `hidden_size` the
/// decoder's; Qwen2.5-VL's `hidden_size` is the tower's and `out_hidden_size` the decoder's.
struct QwenVisionConfig {
  var depth: Int
  var width: Int  // the tower's hidden size
  var outWidth: Int  // the decoder's hidden size (the merger's output)
  var heads: Int
  var intermediate: Int
  var patchSize: Int
  var mergeSize: Int
  var temporalPatch: Int
  var activation: String
  /// Qwen2.5-VL: windowed attention and the time-aware temporal index.
  var windowed: Windowing?

  struct Windowing {
    /// The window's side in merged units (`window_size / spatial_merge_size / patch_size`).
    var units: Int
    /// Blocks that attend over the whole frame instead of windows.
    var fullAttentionBlocks: Set<Int>
    /// M-RoPE temporal positions per second of video.
    var tokensPerSecond: Double
  }

  private struct Qwen2VL: Decodable {
    var depth: Int
    var embed_dim: Int
    var hidden_size: Int
    var mlp_ratio: Double?
    var num_heads: Int
    var patch_size: Int?
    var spatial_merge_size: Int?
    var temporal_patch_size: Int?
    var hidden_act: String?
    var in_channels: Int?
    var in_chans: Int?
  }

  private struct Qwen25VL: Decodable {
    var depth: Int
    var hidden_size: Int
    var out_hidden_size: Int
    var intermediate_size: Int
    var num_heads: Int
    var window_size: Int
    var fullatt_block_indexes: [Int]
    var tokens_per_second: Double
    var patch_size: Int?
    var spatial_merge_size: Int?
    var temporal_patch_size: Int?
    var hidden_act: String?
    var in_channels: Int?
    var in_chans: Int?
  }

  /// Reads and checks the folder's vision config for `family` ("qwen2_vl", "qwen2_5_vl").
  init(folder: HFModelFolder, family: String) throws {
    let configPath = (folder.path as NSString).appendingPathComponent("config.json")
    func fail(_ m: String) -> ModelError { ModelError(path: configPath, message: m) }
    var channels: Int
    if family == "qwen2_5_vl" {
      let vc = try folder.decodeConfig(Qwen25VL.self, at: "vision_config")
      (depth, width, outWidth, heads) = (vc.depth, vc.hidden_size, vc.out_hidden_size, vc.num_heads)
      intermediate = vc.intermediate_size
      (patchSize, mergeSize) = (vc.patch_size ?? 14, vc.spatial_merge_size ?? 2)
      temporalPatch = vc.temporal_patch_size ?? 2
      activation = vc.hidden_act ?? "silu"
      channels = vc.in_channels ?? vc.in_chans ?? 3
      guard activation == "silu" else {
        throw fail("vision_config.hidden_act '\(activation)' is not supported (silu)")
      }
      guard (1...(1 << 20)).contains(vc.window_size) else {
        throw fail("vision_config.window_size \(vc.window_size) is out of range (1...\(1 << 20))")
      }
      guard vc.tokens_per_second.isFinite, (0...1e6).contains(vc.tokens_per_second) else {
        throw fail(
          "vision_config.tokens_per_second \(vc.tokens_per_second) is out of range (0...1e6)")
      }
      for b in vc.fullatt_block_indexes where !(0..<max(1, vc.depth)).contains(b) {
        throw fail(
          "vision_config.fullatt_block_indexes holds \(b), but the tower has \(vc.depth) blocks")
      }
      // transformers divides by this: a window smaller than one merged patch has no units.
      let units = vc.window_size / max(1, mergeSize) / max(1, patchSize)
      guard units > 0 else {
        throw fail(
          "vision_config.window_size \(vc.window_size) is smaller than one merged patch (\(patchSize)·\(mergeSize) pixels)"
        )
      }
      windowed = Windowing(
        units: units, fullAttentionBlocks: Set(vc.fullatt_block_indexes),
        tokensPerSecond: vc.tokens_per_second)
    } else {
      let vc = try folder.decodeConfig(Qwen2VL.self, at: "vision_config")
      (depth, width, outWidth, heads) = (vc.depth, vc.embed_dim, vc.hidden_size, vc.num_heads)
      if let r = vc.mlp_ratio, !(r > 0 && r <= 64) {
        throw fail("vision_config.mlp_ratio \(r) is out of range (0...64]")
      }
      intermediate = Int(Double(vc.embed_dim) * (vc.mlp_ratio ?? 4))
      (patchSize, mergeSize) = (vc.patch_size ?? 14, vc.spatial_merge_size ?? 2)
      temporalPatch = vc.temporal_patch_size ?? 2
      activation = vc.hidden_act ?? "quick_gelu"
      channels = vc.in_channels ?? vc.in_chans ?? 3
      windowed = nil
    }
    let (widthKey, outKey) =
      family == "qwen2_5_vl" ? ("hidden_size", "out_hidden_size") : ("embed_dim", "hidden_size")
    for (name, v, limit) in [
      ("depth", depth, 1024), (widthKey, width, 1 << 20), (outKey, outWidth, 1 << 20),
      ("num_heads", heads, 1024), ("patch_size", patchSize, 1024),
      ("spatial_merge_size", mergeSize, 64), ("temporal_patch_size", temporalPatch, 64),
    ] where !(1...limit).contains(v) {
      throw fail("vision_config.\(name) \(v) is out of range (1...\(limit))")
    }
    guard channels == 3 else { throw fail("only 3-channel vision towers are supported") }
    guard width % heads == 0, (width / heads) % 4 == 0 else {
      throw fail("vision \(widthKey) \(width) / \(heads) heads must be a multiple of 4")
    }
  }
}

/// Qwen2.5-VL's attention windows over one frame's merged units (`rows × cols`, row-major): the
/// units listed window by window (windows row-major, `side × side` units each, the last row and
/// column of windows cut short), and each window's range in that list. transformers'
/// get_vision_window_index; its padding windows hold no units and drop out.
func qwenWindows(rows: Int, cols: Int, side: Int) -> (order: [Int], windows: [Range<Int>]) {
  var order: [Int] = []
  var windows: [Range<Int>] = []
  for wy in stride(from: 0, to: rows, by: side) {
    for wx in stride(from: 0, to: cols, by: side) {
      let start = order.count
      for r in wy..<min(rows, wy + side) {
        for c in wx..<min(cols, wx + side) { order.append(r * cols + c) }
      }
      windows.append(start..<order.count)
    }
  }
  return (order, windows)
}

import Foundation
import KVCache
import KVTensor
import XCTest

@testable import KVModels

/// The vision-language families against Hugging Face transformers 5.24.0 (fp32): tiny random
/// Idefics3, LLaVA, Qwen2-VL, Qwen2.5-VL and InternVL models saved as published folders, run on
/// PNG files by both. Per case: the prompt's token ids, the pixel tensors (kvlab's own
/// preprocessing), the connector's output, every logit of every position, argmax and an 8-token
/// greedy continuation. Fixtures from scripts/gen_vlm_fixtures.py and (InternVL)
/// scripts/gen_internvl_fixtures.py.
final class VisionParityTests: XCTestCase {
  struct Case: Decodable {
    let name: String
    let prompt: String
    let images: [String]
    let video_frames: [String]?
    /// The clip's frame rate given to the processor (Qwen2.5-VL's time-aware positions).
    let video_fps: Double?
    /// M-RoPE (temporal, height, width) positions of every token (Qwen families).
    let position_ids: [[Int]]?
    let processor_kwargs: [String: Bool]?
    /// Idefics3: the image processor's `size.longest_edge` for this case, if not the folder's.
    let longest_edge: Int?
    let input_ids: [Int]
    let argmax: [Int]
    let greedy: [Int]
    /// Qwen: the continuation a bare forward with a cache decodes (rope_deltas), where it is
    /// not `greedy`.
    let greedy_rope_deltas: [Int]?
    let files: [String: String]
  }
  struct Cases: Decodable { let cases: [Case] }

  static let dir = TestPaths.fixtures + "/vlm"
  static let logitTolerance: Float = 1e-4
  static let pixelTolerance: Float = 1e-5

  func testIdefics3MatchesTransformers() throws { try check("idefics3") }
  func testLlavaMatchesTransformers() throws { try check("llava") }
  func testQwen2VLMatchesTransformers() throws { try check("qwen2_vl") }
  /// A LLaVA as transformers 5.24 saves one it built (the CLIP tower under `vision_tower.`, not
  /// `vision_tower.vision_model.`).
  func testLlavaSavedLayoutMatchesTransformers() throws {
    try check("llava", base: "\(Self.dir)/llava_saved_layout")
  }
  func testQwen25VLMatchesTransformers() throws { try check("qwen2_5_vl") }
  /// Another Qwen2.5-VL shape: GQA 4:1, head dims 12 (decoder) and 8 (tower), 3×3-unit windows,
  /// full attention in blocks 0 and 2, an image and a 3 fps clip in one prompt.
  func testQwen25VLWideMatchesTransformers() throws {
    try check("qwen2_5_vl", base: "\(Self.dir)/qwen2_5_vl_wide")
  }

  /// InternVL (Qwen2 decoder, LayerNorm tower with q/k/v biases, 32-pixel tiles, up to 6 + a
  /// thumbnail): a multi-tile photograph, a grayscale and an RGBA one, an image and a clip.
  func testInternVLMatchesTransformers() throws { try check("internvl") }
  /// The other shape: Qwen3 decoder (GQA 5:1, head_dim 12), RMSNorm tower with QK norm and a
  /// final LayerNorm, 24-pixel tiles of 3-pixel patches, up to 4 tiles.
  func testInternVLQwen3MatchesTransformers() throws {
    try check("internvl", base: "\(Self.dir)/internvl_qwen3")
  }

  /// InternVL as the published `-hf` checkpoints name their tensors (`model.vision_tower.*`,
  /// `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.*`), where the fixture
  /// above holds what transformers 5.24 saves (`vision_tower.*`, `language_model.model.*`,
  /// `language_model.lm_head.*`): the same goldens (scripts/gen_layout_fixtures.py).
  func testInternVLPublishedLayoutMatchesTransformers() throws {
    let folder = "\(Self.dir)/internvl_qwen3_published/model"
    try assertLayout(
      folder,
      has: [
        "model.vision_tower.embeddings.cls_token", "model.multi_modal_projector.linear_1.weight",
        "model.language_model.embed_tokens.weight", "lm_head.weight",
      ],
      lacks: ["vision_tower.embeddings.cls_token", "language_model.lm_head.weight"])
    try check(
      "internvl", base: "\(Self.dir)/internvl_qwen3", modelFolder: folder, imageDir: Self.dir)
  }

  /// Qwen2.5-VL's published checkpoints have what transformers 5.24 saves (`model.layers.*`,
  /// `visual.*`); checkpoints saved by transformers 4.52-4.57 name the module tree instead
  /// (`model.language_model.*`, `model.visual.*`): the same goldens.
  func testQwen25VLModuleNamesMatchTransformers() throws {
    let folder = "\(Self.dir)/qwen2_5_vl_module_names/model"
    try assertLayout(
      folder,
      has: ["model.visual.patch_embed.proj.weight", "model.language_model.embed_tokens.weight"],
      lacks: ["visual.patch_embed.proj.weight", "model.embed_tokens.weight"])
    try check(
      "qwen2_5_vl", base: "\(Self.dir)/qwen2_5_vl", modelFolder: folder, imageDir: Self.dir)
  }

  private func assertLayout(_ folder: String, has: [String], lacks: [String]) throws {
    let f = try HFModelFolder(path: folder)
    for name in has { XCTAssertTrue(f.hasTensor(name), "\(folder): no \(name)") }
    for name in lacks { XCTAssertFalse(f.hasTensor(name), "\(folder): \(name)") }
  }

  /// An image of the wrong size given to LLaVA's encoder is a one-line error, not a read past
  /// its position table.
  func testLlavaRefusesAnImageOfTheWrongSize() throws {
    let model = try XCTUnwrap(
      try VisionLanguageModels.load(folder: "\(Self.dir)/llava/model", meter: nil) as? LlavaModel)
    let size = model.imageSize + model.patchSize
    let image = PixelValues(
      channels: 3, height: size, width: size, values: Array(repeating: 0, count: 3 * size * size))
    XCTAssertThrowsError(try model.encode([image], meter: nil)) { error in
      XCTAssertEqual(
        "\(error)",
        "llava: an image must be 3×\(model.imageSize)×\(model.imageSize), got 3×\(size)×\(size)")
    }
  }

  /// Qwen2.5-VL's temporal positions follow the clip's frame rate; a rate near zero is an error,
  /// not positions past Int.
  func testQwen25VLClipFrameRate() throws {
    let model = try XCTUnwrap(
      try VisionLanguageModels.load(folder: "\(Self.dir)/qwen2_5_vl/model", meter: nil)
        as? Qwen2VLModel)
    let frames = try (0..<4).map {
      try ImageSource(path: "\(Self.dir)/images/clip/frame_00\($0).png")
    }
    let index = VisualInputIndex(input: 0, image: 0)
    // 2 tokens per second, 2 frames per temporal patch: at 1 fps the patches are 4 apart.
    let slow = try model.layout(frames: frames, framesPerSecond: 1, at: index, start: 10)
    XCTAssertEqual(
      slow.segments.compactMap { $0.visual == nil ? nil : $0.ropeAxes?[0].first }, [11, 15])
    let times = ClipTimes(seconds: [0, 1, 2, 3], duration: 4)
    let timed = try model.layout(frames: frames, times: times, at: index, start: 10)
    XCTAssertEqual(timed.segments.map(\.ropeAxes), slow.segments.map(\.ropeAxes))
    XCTAssertThrowsError(
      try model.layout(frames: frames, framesPerSecond: 1e-12, at: index, start: 0))
    XCTAssertThrowsError(
      try model.layout(
        frames: frames, times: ClipTimes(seconds: [0, 1, 2, 3], duration: 1e300), at: index,
        start: 0))
  }

  /// Qwen2.5-VL's windows: units listed window by window, the last windows cut short.
  func testQwenWindowOrder() {
    let (order, windows) = qwenWindows(rows: 3, cols: 5, side: 2)
    XCTAssertEqual(order, [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14])
    XCTAssertEqual(windows, [0..<4, 4..<8, 8..<10, 10..<12, 12..<14, 14..<15])
    let one = qwenWindows(rows: 2, cols: 2, side: 4)
    XCTAssertEqual(one.order, [0, 1, 2, 3])
    XCTAssertEqual(one.windows, [0..<4])
  }

  /// The embedded default model (weights/kvlab-shapes, trained by
  /// scripts/train_default_model.py) on synthetic-task images: a single tile and a split image.
  /// Fixtures from scripts/gen_default_model_parity.py.
  func testEmbeddedModelMatchesTransformers() throws {
    try check(
      "idefics3", base: TestPaths.fixtures + "/kvlab-shapes",
      modelFolder: TestPaths.root + "/weights/kvlab-shapes")
  }

  /// The embedded model's tokenizer on answer texts, against transformers' ids: the region
  /// answers (" top-left", …) are added tokens of one id each, found inside other text too.
  func testEmbeddedTokenizerMatchesTransformers() throws {
    struct Tokenization: Decodable { let text: String; let ids: [Int] }
    struct Manifest: Decodable { let tokenization: [Tokenization] }
    let data = try Data(
      contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/kvlab-shapes/cases.json"))
    let manifest = try JSONDecoder().decode(Manifest.self, from: data)
    let tokenizer = try BPETokenizer(
      tokenizerJSON: TestPaths.root + "/weights/kvlab-shapes/tokenizer.json")
    XCTAssertFalse(manifest.tokenization.isEmpty)
    for t in manifest.tokenization {
      XCTAssertEqual(tokenizer.encode(t.text), t.ids, "encode \(t.text.debugDescription)")
      XCTAssertEqual(tokenizer.decode(t.ids), t.text, "decode \(t.ids)")
    }
  }

  /// A prompt laid out by the model: text pieces around the placeholders, images and clips in
  /// order, each visual piece by the model's own `layout`.
  static func segments(
    _ model: any VisionLanguageModel, _ c: Case, imageDir: String = dir
  ) throws -> [PromptSegment] {
    let placeholders: [(String, Bool)]
    switch model {
    case is Qwen2VLModel:
      placeholders = [
        ("<|vision_start|><|image_pad|><|vision_end|>", false),
        ("<|vision_start|><|video_pad|><|vision_end|>", true),
      ]
    case is InternVLModel: placeholders = [("<IMG_CONTEXT>", false), ("<video>", true)]
    default: placeholders = [("<image>", false)]
    }
    var rest = Substring(c.prompt)
    var images = c.images.makeIterator()
    var segments: [PromptSegment] = []
    var position = 0
    var visualIndex = 0
    let mrope = model.decoder.config.mropeSection != nil
    func text(_ s: Substring) {
      guard !s.isEmpty else { return }
      let seg = model.textSegment(
        String(s), origin: TokenOrigin(modality: .text, input: 0), start: position, mrope: mrope)
      segments.append(seg)
      position += seg.count
    }
    while true {
      let hits = placeholders.compactMap { p in rest.range(of: p.0).map { ($0, p.1) } }
      guard let (range, video) = hits.min(by: { $0.0.lowerBound < $1.0.lowerBound }) else { break }
      text(rest[..<range.lowerBound])
      let index = VisualInputIndex(input: 0, image: visualIndex)
      visualIndex += 1
      let layout: PromptLayout
      if video {
        let frames = try (c.video_frames ?? []).map { try ImageSource(path: "\(imageDir)/\($0)") }
        if let fps = c.video_fps {
          // Frames 1/fps apart over a clip of frames/fps seconds.
          let times = ClipTimes(
            seconds: frames.indices.map { Double($0) / fps }, duration: Double(frames.count) / fps)
          layout = try model.layout(frames: frames, times: times, at: index, start: position)
        } else {
          layout = try model.layout(frames: frames, at: index, start: position)
        }
      } else {
        let path = "\(imageDir)/\(try XCTUnwrap(images.next(), "more placeholders than images"))"
        layout = try model.layout(image: ImageSource(path: path), at: index, start: position)
      }
      segments += layout.segments
      position = layout.nextPosition
      rest = rest[range.upperBound...]
    }
    text(rest)
    return segments
  }

  /// `modelFolder`: another folder run on `base`'s cases, its images under `imageDir` (default:
  /// beside the cases when a model folder is given, else the shared images).
  private func check(
    _ family: String, base: String? = nil, modelFolder: String? = nil, imageDir: String? = nil
  ) throws {
    let base = base ?? "\(Self.dir)/\(family)"
    let cases = try JSONDecoder().decode(
      Cases.self, from: Data(contentsOf: URL(fileURLWithPath: "\(base)/cases.json"))
    ).cases
    XCTAssertFalse(cases.isEmpty)
    let meter = MemoryMeter()
    let model = try VisionLanguageModels.load(folder: modelFolder ?? "\(base)/model", meter: meter)
    XCTAssertEqual(model.family, family)
    let decoder = model.decoder
    let vocab = decoder.config.vocabularySize
    let mrope = decoder.config.mropeSection != nil
    for c in cases {
      // The case's processor settings on Idefics3's splitter; the folder's are restored after.
      let idefics = model as? Idefics3Model
      let folderSplitter = idefics?.splitter
      if let split = c.processor_kwargs?["do_image_splitting"] {
        idefics?.splitter.splitting = split
      }
      if let edge = c.longest_edge { idefics?.splitter.longestEdge = edge }
      defer { if let folderSplitter { idefics?.splitter = folderSplitter } }
      let segments = try Self.segments(
        model, c, imageDir: imageDir ?? (modelFolder == nil ? Self.dir : base))
      XCTAssertEqual(segments.flatMap(\.tokens), c.input_ids, "\(family)/\(c.name): token ids")
      guard segments.flatMap(\.tokens) == c.input_ids else { continue }
      if let expected = c.position_ids {
        let mine = (0..<3).map { a in segments.flatMap { $0.ropeAxes?[a] ?? $0.positions } }
        XCTAssertEqual(mine, expected, "\(family)/\(c.name): M-RoPE positions")
      }

      // Pixels and connector outputs, unit by unit, against the processor's and the model's.
      var imageUnits: [[PixelValues]] = []
      var videoUnits: [[PixelValues]] = []
      for s in segments {
        guard let v = s.visual else { continue }
        if s.origins[0].modality == .video {
          videoUnits.append(try v.pixels())
        } else {
          imageUnits.append(try v.pixels())
        }
      }
      for (units, pixelKey, featureKey) in [
        (imageUnits, "pixel_values", "features"),
        (videoUnits, "pixel_values_videos", "video_features"),
      ] where !units.isEmpty {
        let pixels = try NPYReader.read("\(base)/\(try XCTUnwrap(c.files[pixelKey]))").values
        let mine = units.flatMap { unitPixels($0, model: model) }
        XCTAssertEqual(mine.count, pixels.count, "\(family)/\(c.name): \(pixelKey) size")
        if mine.count == pixels.count {
          let gap = zip(mine, pixels).map { abs($0 - $1) }.max() ?? 0
          XCTAssertLessThanOrEqual(gap, Self.pixelTolerance, "\(family)/\(c.name): \(pixelKey)")
          print("parity \(family)/\(c.name) \(pixelKey): \(pixels.count) values, max |Δ| \(gap)")
        }
        let features = try NPYReader.read("\(base)/\(try XCTUnwrap(c.files[featureKey]))").values
        var encoded: [Float] = []
        for u in units {
          let m = try model.encode(u, meter: meter)
          encoded += Array(UnsafeBufferPointer(start: m.pointer, count: m.rows * m.cols))
        }
        XCTAssertEqual(encoded.count, features.count, "\(family)/\(c.name): \(featureKey) size")
        let gap = zip(encoded, features).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(gap, Self.logitTolerance, "\(family)/\(c.name): \(featureKey)")
      }

      // Every logit of every position, one forward per segment over a growing cache.
      let reference = try NPYReader.read("\(base)/\(try XCTUnwrap(c.files["logits"]))")
      XCTAssertEqual(reference.shape, [c.input_ids.count, vocab])
      let cache = DenseKVCache(
        layers: decoder.config.layers, kvHeads: decoder.config.kvHeads,
        headDim: decoder.config.headDim, meter: meter)
      var worst: Float = 0
      var index = 0
      var lastPosition = 0
      for s in segments {
        let x =
          try s.visual.map { try model.encode($0.pixels(), meter: meter) }
          ?? decoder.embed(s.tokens, meter: meter)
        let logits = try XCTUnwrap(
          decoder.forward(
            x, positions: Array(index..<(index + s.count)),
            ropeAxes: mrope ? (s.ropeAxes ?? [s.positions, s.positions, s.positions]) : nil,
            origins: s.origins, cache: cache, logits: .all, meter: meter))
        if !mrope {
          XCTAssertEqual(s.positions, Array(index..<(index + s.count)))
        }
        for r in 0..<s.count {
          let p = index + r
          XCTAssertEqual(argmax(logits.row(r), vocab), c.argmax[p], "\(family)/\(c.name) @\(p)")
          for col in 0..<vocab {
            worst = max(worst, abs(logits.row(r)[col] - reference.values[p * vocab + col]))
          }
        }
        index += s.count
        lastPosition = s.positions.last ?? lastPosition
      }
      XCTAssertLessThanOrEqual(worst, Self.logitTolerance, "\(family)/\(c.name): logits")
      print("parity \(family)/\(c.name): \(index) tokens × \(vocab), max |Δlogit| \(worst)")

      // Greedy continuation as transformers' generate makes it (M-RoPE: from the prompt's last
      // position, one a step; not rope_deltas' past the largest, which a slow clip's temporal
      // positions can put further on: greedy_rope_deltas, recorded where it differs).
      var next = c.argmax[index - 1]
      var generated: [Int] = []
      for step in 0..<c.greedy.count {
        generated.append(next)
        let rope = lastPosition + 1 + step
        let logits = try XCTUnwrap(
          decoder.forward(
            decoder.embed([next], meter: meter), positions: [mrope ? index + step : rope],
            ropeAxes: mrope ? [[rope], [rope], [rope]] : nil,
            origins: [TokenOrigin(modality: .generated, input: 0)], cache: cache, logits: .last,
            meter: meter))
        next = argmax(logits.pointer, vocab)
      }
      XCTAssertEqual(generated, c.greedy, "\(family)/\(c.name): greedy continuation")
      if let other = c.greedy_rope_deltas { XCTAssertNotEqual(other, c.greedy) }
    }
  }

  /// A unit's pixels in the processor's layout: channel-first tiles/images, or for Qwen2-VL the
  /// flattened patches in merge-block order.
  private func unitPixels(_ frames: [PixelValues], model: any VisionLanguageModel) -> [Float] {
    guard let qwen = model as? Qwen2VLModel else { return frames.flatMap(\.values) }
    let p = qwen.patchSize
    let order = qwen.patchOrder(gridRows: frames[0].height / p, gridCols: frames[0].width / p)
    let m = patchMatrix(frames, patch: p, order: order, category: .vision, meter: nil)
    return Array(UnsafeBufferPointer(start: m.pointer, count: m.rows * m.cols))
  }

  private func argmax(_ row: UnsafePointer<Float>, _ n: Int) -> Int {
    var best = 0
    for i in 1..<n where row[i] > row[best] { best = i }
    return best
  }
}

import Foundation

/// Channel-first float32 pixels, as a Hugging Face processor's `pixel_values` for one image
/// (before any model-specific patching): `values[(c * height + y) * width + x]`.
public struct PixelValues: Equatable, Sendable {
  public var channels: Int
  public var height: Int
  public var width: Int
  public var values: [Float]

  public init(channels: Int, height: Int, width: Int, values: [Float]) {
    precondition(values.count == channels * height * width)
    self.channels = channels
    self.height = height
    self.width = width
    self.values = values
  }
}

/// How a processor picks the resized size (the keys of its `size` dict, or Qwen2-VL's rule).
public enum ResizeRule: Equatable, Sendable {
  /// `{"height", "width"}`: exactly this size.
  case exact(height: Int, width: Int)
  /// `{"shortest_edge"}`: the short side becomes this, the long side keeps the aspect ratio
  /// (truncated), as `get_resize_output_image_size(..., default_to_square=False)`.
  case shortestEdge(Int)
  /// `{"shortest_edge", "longest_edge"}` in the generic processors: `get_size_with_aspect_ratio`.
  case shortestLongestEdge(shortest: Int, longest: Int)
  /// `{"max_height", "max_width"}`: `get_image_size_for_max_height_width`.
  case maxHeightWidth(maxHeight: Int, maxWidth: Int)
  /// Qwen2-VL's `smart_resize`: sides multiples of `factor` (patch · merge), pixel count within
  /// `minPixels...maxPixels`.
  case qwen2VL(factor: Int, minPixels: Int, maxPixels: Int)

  /// The (height, width) an image of this size is resized to, computed as transformers does,
  /// Python's float and rounding semantics included.
  public func outputSize(height: Int, width: Int) throws -> (height: Int, width: Int) {
    switch self {
    case .exact(let h, let w):
      return (h, w)
    case .shortestEdge(let size):
      let (short, long) = width <= height ? (width, height) : (height, width)
      let newLong = Int(Double(size * long) / Double(short))
      return width <= height ? (newLong, size) : (size, newLong)
    case .shortestLongestEdge(let shortest, let longest):
      return Self.sizeWithAspectRatio(
        height: height, width: width, size: shortest, maxSize: longest)
    case .maxHeightWidth(let maxHeight, let maxWidth):
      let scale = min(Double(maxHeight) / Double(height), Double(maxWidth) / Double(width))
      return (Int(Double(height) * scale), Int(Double(width) * scale))
    case .qwen2VL(let factor, let minPixels, let maxPixels):
      return try Self.smartResize(
        height: height, width: width, factor: factor, minPixels: minPixels, maxPixels: maxPixels)
    }
  }

  /// transformers' `get_size_with_aspect_ratio`.
  static func sizeWithAspectRatio(height: Int, width: Int, size: Int, maxSize: Int?) -> (Int, Int) {
    var size = size
    var rawSize: Double? = nil
    if let maxSize {
      let minOriginal = Double(min(height, width))
      let maxOriginal = Double(max(height, width))
      if maxOriginal / minOriginal * Double(size) > Double(maxSize) {
        rawSize = Double(maxSize) * minOriginal / maxOriginal
        size = Int(rawSize!.rounded(.toNearestOrEven))
      }
    }
    if (height <= width && height == size) || (width <= height && width == size) {
      return (height, width)
    }
    if width < height {
      let oh =
        rawSize.map { Int($0 * Double(height) / Double(width)) }
        ?? Int(Double(size * height) / Double(width))
      return (oh, size)
    }
    let ow =
      rawSize.map { Int($0 * Double(width) / Double(height)) }
      ?? Int(Double(size * width) / Double(height))
    return (size, ow)
  }

  /// Qwen2-VL's `smart_resize`.
  public static func smartResize(
    height: Int, width: Int, factor: Int, minPixels: Int, maxPixels: Int
  )
    throws -> (height: Int, width: Int)
  {
    let ratio = Double(max(height, width)) / Double(min(height, width))
    guard ratio <= 200 else {
      throw ImageError(
        path: "\(width)×\(height) image",
        message: "absolute aspect ratio must be smaller than 200 for Qwen2-VL, got \(ratio)")
    }
    let f = Double(factor)
    var hBar = Int((Double(height) / f).rounded(.toNearestOrEven)) * factor
    var wBar = Int((Double(width) / f).rounded(.toNearestOrEven)) * factor
    if hBar * wBar > maxPixels {
      let beta = (Double(height * width) / Double(maxPixels)).squareRoot()
      hBar = max(factor, Int((Double(height) / beta / f).rounded(.down)) * factor)
      wBar = max(factor, Int((Double(width) / beta / f).rounded(.down)) * factor)
    } else if hBar * wBar < minPixels {
      let beta = (Double(minPixels) / Double(height * width)).squareRoot()
      hBar = Int((Double(height) * beta / f).rounded(.up)) * factor
      wBar = Int((Double(width) * beta / f).rounded(.up)) * factor
    }
    return (hBar, wBar)
  }
}

/// The image half of a Hugging Face processor, PIL backend ("slow" processors, `use_fast=False`):
/// convert to RGB (alpha composited over white), resize with a Pillow filter, center-crop (zero
/// padding when the image is smaller), rescale (×1/255 in double, then float32) and normalise
/// ((x − mean) / std in float32). Bit-exact with transformers 5.24 for SigLIP, CLIP and Qwen2-VL
/// (before Qwen2-VL's patch flattening).
public struct ImagePreprocessor: Equatable, Sendable {
  public var resize: ResizeRule?
  public var resample: ResampleFilter
  /// (height, width), or nil for no center crop.
  public var centerCrop: (height: Int, width: Int)?
  public var rescaleFactor: Double?
  /// Per-channel mean and std, or nil for no normalisation.
  public var normalization: (mean: [Float], std: [Float])?

  public init(
    resize: ResizeRule?, resample: ResampleFilter, centerCrop: (height: Int, width: Int)? = nil,
    rescaleFactor: Double? = 1.0 / 255.0, normalization: (mean: [Float], std: [Float])?
  ) {
    self.resize = resize
    self.resample = resample
    self.centerCrop = centerCrop
    self.rescaleFactor = rescaleFactor
    self.normalization = normalization
  }

  public static func == (a: ImagePreprocessor, b: ImagePreprocessor) -> Bool {
    a.resize == b.resize && a.resample == b.resample
      && a.centerCrop?.height == b.centerCrop?.height && a.centerCrop?.width == b.centerCrop?.width
      && a.rescaleFactor == b.rescaleFactor && a.normalization?.mean == b.normalization?.mean
      && a.normalization?.std == b.normalization?.std
  }

  public static let imagenetStandardMean: [Float] = [0.5, 0.5, 0.5]
  public static let imagenetStandardStd: [Float] = [0.5, 0.5, 0.5]
  public static let openAIClipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
  public static let openAIClipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

  /// SiglipImageProcessor's defaults (224×224, bicubic, mean = std = 0.5).
  public static func siglip(height: Int = 224, width: Int = 224) -> ImagePreprocessor {
    ImagePreprocessor(
      resize: .exact(height: height, width: width), resample: .bicubic,
      normalization: (imagenetStandardMean, imagenetStandardStd))
  }

  /// CLIPImageProcessor's defaults (shortest edge 224, center crop 224, bicubic, OpenAI mean/std).
  public static func clip(shortestEdge: Int = 224, crop: Int = 224) -> ImagePreprocessor {
    ImagePreprocessor(
      resize: .shortestEdge(shortestEdge), resample: .bicubic, centerCrop: (crop, crop),
      normalization: (openAIClipMean, openAIClipStd))
  }

  /// Qwen2VLImageProcessor's defaults (smart resize to multiples of 28, 56² ... 28²·1280 pixels).
  public static func qwen2VL(
    patchSize: Int = 14, mergeSize: Int = 2, minPixels: Int = 56 * 56,
    maxPixels: Int = 28 * 28 * 1280
  ) -> ImagePreprocessor {
    ImagePreprocessor(
      resize: .qwen2VL(factor: patchSize * mergeSize, minPixels: minPixels, maxPixels: maxPixels),
      resample: .bicubic, normalization: (openAIClipMean, openAIClipStd))
  }

  /// The most pixels a preprocessed image may have (Idefics3's largest resize, 4096²): the
  /// vision towers encode an image at once, so more would only exhaust memory.
  public static let maxOutputPixels = 4096 * 4096
  /// The longest side a processor's sizes may name.
  public static let maxOutputSide = 16384

  /// The (height, width) of what the pipeline makes of an image of this size; an error when
  /// that is more than `maxOutputPixels` (checked before anything is resized).
  public func outputSize(height: Int, width: Int) throws -> (height: Int, width: Int) {
    if let crop = centerCrop { return crop }
    return try resizedSize(height: height, width: width)
  }

  /// The size after the resize step (before any crop), checked against `maxOutputPixels`.
  func resizedSize(height: Int, width: Int) throws -> (height: Int, width: Int) {
    let size: (height: Int, width: Int) =
      try resize?.outputSize(height: height, width: width) ?? (height, width)
    let (pixels, overflow) = size.height.multipliedReportingOverflow(by: size.width)
    guard !overflow, pixels <= Self.maxOutputPixels else {
      throw ImageError(
        path: "\(width)×\(height) image",
        message:
          "resizes to \(size.width)×\(size.height) = \(overflow ? "too many" : String(pixels)) pixels, more than the limit of \(Self.maxOutputPixels)"
      )
    }
    return size
  }

  /// Runs the pipeline on one image.
  public func callAsFunction(_ image: RGBImage) throws -> PixelValues {
    var img = image.compositedOverWhite()
    if resize != nil {
      let (h, w) = try resizedSize(height: img.height, width: img.width)
      guard h > 0, w > 0 else {
        throw ImageError(
          path: "\(img.width)×\(img.height) image", message: "resizes to an empty \(w)×\(h) image")
      }
      img = img.resized(width: w, height: h, filter: resample)
    }
    if let crop = centerCrop {
      img = img.centerCropped(height: crop.height, width: crop.width)
    }
    return normalized(img)
  }

  /// Rescale and normalise, channel first, with transformers' float semantics.
  public func normalized(_ img: RGBImage) -> PixelValues {
    let n = img.width * img.height
    var out = [Float](repeating: 0, count: 3 * n)
    // Per channel and byte value the result is one of 256 floats: tabulate them.
    var table = [[Float]](repeating: [], count: 3)
    for c in 0..<3 {
      table[c] = (0..<256).map { v -> Float in
        // rescale: the product in float64, then float32; normalise: float32 throughout.
        var x = rescaleFactor.map { Float(Double(v) * $0) } ?? Float(v)
        if let norm = normalization { x = (x - norm.mean[c]) / norm.std[c] }
        return x
      }
    }
    img.pixels.withUnsafeBufferPointer { p in
      out.withUnsafeMutableBufferPointer { o in
        for c in 0..<3 {
          table[c].withUnsafeBufferPointer { t in
            for i in 0..<n { o[c * n + i] = t[Int(p[3 * i + c])] }
          }
        }
      }
    }
    return PixelValues(channels: 3, height: img.height, width: img.width, values: out)
  }
}

extension RGBImage {
  /// transformers' numpy `center_crop`: the centred window (top = ⌊(H − h)/2⌋), padded with zero
  /// pixels where the image is smaller than the crop.
  public func centerCropped(height ch: Int, width cw: Int) -> RGBImage {
    let base = droppingAlpha()
    func floorDiv2(_ v: Int) -> Int { v >= 0 ? v / 2 : -((-v + 1) / 2) }
    var top = floorDiv2(height - ch)
    var left = floorDiv2(width - cw)
    if top >= 0, top + ch <= height, left >= 0, left + cw <= width {
      var out = [UInt8](repeating: 0, count: ch * cw * 3)
      for y in 0..<ch {
        let s = ((top + y) * width + left) * 3
        out.replaceSubrange((y * cw * 3)..<((y + 1) * cw * 3), with: base.pixels[s..<(s + cw * 3)])
      }
      return RGBImage(width: cw, height: ch, pixels: out)
    }
    // Pad into a zero canvas of max(crop, image), then take the window there.
    let newH = max(ch, height)
    let newW = max(cw, width)
    let topPad = (newH - height + 1) / 2
    let leftPad = (newW - width + 1) / 2
    top += topPad
    left += leftPad
    var out = [UInt8](repeating: 0, count: ch * cw * 3)
    for y in 0..<ch {
      let sy = top + y - topPad  // row in the original image
      guard sy >= 0, sy < height else { continue }
      for x in 0..<cw {
        let sx = left + x - leftPad
        guard sx >= 0, sx < width else { continue }
        let s = (sy * width + sx) * 3
        let d = (y * cw + x) * 3
        out[d] = base.pixels[s]
        out[d + 1] = base.pixels[s + 1]
        out[d + 2] = base.pixels[s + 2]
      }
    }
    return RGBImage(width: cw, height: ch, pixels: out)
  }
}

// MARK: - preprocessor_config.json

extension ImagePreprocessor {
  /// Why a `preprocessor_config.json` could not be used.
  public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
  }

  /// Builds the pipeline from a processor's `preprocessor_config.json` (or `to_dict()`), with the
  /// class defaults of SiglipImageProcessor, CLIPImageProcessor and Qwen2VLImageProcessor for
  /// keys the file leaves out. `path` names the file in errors.
  public init(configJSON data: Data, path: String = "preprocessor_config.json") throws {
    let value: JSONValue
    do {
      value = try JSONValue.parse(data)
    } catch let e as JSONParseError {
      throw ConfigError(message: "\(path): \(e.fileMessage)")
    }
    guard let dict = value.object else { throw ConfigError(message: "\(path): not a JSON object") }
    try self.init(config: dict, path: path)
  }

  /// Why normalization statistics cannot be used, or nil: every mean finite, every std finite
  /// and not 0 (a std of 0 divides every pixel to infinity or NaN, and every logit after it).
  public static func badStatistics(mean: [Float], std: [Float]) -> String? {
    if let k = mean.firstIndex(where: { !$0.isFinite }) {
      return "\"image_mean\"[\(k)] is \(mean[k]): the mean must be finite"
    }
    if let k = std.firstIndex(where: { !$0.isFinite || $0 == 0 }) {
      return "\"image_std\"[\(k)] is \(std[k]): the standard deviation must be finite and not 0"
    }
    return nil
  }

  /// The same from an already parsed JSON object.
  public init(config dict: [String: JSONValue], path: String = "preprocessor_config.json") throws {
    func fail(_ m: String) -> ConfigError { ConfigError(message: "\(path): \(m)") }
    func present(_ key: String) -> JSONValue? {
      guard let v = dict[key], !v.isNull else { return nil }
      return v
    }
    func int(_ key: String) throws -> Int? {
      guard let v = present(key) else { return nil }
      guard let i = v.int else { throw fail("\"\(key)\" must be an integer, got \(v.brief)") }
      return i
    }
    func bool(_ key: String) throws -> Bool? {
      guard let v = present(key) else { return nil }
      guard let b = v.bool else { throw fail("\"\(key)\" must be true or false, got \(v.brief)") }
      return b
    }
    func floats(_ key: String) throws -> [Float]? {
      guard let v = present(key) else { return nil }
      if let d = v.double { return [Float](repeating: Float(d), count: 3) }
      guard let a = v.array, a.count == 3, a.allSatisfy({ $0.double != nil }) else {
        throw fail("\"\(key)\" must be a number or a list of 3 numbers, got \(v.brief)")
      }
      return a.map { Float($0.double!) }  // np.array(list, dtype=float32)
    }
    /// A size dict, or an int / [h, w] in the old style.
    func sizeDict(_ key: String, defaultToSquare: Bool) throws -> [String: Int]? {
      guard let v = present(key) else { return nil }
      if let d = v.object {
        var out: [String: Int] = [:]
        for (k, x) in d where !x.isNull {
          guard let i = x.int else {
            throw fail("\"\(key)\".\(k) must be an integer, got \(x.brief)")
          }
          out[k] = i
        }
        return out
      }
      if let a = v.array, a.count == 2, let h = a[0].int, let w = a[1].int {
        return ["height": h, "width": w]
      }
      guard let n = v.int else {
        throw fail("\"\(key)\" must be a size dict or an integer, got \(v.brief)")
      }
      return defaultToSquare ? ["height": n, "width": n] : ["shortest_edge": n]
    }

    let type = present("image_processor_type")?.string ?? ""
    let family: String
    // Qwen2.5-VL reuses Qwen2-VL's processor; some of its folders name it after the model.
    if type.hasPrefix("Qwen2VL") || type.hasPrefix("Qwen2_5_VL") {
      family = "qwen2vl"
    } else if type.hasPrefix("CLIP") {
      family = "clip"
    } else if type.hasPrefix("Siglip") {
      family = "siglip"
    } else {
      family = "generic"
    }
    let defaultToSquare = family == "siglip" || family == "generic"

    // Class defaults (transformers 5.24's *ImageProcessorPil attributes).
    var size: [String: Int]
    var resample = ResampleFilter.bicubic
    var mean = Self.openAIClipMean
    var std = Self.openAIClipStd
    var doCenterCrop = false
    var crop: [String: Int] = [:]
    switch family {
    case "siglip":
      size = ["height": 224, "width": 224]
      mean = Self.imagenetStandardMean
      std = Self.imagenetStandardStd
    case "clip":
      size = ["shortest_edge": 224]
      doCenterCrop = true
      crop = ["height": 224, "width": 224]
    case "qwen2vl":
      size = ["shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280]
    default:
      size = [:]
      resample = .bilinear  // PilBackend.resize's fallback
    }

    if let s = try sizeDict("size", defaultToSquare: defaultToSquare) { size = s }
    if family == "qwen2vl" {  // older files: top-level min_pixels / max_pixels
      if let m = try int("min_pixels") { size["shortest_edge"] = m }
      if let m = try int("max_pixels") { size["longest_edge"] = m }
    }
    if let r = try int("resample") {
      guard let f = ResampleFilter(rawValue: r) else { throw fail("unknown resample filter \(r)") }
      resample = f
    }
    if let c = try sizeDict("crop_size", defaultToSquare: true) { crop = c }
    if let b = try bool("do_center_crop") { doCenterCrop = b }
    if let m = try floats("image_mean") { mean = m }
    if let s = try floats("image_std") { std = s }
    if let why = Self.badStatistics(mean: mean, std: std) { throw fail(why) }

    let doResize = try bool("do_resize") ?? (family != "generic" || !size.isEmpty)
    let doRescale = try bool("do_rescale") ?? true
    var factor = 1.0 / 255.0
    if let v = present("rescale_factor") {
      guard let d = v.double else {
        throw fail("\"rescale_factor\" must be a number, got \(v.brief)")
      }
      guard d.isFinite, Float(d).isFinite else {
        throw fail("\"rescale_factor\" \(v.brief) is not a finite number")
      }
      factor = d
    }
    let doNormalize = try bool("do_normalize") ?? (family != "generic")
    // do_convert_rgb: false would make transformers hand 1- or 4-channel arrays to the model;
    // kvlab always works in RGB (alpha composited over white), so the key is not read.

    var rule: ResizeRule? = nil
    if doResize {
      if family == "qwen2vl" {
        let patch = try int("patch_size") ?? 14
        let merge = try int("merge_size") ?? 2
        guard (1...1024).contains(patch) else {
          throw fail("\"patch_size\" \(patch) is out of range (1...1024)")
        }
        guard (1...64).contains(merge) else {
          throw fail("\"merge_size\" \(merge) is out of range (1...64)")
        }
        guard let minP = size["shortest_edge"], let maxP = size["longest_edge"] else {
          throw fail(
            "Qwen2-VL's \"size\" needs \"shortest_edge\" and \"longest_edge\" (min/max pixels)")
        }
        rule = .qwen2VL(factor: patch * merge, minPixels: minP, maxPixels: maxP)
      } else if let s = size["shortest_edge"], let l = size["longest_edge"] {
        rule = .shortestLongestEdge(shortest: s, longest: l)
      } else if let s = size["shortest_edge"] {
        rule = .shortestEdge(s)
      } else if let h = size["max_height"], let w = size["max_width"] {
        rule = .maxHeightWidth(maxHeight: h, maxWidth: w)
      } else if let h = size["height"], let w = size["width"] {
        rule = .exact(height: h, width: w)
      } else {
        throw fail(
          "\"size\" must have height and width, shortest_edge, or max_height and max_width")
      }
    }
    var cropSize: (Int, Int)? = nil
    if doCenterCrop {
      guard let h = crop["height"], let w = crop["width"] else {
        throw fail("\"crop_size\" must have height and width")
      }
      cropSize = (h, w)
    }
    // Sizes a real processor never has would make every image absurdly large (or divide by
    // zero): refused here, before any image is resized.
    let maxSide = Self.maxOutputSide
    let maxPixels = Self.maxOutputPixels
    func side(_ key: String, _ v: Int) throws {
      guard (1...maxSide).contains(v) else {
        throw fail("\(key) \(v) is out of range (1...\(maxSide) pixels)")
      }
    }
    func area(_ key: String, _ h: Int, _ w: Int) throws {
      try side(key + ".height", h)
      try side(key + ".width", w)
      guard h * w <= maxPixels else {
        throw fail("\(key) \(w)×\(h) is \(h * w) pixels, more than the limit of \(maxPixels)")
      }
    }
    switch rule {
    case .exact(let h, let w)?: try area("\"size\"", h, w)
    case .shortestEdge(let e)?: try side("\"size\".shortest_edge", e)
    case .shortestLongestEdge(let s, let l)?:
      try side("\"size\".shortest_edge", s)
      try side("\"size\".longest_edge", l)
    case .maxHeightWidth(let h, let w)?:
      try side("\"size\".max_height", h)
      try side("\"size\".max_width", w)
    case .qwen2VL(_, let minP, let maxP)?:
      for (key, v) in [("shortest_edge (min_pixels)", minP), ("longest_edge (max_pixels)", maxP)]
      where !(1...maxPixels).contains(v) {
        throw fail("\"size\".\(key) \(v) is out of range (1...\(maxPixels) pixels)")
      }
      guard minP <= maxP else {
        throw fail("\"size\": min_pixels \(minP) is more than max_pixels \(maxP)")
      }
    case nil: break
    }
    if let (h, w) = cropSize { try area("\"crop_size\"", h, w) }
    self.init(
      resize: rule, resample: resample, centerCrop: cropSize,
      rescaleFactor: doRescale ? factor : nil,
      normalization: doNormalize ? (mean, std) : nil)
  }
}

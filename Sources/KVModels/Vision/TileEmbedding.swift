import KVTensor

/// The input rows of a ViT over one square image or tile (CLIP / LLaVA, InternViT, SigLIP /
/// Idefics3): each patch's stride-p convolution, plus its bias when the conv has one, plus its
/// learned position; first a class token (its embedding plus position 0) when the tower has one.
struct TileEmbedding {
  let imageSize: Int  // the side in pixels the position table is for
  let patchSize: Int
  let classToken: FloatBuffer?  // [D]
  let patch: Matrix  // [D][3·p·p]
  let patchBias: FloatBuffer?  // [D]
  let positions: Matrix  // [(class token ? 1 : 0) + patches][D]

  var parameterCount: Int {
    (classToken?.count ?? 0) + patch.rows * patch.cols + (patchBias?.count ?? 0)
      + positions.rows * positions.cols
  }

  /// `(class token ? 1 : 0) + patches` rows of `D`, class token first. Every patch is real, so
  /// patch k takes the k-th position after the class token's. An image of another size is
  /// refused, the family and what it calls its `unit` ("a tile", "an image") named.
  func callAsFunction(_ image: PixelValues, family: String, unit: String, meter: MemoryMeter?)
    throws -> Matrix
  {
    guard image.channels == 3, image.height == imageSize, image.width == imageSize else {
      throw ModelError(
        path: family,
        message:
          "\(unit) must be 3×\(imageSize)×\(imageSize), got \(image.channels)×\(image.height)×\(image.width)"
      )
    }
    let d = patch.rows
    let patches = patchMatrix([image], patch: patchSize, category: .vision, meter: meter)
    let first = classToken == nil ? 0 : 1
    let n = patches.rows + first
    let x = Matrix(uninitializedRows: n, cols: d, category: .vision, meter: meter)
    x.storage.pointer.update(from: positions.pointer, count: n * d)
    if let classToken {
      for c in 0..<d { x.pointer[c] += classToken.pointer[c] }
    }
    Linear.apply(
      patches.pointer, rows: patches.rows, ldx: patches.cols, weight: patch.pointer,
      outFeatures: d, inFeatures: patches.cols, beta: 1, out: x.row(first), ldo: d)
    if let patchBias {
      Kernels.addBias(x.row(first), bias: patchBias.pointer, rows: patches.rows, cols: d)
    }
    return x
  }
}

import COpenBLAS

/// out = x · Wᵀ (+ beta · out): the projection of a decoder layer, with W stored
/// `[outFeatures][inFeatures]` row-major (Hugging Face / GGUF layout).
public enum Linear {
  /// `rows` rows of x (leading dimension `ldx`) into `rows` rows of out (leading dimension
  /// `ldo`). One row (decode) goes through sgemv: OpenBLAS 0.3.21's sgemm has no m = 1 fast path
  /// and packs the whole weight matrix on every call (2.4–5× slower, see `kvlab-bench --kernels`).
  /// Several rows use OpenBLAS's own threads (splitting the columns over our threads with
  /// single-threaded BLAS measured the same within noise, and lower for the 960-wide QKV).
  @inline(__always)
  public static func apply(
    _ x: UnsafePointer<Float>, rows: Int, ldx: Int, weight: UnsafePointer<Float>,
    outFeatures: Int, inFeatures: Int, beta: Float = 0, out: UnsafeMutablePointer<Float>, ldo: Int
  ) {
    if rows == 1 {
      cblas_sgemv(
        CblasRowMajor, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), 1, weight,
        Int32(inFeatures), x, 1, beta, out, 1)
    } else {
      BLAS.sgemm(
        transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: ldx, b: weight,
        ldb: inFeatures, beta: beta, c: out, ldc: ldo)
    }
  }

  /// The same with x and out as whole matrices and W as a `Matrix`.
  @inline(__always)
  public static func apply(_ x: Matrix, _ weight: Matrix, beta: Float = 0, into out: Matrix) {
    precondition(x.cols == weight.cols && out.cols == weight.rows && out.rows >= x.rows)
    apply(
      x.pointer, rows: x.rows, ldx: x.cols, weight: weight.pointer, outFeatures: weight.rows,
      inFeatures: weight.cols, beta: beta, out: out.pointer, ldo: out.cols)
  }
}

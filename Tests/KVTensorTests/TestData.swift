import KVTensor

/// Deterministic pseudo-random floats in [-1, 1] (no global RNG state).
func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
  var s = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
  return (0..<count).map { _ in
    s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return Float(Int64(bitPattern: s >> 11) % 2_000_001 - 1_000_000) / 1_000_000
  }
}

/// Calls `body` once with BLAS threads set to `n`, restoring the previous count.
func withBLASThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
  let saved = BLAS.threads
  BLAS.setThreads(n)
  defer { BLAS.setThreads(saved) }
  return try body()
}

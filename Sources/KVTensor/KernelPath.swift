import CKVKernels

/// Which instruction set the weight kernels (CKVKernels) run on, and how decode multiplies
/// Q8_0/Q4_0/Q4_1 weights by a vector. The best one this CPU has is chosen at start; another
/// can be forced (to compare paths, or to measure the AVX2 path on an AVX-512 machine), but
/// never one the CPU lacks: that is an error, not SIGILL.
///
/// Two families, each with a portable reference:
/// - float (`portable`, `avx2`, `avx512`): each weight block widened to float32 and multiplied
///   with x in float32 (`kvk_matvec`). The more exact decode path.
/// - integer (`portable-int8`, `avx2-int8`, `avx512vnni`): x quantized per call into int8 blocks
///   of 32 and each weight block's integers dotted with them in exact int32, as llama.cpp does
///   (`kvk_matvec_int8`); `avx512vnni` needs AVX512_VNNI (VPDPBUSD), `avx2-int8` uses
///   VPMADDUBSW. Formats other than Q8_0/Q4_0/Q4_1 take the float kernels of the same ISA.
/// Everything else (dequantization for prefill, embedding rows) is the same on both families.
public enum KernelPath: String, CaseIterable, Sendable {
  case portable, avx2, avx512
  case portableInt8 = "portable-int8", avx2Int8 = "avx2-int8", avx512vnni

  var isa: kvk_isa {
    switch self {
    case .portable, .portableInt8: return KVK_SCALAR
    case .avx2, .avx2Int8: return KVK_AVX2
    case .avx512: return KVK_AVX512
    case .avx512vnni: return KVK_AVX512_VNNI
    }
  }

  /// The integer prefill product's instruction set: VPDPBUSD on an AVX-512 path where the CPU
  /// has AVX512_VNNI, whichever family (its outputs are the VPMADDUBSW kernel's bit for bit, so
  /// only the speed differs), else the path's own.
  var int8ProductISA: kvk_isa {
    isa == KVK_AVX512 && kvk_isa_supported(KVK_AVX512_VNNI) != 0 ? KVK_AVX512_VNNI : isa
  }

  /// Whether decode's Q8_0/Q4_0/Q4_1 products quantize x to int8 (the integer family).
  public var quantizesActivations: Bool {
    switch self {
    case .portable, .avx2, .avx512: return false
    case .portableInt8, .avx2Int8, .avx512vnni: return true
    }
  }

  public var isSupported: Bool { kvk_isa_supported(isa) != 0 }

  /// The order `best` prefers, widest first.
  static let preference: [KernelPath] = [.avx512, .avx2, .portable]

  /// The widest path this CPU runs.
  public static var best: KernelPath {
    preference.first(where: \.isSupported) ?? .portable
  }

  /// The path every weight kernel takes now (process-wide, like the BLAS thread count).
  public static var current: KernelPath { state.current }

  /// Makes `path` the current one, or fails naming what the CPU lacks.
  public static func select(_ path: KernelPath) throws {
    guard path.isSupported else {
      throw KernelPathError(
        message: "kernel path '\(path.rawValue)' needs \(path.requirement), which this CPU "
          + "does not have (it has: \(cpuFeatures.isEmpty ? "none of them" : cpuFeatures.joined(separator: ", ")))")
    }
    state.current = path
  }

  /// What the path needs from the CPU, in /proc/cpuinfo's words.
  public var requirement: String {
    switch self {
    case .portable, .portableInt8: return "nothing"
    case .avx2, .avx2Int8: return "avx2, fma and f16c"
    case .avx512: return "avx512f, avx512bw, avx512vl and avx512dq"
    case .avx512vnni: return "avx512f, avx512bw, avx512vl, avx512dq and avx512_vnni"
    }
  }

  /// The vector features this CPU offers the kernels (those the OS has enabled too).
  public static var cpuFeatures: [String] {
    let f = kvk_cpu_features()
    let names: [(UInt32, String)] = [
      (UInt32(KVK_FEATURE_AVX2), "avx2"), (UInt32(KVK_FEATURE_AVX512), "avx512"),
      (UInt32(KVK_FEATURE_AVX512_VNNI), "avx512_vnni"), (UInt32(KVK_FEATURE_AVX512_BF16), "avx512_bf16"),
      (UInt32(KVK_FEATURE_AMX), "amx"),
    ]
    return names.filter { f & $0.0 != 0 }.map(\.1)
  }

  /// Parses a path's name (`portable`, `avx2`, `avx512`, `portable-int8`, `avx2-int8`,
  /// `avx512vnni`) or `auto` (the best path).
  public static func parse(_ text: String) throws -> KernelPath {
    if text == "auto" { return best }
    guard let path = KernelPath(rawValue: text) else {
      throw KernelPathError(
        message: "unknown kernel path '\(text)' (auto, \(allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return path
  }

  private static let state = ProcessSetting(KernelPath.best)
}

/// The softmax's passes over a row on the current kernel path's vectors (CKVKernels): every
/// path computes the same e^x for each element (`FastMath.exp`'s formula, within an ulp of it);
/// sums alike on the portable and AVX2 paths, in 16 lanes on AVX-512.
public enum SoftmaxRow {
  /// The largest of x[0..<count] (count ≥ 1, NaN-free).
  @inline(__always)
  public static func max(_ x: UnsafePointer<Float>, count: Int, path: KernelPath = .current)
    -> Float
  {
    kvk_max(path.isa, x, count)
  }

  /// x[i] = e^(x[i] − shift) for i < count; returns their sum.
  @inline(__always)
  public static func expShiftSum(
    _ x: UnsafeMutablePointer<Float>, count: Int, shift: Float, path: KernelPath = .current
  ) -> Float {
    kvk_exp_shift_sum(path.isa, x, count, shift)
  }
}

public struct KernelPathError: Error, CustomStringConvertible, Sendable {
  public let message: String
  public var description: String { message }
}

/// How a prefill block multiplies by the weights: OpenBLAS's float32 sgemm on dequantized
/// tiles (the reference's values exactly); kvlab's bfloat16 kernel (AVX512-BF16: weights and
/// activations rounded to bfloat16, sums in float32; twice the multiply-adds per instruction);
/// or kvlab's integer kernel (Q8_0/Q4_0/Q4_1 weights as stored, activations quantized to int8
/// blocks as decode's integer path quantizes them, exact int32 block sums; VPMADDUBSW on AVX2,
/// VPDPBUSD where the CPU has AVX512_VNNI). Each applies to weights stored below float32 only:
/// float32 weights always take sgemm (`WeightMatrix.takesBFloat16`, `takesInt8`), and int8
/// leaves other formats to sgemm.
///
/// `auto` (kvlab's and kvlab-bench's default) is bf16 where the CPU has avx512_bf16, else int8
/// where it has AVX2, else sgemm.
/// Output that is recorded or compared with a recording runs on sgemm under `auto`
/// (`withReferenceUnlessNamed`), so that it is the same on every CPU. A program that selects
/// nothing gets sgemm.
public enum PrefillKernel: String, CaseIterable, Sendable {
  case sgemm, bf16, int8

  /// `auto`, or a kernel named (`--prefill-kernel sgemm|bf16|int8`).
  public enum Choice: Equatable, Sendable {
    case auto
    case named(PrefillKernel)
  }

  public var isSupported: Bool { Self.isSupported(self, features: KernelPath.cpuFeatures) }

  static func isSupported(_ kernel: PrefillKernel, features: [String]) -> Bool {
    switch kernel {
    case .sgemm: return true
    case .bf16: return features.contains("avx512_bf16")
    // Portable where the CPU has no AVX2 (the reference: correct, slower than sgemm).
    case .int8: return true
    }
  }

  /// What `auto` chooses on a CPU with `features` (`KernelPath.cpuFeatures`' names): the
  /// fastest kernel it runs.
  public static func automatic(features: [String]) -> PrefillKernel {
    if isSupported(.bf16, features: features) { return .bf16 }
    return features.contains("avx2") ? .int8 : .sgemm
  }

  /// What `auto` chooses on this CPU.
  public static let automatic = automatic(features: KernelPath.cpuFeatures)

  /// The kernel prefill products run on now.
  public static var current: PrefillKernel {
    switch state.current {
    case .named(let kernel): return kernel
    case .auto: return state.referenceScopes > 0 ? .sgemm : automatic
    }
  }

  /// How the current kernel was chosen.
  public static var choice: Choice { state.current }

  /// Whether `current` is sgemm because the choice is `auto` and the output being made is
  /// recorded or checked against a recording (`withReferenceUnlessNamed`), whatever the CPU.
  public static var isPinnedToReference: Bool {
    state.current == .auto && state.referenceScopes > 0
  }

  public static func select(_ kernel: PrefillKernel) throws { try select(.named(kernel)) }

  /// Makes `choice` the current one; a named kernel the CPU lacks is an error.
  public static func select(_ choice: Choice) throws {
    if case .named(let kernel) = choice, !kernel.isSupported {
      throw KernelPathError(
        message: "prefill kernel '\(kernel.rawValue)' needs avx512_bf16, which this CPU does not have")
    }
    state.current = choice
  }

  /// Runs `body` on sgemm when the current kernel is `auto`'s choice; a named kernel stays.
  /// Recorded output (a recording, a replay, a notebook run) is made this way, so that a
  /// session recorded on one CPU checks on another whichever `auto` picks there. Nests.
  public static func withReferenceUnlessNamed<T>(_ body: () throws -> T) rethrows -> T {
    state.referenceScopes += 1
    defer { state.referenceScopes -= 1 }
    return try body()
  }

  /// `auto`, `sgemm`, `bf16` or `int8`.
  public static func parse(_ text: String) throws -> Choice {
    if text == "auto" { return .auto }
    guard let kernel = PrefillKernel(rawValue: text) else {
      throw KernelPathError(
        message: "unknown prefill kernel '\(text)' (auto, \(allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return .named(kernel)
  }

  private static let state = PrefillSetting()
}

/// The prefill kernel's process-wide choice, and how many scopes pin `auto` to sgemm.
private final class PrefillSetting: @unchecked Sendable {
  var current = PrefillKernel.Choice.named(.sgemm)
  var referenceScopes = 0
}

/// A process-wide choice (like the BLAS thread count), set from the command line at start.
private final class ProcessSetting<Value>: @unchecked Sendable {
  var current: Value
  init(_ value: Value) { current = value }
}

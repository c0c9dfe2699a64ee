import COpenBLAS
import Foundation

/// The BLAS the kernels run on (Debian's OpenBLAS), and the knobs it has.
public enum BLAS {
  /// The kernel family OpenBLAS picked at load time (e.g. "Haswell", "Prescott").
  /// Chosen before `main()` from `OPENBLAS_CORETYPE` or CPUID; see `BLASCore`.
  public static var coreName: String {
    guard let name = openblas_get_corename() else { return "unknown" }
    return String(cString: name).trimmingCharacters(in: .whitespaces)
  }

  public static var threads: Int { Int(openblas_get_num_threads()) }

  public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

  /// C = alpha · op(A) · op(B) + beta · C, row-major, with leading dimensions.
  @inline(__always)
  public static func sgemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    cblas_sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }
}

/// Choosing OpenBLAS's kernel from the CPU's flags. Debian's OpenBLAS 0.3.21 does not recognise
/// some current CPUs and falls back to Prescott (SSE3) kernels, ~4.7x slower. The kernel is read
/// from `OPENBLAS_CORETYPE` when the library loads, so changing it means re-executing the process.
public enum BLASCore {
  /// The kernel this CPU supports best, from /proc/cpuinfo flags, or nil if unknown.
  public static func preferredCore(cpuinfo: String? = nil) -> String? {
    let flags = cpuFlags(cpuinfo: cpuinfo)
    return ["SkylakeX", "Haswell"].first { requirements[$0]!.allSatisfy(flags.contains) }
  }

  /// Whether a re-exec with another kernel would help: OpenBLAS fell back to Prescott (or a
  /// generic core), the user did not choose a core, and we have not re-executed already.
  public static func reexecTarget(environment: [String: String], currentCore: String) -> String? {
    if environment["OPENBLAS_CORETYPE"] != nil { return nil }
    if environment[reexecGuard] != nil { return nil }
    let fallbacks: Set<String> = ["Prescott", "Core2", "Katmai", "Generic", "unknown"]
    guard fallbacks.contains(currentCore) else { return nil }
    return preferredCore()
  }

  /// What OpenBLAS's x86-64 kernels need from the CPU (/proc/cpuinfo flags), for the cores a
  /// user may force; a core the CPU cannot run would die of SIGILL in the first sgemm.
  public static let requirements: [String: [String]] = [
    "Prescott": ["sse3"], "Core2": ["ssse3"], "Nehalem": ["sse4_2"],
    "Sandybridge": ["avx"], "Haswell": ["avx2", "fma"], "Zen": ["avx2", "fma"],
    "SkylakeX": ["avx512f", "avx512bw", "avx512vl"],
    "Cooperlake": ["avx512f", "avx512bw", "avx512vl", "avx512_bf16"],
    "SapphireRapids": ["avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile"],
  ]

  /// Throws unless `core` is a kernel OpenBLAS knows and this CPU has the flags it needs.
  public static func checkForced(_ core: String, cpuinfo: String? = nil) throws {
    guard let needs = requirements[core] else {
      throw KernelPathError(
        message: "unknown OpenBLAS kernel '\(core)' (auto, keep, "
          + requirements.keys.sorted().joined(separator: ", ") + ")")
    }
    let flags = cpuFlags(cpuinfo: cpuinfo)
    let missing = needs.filter { !flags.contains($0) }
    guard missing.isEmpty else {
      throw KernelPathError(
        message: "OpenBLAS kernel \(core) needs \(missing.joined(separator: ", ")), "
          + "which this CPU does not have")
    }
  }

  /// The CPU's flags (the first `flags` line of /proc/cpuinfo, or of `cpuinfo`).
  static func cpuFlags(cpuinfo: String?) -> Set<String> {
    let text = cpuinfo ?? (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("flags") }
    return Set(line?.split(separator: " ").map(String.init) ?? [])
  }

  /// Set in the re-executed child so that it never re-executes again.
  public static let reexecGuard = "KVLAB_BLAS_REEXEC"
}

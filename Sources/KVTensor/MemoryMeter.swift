import Foundation

/// What an allocation is for. Every byte the engine allocates is attributed to one category,
/// so `mem` can say where the memory went and the budget tests can read the KV high-water mark.
/// Weights are counted where they are resident: `weights` on the heap, `mapped` read in place
/// from the model file's mapping (resident once touched, shared with the page cache).
public enum MemoryCategory: String, CaseIterable, Sendable {
  case weights, mapped, kv, activations, vision
}

/// Current and high-water bytes per category. One meter belongs to one engine session and is
/// handed to whatever allocates on its behalf (no global state). Thread-safe: kernels running on
/// several threads may allocate scratch at once.
public final class MemoryMeter: @unchecked Sendable {
  public struct Reading: Equatable, Sendable {
    public var current: Int
    public var highWater: Int
  }

  private let lock = NSLock()
  private var readings: [MemoryCategory: Reading] = [:]
  private var totalCurrent = 0
  private var totalHighWater = 0
  /// High-water marks since the last `takeWindowPeaks` (per prefill block, for `mem plot`).
  private var windowHighWater: [MemoryCategory: Int] = [:]

  public init() {}

  public func allocated(_ bytes: Int, as category: MemoryCategory) {
    lock.lock()
    defer { lock.unlock() }
    var r = readings[category] ?? Reading(current: 0, highWater: 0)
    r.current += bytes
    r.highWater = max(r.highWater, r.current)
    readings[category] = r
    windowHighWater[category] = max(windowHighWater[category] ?? 0, r.current)
    totalCurrent += bytes
    totalHighWater = max(totalHighWater, totalCurrent)
  }

  public func released(_ bytes: Int, as category: MemoryCategory) {
    lock.lock()
    defer { lock.unlock() }
    var r = readings[category] ?? Reading(current: 0, highWater: 0)
    r.current -= bytes
    readings[category] = r
    totalCurrent -= bytes
  }

  public func reading(_ category: MemoryCategory) -> Reading {
    lock.lock()
    defer { lock.unlock() }
    return readings[category] ?? Reading(current: 0, highWater: 0)
  }

  /// Sum over categories; its high-water mark is of the sum, not the sum of high-water marks.
  public var total: Reading {
    lock.lock()
    defer { lock.unlock() }
    return Reading(current: totalCurrent, highWater: totalHighWater)
  }

  /// Each category's high-water mark since the last call (or since the meter was made), then
  /// starts the next window from what is held now: the peaks of one prefill block.
  public func takeWindowPeaks() -> [MemoryCategory: Int] {
    lock.lock()
    defer { lock.unlock() }
    var peaks: [MemoryCategory: Int] = [:]
    for c in MemoryCategory.allCases {
      let current = readings[c]?.current ?? 0
      peaks[c] = max(windowHighWater[c] ?? 0, current)
      windowHighWater[c] = current
    }
    return peaks
  }

  /// Starts new high-water marks from what is held now.
  public func resetHighWater() {
    lock.lock()
    defer { lock.unlock() }
    for (k, var r) in readings {
      r.highWater = r.current
      readings[k] = r
    }
    totalHighWater = totalCurrent
  }
}

/// The process's real memory, as the kernel counts it (Linux /proc).
public enum ProcessMemory {
  /// Makes glibc serve every allocation of `threshold` bytes or more with its own mapping and
  /// unmap it on free. By default glibc raises that threshold each time such a block is freed
  /// (up to 32 MiB), after which a prefill's per-block activations and vision buffers come from
  /// the heap and their pages stay resident when freed: peak RSS crept up with the number of
  /// frames (+6 % from 4 to 64 frames in `capped` mode, bench/memory_vs_frames.py) although the
  /// meter's KV and activation peaks were flat. A fixed threshold (M_MMAP_THRESHOLD) turns the
  /// adjustment off. The executables call this once at start; the page faults it costs on
  /// per-block buffers did not show in prefill time.
  @discardableResult
  public static func returnLargeFreesToTheSystem(threshold: Int32 = 64 << 10) -> Bool {
    // mallopt is glibc's and not in Swift's Glibc module: looked up by name.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    // A nil handle is glibc's RTLD_DEFAULT (every loaded object).
    guard let symbol = dlsym(nil, "mallopt") else { return false }
    let mMmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD in <malloc.h>
    return unsafeBitCast(symbol, to: Mallopt.self)(mMmapThreshold, threshold) == 1
  }

  /// Hands the free pages inside glibc's heaps back to the system (malloc_trim(0)). A long
  /// feed frees most of what each block allocated, but what it keeps (each frame's record)
  /// lands between those blocks, so the freed pages below stay resident: over an hour of
  /// video at 1 fps, about 1 KiB a frame of RSS that no one holds. Called between a long
  /// clip's blocks.
  @discardableResult
  public static func releaseFreeHeapPages() -> Bool {
    typealias MallocTrim = @convention(c) (Int) -> Int32
    guard let symbol = dlsym(nil, "malloc_trim") else { return false }
    return unsafeBitCast(symbol, to: MallocTrim.self)(0) == 1
  }

  /// Peak resident set size (VmHWM) in bytes, or nil where /proc is not readable.
  public static func peakRSS() -> Int? { statusField("VmHWM:") }
  /// Current resident set size (VmRSS) in bytes.
  public static func currentRSS() -> Int? { statusField("VmRSS:") }

  /// Resets VmHWM to the current RSS by writing `5` to /proc/self/clear_refs.
  @discardableResult
  public static func resetPeakRSS() -> Bool {
    guard let fd = fopen("/proc/self/clear_refs", "w") else { return false }
    defer { fclose(fd) }
    return fputs("5", fd) >= 0
  }

  private static func statusField(_ name: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
      return nil
    }
    for line in text.split(separator: "\n") where line.hasPrefix(name) {
      // "VmHWM:\t  1960 kB": a tab, then padding spaces.
      let parts = line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" })
      if let kb = parts.first.flatMap({ Int($0) }) { return kb * 1024 }
    }
    return nil
  }
}

/// The machine's memory as the kernel offers it to a new allocation: what `load` and `budget`
/// compare their needs with before allocating anything large.
public enum SystemMemory {
  /// Bytes that can be allocated without swapping: `MemAvailable` of /proc/meminfo, lowered to
  /// the room left under this process's cgroup memory limit when there is one (a container's
  /// limit is not in /proc/meminfo). nil where neither is readable (not Linux).
  public static func available() -> Int? {
    let machine = meminfoField("MemAvailable:")
    guard let room = cgroupRoom() else { return machine }
    return machine.map { min($0, room) } ?? room
  }

  /// `n` bytes in binary units with two decimals (`1.50 GiB`), exact below 1 KiB.
  public static func describe(_ n: Int) -> String {
    let units: [(String, Double)] = [
      ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
    ]
    for (name, d) in units where Double(abs(n)) >= d {
      return String(format: "%.2f", Double(n) / d) + " " + name
    }
    return "\(n) B"
  }

  /// An estimate in bytes (a Double, as counts multiplied from a file's claims may not fit in
  /// an Int) described the same way; `Int.max` and beyond read as "more than 8 EiB".
  public static func describe(_ n: Double) -> String {
    n >= Double(Int.max) ? "more than 8388608.00 TiB" : describe(Int(n))
  }

  static func meminfoField(_ name: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else {
      return nil
    }
    for line in text.split(separator: "\n") where line.hasPrefix(name) {
      // "MemAvailable:   22961452 kB"
      let parts = line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" })
      if let kb = parts.first.flatMap({ Int($0) }) { return kb * 1024 }
    }
    return nil
  }

  /// limit − usage of the cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`) when it is
  /// limited; nil when unlimited or unreadable.
  static func cgroupRoom() -> Int? {
    func number(_ path: String) -> Int? {
      (try? String(contentsOfFile: path, encoding: .utf8))
        .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
    for (limit, usage) in [
      ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
      (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"
      ),
    ] {
      // v2 writes "max" when unlimited (no number); v1 a huge page-rounded Int64.max.
      guard let l = number(limit), l < 1 << 60, let u = number(usage) else { continue }
      return max(0, l - u)
    }
    return nil
  }
}

import KVModels

/// Options that apply on top of any policy.
public struct RetentionOptions: Equatable, Sendable {
  /// Text tokens (modality `.text`) are never evicted.
  public var protectText: Bool
  /// System-prompt tokens (`TokenOrigin.isSystem`) are never evicted.
  public var protectSystem: Bool
  /// Each frame / tile / image keeps at least this many entries (when it has them), before the
  /// rest is filled by preference.
  public var quota: Quota?

  public struct Quota: Equatable, Sendable {
    public enum Unit: String, Sendable, CaseIterable { case frame, tile, image }
    public var unit: Unit
    public var minimum: Int
    public init(unit: Unit, minimum: Int) {
      self.unit = unit
      self.minimum = minimum
    }
  }

  public init(protectText: Bool = false, protectSystem: Bool = false, quota: Quota? = nil) {
    self.protectText = protectText
    self.protectSystem = protectSystem
    self.quota = quota
  }
}

enum Selection {
  /// Entries that must survive: the policy's plus the protected ones.
  static func mandatory(
    _ policy: any EvictionPolicy, _ entries: EntryList, _ options: RetentionOptions
  ) -> [Bool] {
    var keep = policy.mustKeep(entries)
    if options.protectText || options.protectSystem {
      for (i, m) in entries.meta.enumerated()
      where (options.protectText && m.isText) || (options.protectSystem && m.isSystem) {
        keep[i] = true
      }
    }
    return keep
  }

  struct GroupKey: Hashable {
    var input: Int32, image: Int32, a: Int32
  }

  /// Quota group of each entry (nil: in no group).
  static func groups(_ meta: [EntryMeta], _ unit: RetentionOptions.Quota.Unit) -> [GroupKey?] {
    meta.map { m in
      switch unit {
      case .frame: return m.frame >= 0 ? GroupKey(input: m.input, image: m.image, a: m.frame) : nil
      case .tile: return m.tile >= 0 ? GroupKey(input: m.input, image: m.image, a: m.tile) : nil
      case .image: return m.image >= 0 ? GroupKey(input: m.input, image: m.image, a: -1) : nil
      }
    }
  }

  /// The survivors among `count` candidates: all mandatory ones, then quota picks (in order of
  /// preference within each group), then the rest in order of preference, up to `budget`.
  /// Returns a keep mask. If the mandatory entries alone exceed the budget (the cache checks
  /// this beforehand and refuses), the most preferred of them are kept.
  static func select(
    budget: Int, mandatory: [Bool], preference: [Int], groups: [GroupKey?]?, quota: Int
  ) -> [Bool] {
    let n = mandatory.count
    if n <= budget { return Array(repeating: true, count: n) }
    var keep = [Bool](repeating: false, count: n)
    var kept = 0
    let mandatoryCount = mandatory.lazy.filter { $0 }.count
    if mandatoryCount <= budget {
      for i in 0..<n where mandatory[i] { keep[i] = true }
      kept = mandatoryCount
    } else {
      for i in preference where mandatory[i] && kept < budget {
        keep[i] = true
        kept += 1
      }
      return keep
    }
    if let groups, quota > 0 {
      var have: [GroupKey: Int] = [:]
      for i in 0..<n where keep[i] { if let g = groups[i] { have[g, default: 0] += 1 } }
      for i in preference where kept < budget && !keep[i] {
        guard let g = groups[i], have[g, default: 0] < quota else { continue }
        keep[i] = true
        kept += 1
        have[g, default: 0] += 1
      }
    }
    for i in preference where kept < budget && !keep[i] {
      keep[i] = true
      kept += 1
    }
    return keep
  }
}

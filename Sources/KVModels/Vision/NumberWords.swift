/// Cardinal numbers in English words as Python's num2words writes them (SmolVLM's video prompt
/// states its frame count so): "one hundred and twenty-one", "three thousand, six hundred".
public enum NumberWords {
  static let ones = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
  ]
  static let tens = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
  ]

  /// `n` in words, 0 ≤ n < 10¹²; other values as digits.
  public static func english(_ n: Int) -> String {
    guard n >= 0, n < 1_000_000_000_000 else { return String(n) }
    if n == 0 { return "zero" }
    var parts: [String] = []
    for (scale, name) in [(1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand")]
    where (n / scale) % 1000 > 0 {
      parts.append(below1000((n / scale) % 1000) + " " + name)
    }
    let rest = n % 1000
    guard rest > 0 else { return parts.joined(separator: ", ") }
    if parts.isEmpty { return below1000(rest) }
    return parts.joined(separator: ", ") + (rest < 100 ? " and " : ", ") + below1000(rest)
  }

  static func below100(_ n: Int) -> String {
    n < 20 ? ones[n] : tens[n / 10] + (n % 10 > 0 ? "-" + ones[n % 10] : "")
  }

  static func below1000(_ n: Int) -> String {
    let (h, r) = (n / 100, n % 100)
    guard h > 0 else { return below100(r) }
    return ones[h] + " hundred" + (r > 0 ? " and " + below100(r) : "")
  }
}

// The min-heap BPETokenizer.mergeLarge takes the lowest-ranked merge from.

/// A binary min-heap of (key, value) pairs ordered by key.
struct MinHeap {
  private var keys: [UInt64] = []
  private var values: [UInt64] = []

  mutating func push(key: UInt64, value: UInt64) {
    keys.append(key)
    values.append(value)
    var i = keys.count - 1
    while i > 0 {
      let p = (i - 1) / 2
      if keys[p] <= keys[i] { break }
      keys.swapAt(p, i)
      values.swapAt(p, i)
      i = p
    }
  }

  mutating func pop() -> (UInt64, UInt64)? {
    guard let top = keys.first else { return nil }
    let v = values[0]
    let lastK = keys.removeLast()
    let lastV = values.removeLast()
    if !keys.isEmpty {
      keys[0] = lastK
      values[0] = lastV
      var i = 0
      let n = keys.count
      while true {
        let l = 2 * i + 1
        if l >= n { break }
        var c = l
        if l + 1 < n && keys[l + 1] < keys[l] { c = l + 1 }
        if keys[i] <= keys[c] { break }
        keys.swapAt(i, c)
        values.swapAt(i, c)
        i = c
      }
    }
    return (top, v)
  }
}

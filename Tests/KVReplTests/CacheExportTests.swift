import Foundation
import KVEngine
import XCTest

@testable import KVRepl

/// `cache export` on the tiny Idefics3 fixture under a budget: the .npz is read back here with
/// a zip and .npy reader of its own (stored entries, CRC-32 checked) and the .json with the
/// JSON reader, and both hold what `cache layer N` lists and the policy's current scores.
final class CacheExportTests: XCTestCase {
  static let vlm = repositoryRoot + "/Tests/KVEngineTests/Fixtures/vlm"

  func session() -> (Repl, CaptureSink) {
    let (r, out) = makeRepl()
    r.workingDirectory = temporaryFolder(self)
    for line in [
      "load \(Self.vlm)/idefics3/model", "policy keydiff", "budget 24 tokens",
      "prefill mode=capped block=tile", "feed image \(Self.vlm)/images/img_70x40.png",
    ] {
      XCTAssertEqual(r.run(line: line), .ok, line + "\n" + out.text)
    }
    return (r, out)
  }

  /// The positions `cache layer N` lists for each head (its ranges expanded).
  func listed(_ r: Repl, _ out: CaptureSink, layer: Int) -> [[Int]] {
    let lines = CaptureSink.lines(output(of: "cache layer \(layer)", in: r, out))
    let start = lines.firstIndex { $0.hasPrefix("positions kept") }! + 1
    var heads: [[Int]] = []
    for line in lines[start...] {
      var text = Substring(line)
      if line.hasPrefix("head ") {
        heads.append([])
        text = text.drop { $0 != " " }.dropFirst().drop { $0 != " " }
      }
      for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) })
      where !item.isEmpty && item != "none" {
        let ends = item.split(separator: "-").map { Int($0)! }
        heads[heads.count - 1] += Array(ends[0]...ends.last!)
      }
    }
    return heads
  }

  /// A stored zip's entries, by name; fails on anything but stored entries with matching CRCs.
  func unzip(_ bytes: [UInt8]) throws -> [String: [UInt8]] {
    func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
    func u32(_ i: Int) -> Int { u16(i) | u16(i + 2) << 16 }
    // The end of the central directory (no comment: the last 22 bytes).
    let end = bytes.count - 22
    XCTAssertEqual(u32(end), 0x0605_4b50)
    let count = u16(end + 10)
    var at = u32(end + 16)
    var files: [String: [UInt8]] = [:]
    for _ in 0..<count {
      XCTAssertEqual(u32(at), 0x0201_4b50)
      XCTAssertEqual(u16(at + 10), 0, "stored")
      let crc = u32(at + 16)
      let size = u32(at + 24)
      XCTAssertEqual(size, u32(at + 20))
      let nameLength = u16(at + 28)
      let name = String(decoding: bytes[(at + 46)..<(at + 46 + nameLength)], as: UTF8.self)
      let local = u32(at + 42)
      XCTAssertEqual(u32(local), 0x0403_4b50)
      let data = local + 30 + u16(local + 26) + u16(local + 28)
      let body = Array(bytes[data..<(data + size)])
      // CRC-32 computed bit by bit, independently of the writer's table.
      var c: UInt32 = 0xFFFF_FFFF
      for b in body {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c >> 1) ^ (c & 1 == 1 ? 0xEDB8_8320 : 0) }
      }
      XCTAssertEqual(Int(c ^ 0xFFFF_FFFF), crc, name)
      files[name] = body
      at += 46 + nameLength + u16(at + 30) + u16(at + 32)
    }
    return files
  }

  /// An .npy's header dict and data bytes.
  func npy(_ bytes: [UInt8]) -> (header: String, data: [UInt8]) {
    XCTAssertEqual(Array(bytes.prefix(8)), [0x93] + Array("NUMPY".utf8) + [1, 0])
    let length = Int(bytes[8]) | Int(bytes[9]) << 8
    XCTAssertEqual((10 + length) % 64, 0, "data aligned to 64 bytes")
    return (String(decoding: bytes[10..<(10 + length)], as: UTF8.self), Array(bytes[(10 + length)...]))
  }

  func int64s(_ data: [UInt8]) -> [Int] {
    stride(from: 0, to: data.count, by: 8).map { i in
      (0..<8).reduce(0) { $0 | Int(data[i + $1]) << (8 * $1) }
    }
  }

  func float32s(_ data: [UInt8]) -> [Float] {
    stride(from: 0, to: data.count, by: 4).map { i in
      Float(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(data[i + $1]) << (8 * $1) })
    }
  }

  func testNPZAndJSONHoldWhatTheCacheListsAndTheScores() throws {
    let (r, out) = session()
    let b = try XCTUnwrap(r.session.budgetedCache)
    let c = try XCTUnwrap(r.session.model).config
    let context = r.session.context
    XCTAssertEqual(r.run(line: "cache export out=kv.npz"), .ok, out.text)
    XCTAssertTrue(out.lines.last!.hasPrefix("wrote kv.npz: positions and scores of \(c.layers) layers × \(c.kvHeads) KV heads, up to 24 tokens each"), out.lines.last!)
    let files = try unzip(Array(try Data(contentsOf: URL(fileURLWithPath: (r.workingDirectory ?? "") + "/kv.npz"))))
    XCTAssertEqual(Set(files.keys), ["positions.npy", "scores.npy", "held.npy"])
    let (ph, pd) = npy(files["positions.npy"]!)
    let (sh, sd) = npy(files["scores.npy"]!)
    let (hh, hd) = npy(files["held.npy"]!)
    let widest = 24
    XCTAssertTrue(ph.contains("'descr': '<i8'") && ph.contains("'shape': (\(c.layers), \(c.kvHeads), \(widest))"), ph)
    XCTAssertTrue(sh.contains("'descr': '<f4'") && sh.contains("'shape': (\(c.layers), \(c.kvHeads), \(widest))"), sh)
    XCTAssertTrue(hh.contains("'shape': (\(c.layers), \(c.kvHeads))"), hh)
    let positions = int64s(pd)
    let scores = float32s(sd)
    let held = int64s(hd)
    XCTAssertEqual(positions.count, c.layers * c.kvHeads * widest)
    for layer in 0..<c.layers {
      let shown = listed(r, out, layer: layer)
      XCTAssertEqual(shown.count, c.kvHeads)
      for head in 0..<c.kvHeads {
        let slot = layer * c.kvHeads + head
        let n = held[slot]
        let row = Array(positions[(slot * widest)..<(slot * widest + widest)])
        XCTAssertEqual(Array(row.prefix(n)), b.positions(layer: layer, head: head))
        XCTAssertEqual(row.prefix(n).sorted(), shown[head], "layer \(layer) head \(head)")
        XCTAssertTrue(row.dropFirst(n).allSatisfy { $0 == -1 })
        let srow = Array(scores[(slot * widest)..<(slot * widest + widest)])
        XCTAssertEqual(Array(srow.prefix(n)), b.currentScores(layer: layer, head: head))
        XCTAssertTrue(srow.dropFirst(n).allSatisfy { $0.isNaN })
      }
    }
    // The JSON: the same slots.
    XCTAssertEqual(r.run(line: "cache export out=kv.json"), .ok, out.text)
    let doc = try KVRepl.JSONReader.parse(Array(readFile((r.workingDirectory ?? "") + "/kv.json").utf8))
    XCTAssertEqual(doc["layers"], .number("\(c.layers)"))
    XCTAssertEqual(doc["policy"]?.string, "\(b.policy)")
    guard case .array(let heads)? = doc["heads"] else { return XCTFail("no heads") }
    XCTAssertEqual(heads.count, c.layers * c.kvHeads)
    for (slot, h) in heads.enumerated() {
      let (layer, head) = (slot / c.kvHeads, slot % c.kvHeads)
      XCTAssertEqual(h["layer"], .number("\(layer)"))
      XCTAssertEqual(h["head"], .number("\(head)"))
      guard case .array(let p)? = h["positions"], case .array(let s)? = h["scores"] else {
        return XCTFail("slot \(slot)")
      }
      XCTAssertEqual(p, b.positions(layer: layer, head: head).map { .number("\($0)") })
      XCTAssertEqual(s, b.currentScores(layer: layer, head: head).map { CacheCommands.jsonNumber($0) })
      XCTAssertEqual(s.count, p.count)
    }
    XCTAssertEqual(r.session.context, context, "the session is not changed")
  }

  func testFullCacheExportsEveryPositionAndNoScores() throws {
    let (r, out) = makeRepl()
    r.workingDirectory = temporaryFolder(self)
    XCTAssertEqual(runLines(r, "load \(Self.vlm)/idefics3/model", "feed image \(Self.vlm)/images/img_70x40.png"), .ok, out.text)
    let n = r.session.context.count
    XCTAssertEqual(r.run(line: "cache export out=full.json"), .ok, out.text)
    XCTAssertTrue(out.lines.last!.contains("no scores (no budget in use)"), out.lines.last!)
    let doc = try KVRepl.JSONReader.parse(Array(readFile((r.workingDirectory ?? "") + "/full.json").utf8))
    XCTAssertEqual(doc["policy"], .null)
    guard case .array(let heads)? = doc["heads"] else { return XCTFail("no heads") }
    for h in heads {
      XCTAssertEqual(h["positions"], .array((0..<n).map { .number("\($0)") }))
      XCTAssertEqual(h["scores"], .null)
    }
  }

  func testBadInputIsOneLineAndTheSessionIsUnchanged() throws {
    let (r, out) = session()
    let dir = r.workingDirectory ?? ""
    FileManager.default.createFile(atPath: dir + "/plain", contents: Data())
    let held = try XCTUnwrap(r.session.budgetedCache).positions(layer: 0, head: 0)
    for (line, prefix) in [
      ("cache export out=kv.txt", "error: cache export: "),
      ("cache export", "error: cache export: "),
      ("cache export out=no/such/kv.npz", "error: cache export: no/such/kv.npz: cannot "),
      ("cache export out=plain/kv.json", "error: cache export: plain/kv.json: cannot "),
    ] {
      let shown = CaptureSink.lines(output(of: line, in: r, out, expecting: .failed))
      XCTAssertEqual(shown.count, 1, "\(line): \(shown)")
      XCTAssertTrue(shown[0].hasPrefix(prefix), "\(line): \(shown[0])")
    }
    XCTAssertEqual(try XCTUnwrap(r.session.budgetedCache).positions(layer: 0, head: 0), held)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["plain"])
    // No model: one line.
    let (bare, bareOut) = makeRepl()
    XCTAssertEqual(bare.run(line: "cache export out=kv.npz"), .failed)
    XCTAssertEqual(bareOut.lines.count, 1)
  }
}

import Foundation
import XCTest

@testable import KVModels

/// `String.jsonQuoted`, the string literal every hand-written JSON in kvlab uses (notebooks,
/// samples.jsonl): byte for byte what Python's `json.dumps(s, ensure_ascii=False)` writes, and
/// read back unchanged by a JSON parser.
final class JSONQuotedTests: XCTestCase {
  func testMatchesPythonJSONDumps() {
    // python3 -c 'import json; print(json.dumps("a\"b\\c\n\r\t\b\f\x01\x1fé€😀/", ensure_ascii=False))'
    let s = "a\"b\\c\n\r\t\u{08}\u{0C}\u{01}\u{1F}é€😀/"
    XCTAssertEqual(s.jsonQuoted, #""a\"b\\c\n\r\t\b\f\u0001\u001fé€😀/""#)
    XCTAssertEqual("".jsonQuoted, #""""#)
  }

  func testRoundTripsThroughAParser() throws {
    let ascii = String(String.UnicodeScalarView((0..<0x80).compactMap(Unicode.Scalar.init)))
    let all = ascii + "ü\u{2028}🙂"
    for s in [all, "what color is the circle?", "top-left", "\u{7F}\u{00}"] {
      let data = Data(("[" + s.jsonQuoted + "]").utf8)
      let back = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String])
      XCTAssertEqual(back, [s])
    }
  }
}

import Foundation
import XCTest

@testable import KVModels

/// The JSON reader behind config.json, preprocessor_config.json and safetensors headers: the
/// same values as Python's json where a file transformers loads could differ, refusals with a
/// line, column and key.
final class JSONReaderTests: XCTestCase {
  func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  func failure(_ text: String) -> String? {
    do {
      _ = try parse(text)
      return nil
    } catch let e as JSONParseError {
      return e.fileMessage
    } catch {
      return "\(error)"
    }
  }

  func testValuesAsPythonReadsThem() throws {
    // Python: json.loads('{"a": 1, "b": [true, null, -0.5, 1e3, "x\\u00e9\\ud83d\\ude00"], "a": 2}')
    // == {'a': 2, 'b': [True, None, -0.5, 1000.0, 'xé😀']}
    let v = try parse(#"{"a": 1, "b": [true, null, -0.5, 1e3, "x\u00e9\ud83d\ude00"], "a": 2}"#)
    XCTAssertEqual(
      v,
      .object([
        "a": .int(2),
        "b": .array([.bool(true), .null, .double(-0.5), .double(1000), .string("xé😀")]),
      ]))
    XCTAssertEqual(try parse(" [] "), .array([]))
    XCTAssertEqual(try parse("{}"), .object([:]))
    XCTAssertEqual(try parse(#""a\"b\\c\/d\n""#), .string("a\"b\\c/d\n"))
    XCTAssertEqual(try parse("9223372036854775807"), .int(Int64.max))
    XCTAssertEqual(try parse("9223372036854775808"), .double(9223372036854775808))
    XCTAssertEqual(try parse("1e308"), .double(1e308))
  }

  func testADuplicateKeyKeepsItsLastValueAtEveryDepth() throws {
    let v = try parse(#"{"x": {"n": 1, "n": 2}, "x": {"n": 3, "n": 4}}"#)
    XCTAssertEqual(v, .object(["x": .object(["n": .int(4)])]))
  }

  func testRefusalsNameTheLineColumnAndKey() {
    XCTAssertEqual(
      failure("{\n  \"text_config\": {\"rope_theta\": 1e400}\n}"),
      "line 2, column 33: \"text_config.rope_theta\": 1e400 is not a finite number (past the range of a double)"
    )
    XCTAssertEqual(
      failure(#"{"a": -1e999}"#),
      "line 1, column 7: \"a\": -1e999 is not a finite number (past the range of a double)")
    XCTAssertEqual(
      failure(#"{"a": NaN}"#),
      "not valid JSON (line 1, column 7: \"a\": NaN and Infinity are not numbers kvlab accepts (not finite))"
    )
    XCTAssertEqual(
      failure(#"{"a": 1,}"#),
      "not valid JSON (line 1, column 9: expected a key (a string), found '}')")
    XCTAssertEqual(
      failure(#"{"a": 01}"#),
      "not valid JSON (line 1, column 7: \"a\": a number may not start with 0 (leading zeros))")
    XCTAssertEqual(failure("[1] x"), "not valid JSON (line 1, column 5: unexpected 'x' after the JSON value)")
    XCTAssertEqual(failure(""), "not valid JSON (line 1, column 1: expected a value, found the end of the file)")
    XCTAssertEqual(
      failure("\"a\u{01}\""),
      "not valid JSON (line 1, column 3: control character 0x01 in a string)")
    XCTAssertEqual(
      failure(#"{"a": "\x"}"#),
      "not valid JSON (line 1, column 8: \"a\": invalid escape '\\x' in a string)")
    XCTAssertEqual(
      failure(String(repeating: "[", count: 100_000)),
      "not valid JSON (line 1, column 513: nested more than 512 deep)")
    XCTAssertNil(failure(String(repeating: "[", count: 512) + String(repeating: "]", count: 512)))
  }

  func testInvalidUTF8InAStringIsRefused() {
    var bytes = Array(#"{"a": "x"#.utf8)
    bytes += [0xFF, 0x22, 0x7D]
    XCTAssertThrowsError(try JSONValue.parse(Data(bytes))) { error in
      XCTAssertEqual(
        (error as? JSONParseError)?.fileMessage,
        "not valid JSON (line 1, column 7: \"a\": string is not valid UTF-8)")
    }
  }

  /// A config.json with a key given twice means what Python reads: the last value.
  func testConfigWithADuplicateKeyReadsTheLastValue() throws {
    let config = try parse(
      #"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 100, "num_hidden_layers": 3}"#
    ).decode(DecoderConfig.self)
    XCTAssertEqual(config.layers, 3)
  }
}

import Foundation
import KVModels
import XCTest

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Rows 88 on: inputs that reached the engine as a wrong model or a silent loss before.
extension HostileInputTests {
  static func addSecondRound(_ c: inout [Int: Case], idefics: String) {
    // A scaled RoPE named under the key the file used, not a decoder's internal one.
    c[88] = Case {
      try editedConfig(
        "idefics3", $0, section: "text_config", ["rope_scaling": ["rope_type": "banana"]])
    }
    // A number past a double (Python would read infinity).
    c[89] = Case { folder in
      let m = try copyModel("idefics3", into: folder)
      let text = try String(contentsOfFile: m + "/config.json", encoding: .utf8)
      try write(#"{"rope_theta": 1e400, "# + text.dropFirst(), m + "/config.json")
    }
    // A standard deviation of 0 made every pixel, then every logit, NaN.
    c[90] = Case { folder in
      let m = try copyModel("idefics3", into: folder)
      try editJSON(m + "/preprocessor_config.json") { $0["image_std"] = [0, 0, 0] }
    }
    // Two tensors sharing bytes.
    c[91] = Case { folder in
      var g = GGUF()
      g.header(tensors: 2, kvs: 0)
      g.tensor("a", dims: [8], type: 0, offset: 0)
      g.tensor("b", dims: [8], type: 0, offset: 0)
      g.pad(to: 32)
      g.zeros(32)
      try write(g.bytes, folder + "/overlap.gguf")
    }
    // A frame whose name is not UTF-8 was dropped without a word.
    c[92] = Case(before: [idefics]) { folder in
      try FileManager.default.createDirectory(
        atPath: folder + "/clip", withIntermediateDirectories: true)
      let png = try Data(contentsOf: URL(fileURLWithPath: images + "/rgb_61x45.png"))
      try png.write(to: URL(fileURLWithPath: folder + "/clip/a.png"))
      let name = Array((folder + "/clip/b").utf8) + [0xFF] + Array(".png".utf8) + [0]
      let fd = name.withUnsafeBufferPointer {
        $0.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_WRONLY | O_CREAT, 0o644) }
      }
      guard fd >= 0 else { throw TableError.message("cannot create the non-UTF-8 name") }
      defer { close(fd) }
      _ = png.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
    // A symbolic link loop was "no such file or folder".
    c[93] = Case(before: [idefics]) { folder in
      try FileManager.default.createSymbolicLink(atPath: folder + "/loop", withDestinationPath: "loop2")
      try FileManager.default.createSymbolicLink(atPath: folder + "/loop2", withDestinationPath: "loop")
    }
    // A NaN weight (the GGUF scan's counterpart): element 5 of the connector's projection.
    c[94] = Case { folder in
      let m = try copyModel("idefics3", into: folder)
      let weights = m + "/model.safetensors"
      let at = try {
        let file = try SafetensorsFile(path: weights)
        let info = try file.tensor("model.connector.modality_projection.proj.weight")
        return file.dataOffset + info.dataOffsets.lowerBound + 5 * 4
      }()
      let h = try XCTUnwrap(FileHandle(forUpdatingAtPath: weights))
      try h.seek(toOffset: UInt64(at))
      h.write(Data([0x00, 0x00, 0xC0, 0x7F]))
      try h.close()
    }
  }
}

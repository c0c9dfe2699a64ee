import Foundation
import KVTensor
import XCTest

/// With glibc's default, freeing a large mapped block raises the mmap threshold to its size, so
/// the next blocks below that size come from the heap and stay resident when freed. After
/// `returnLargeFreesToTheSystem` the threshold is fixed: an 8 MiB buffer allocated after a
/// 16 MiB one was freed is still its own mapping, and freeing it gives its pages back.
///
/// The allocator's state is the process's, and other tests leave free chunks in the heap that
/// later requests would reuse; so the check runs in a fresh child process (this test binary,
/// running only this test), which sets the threshold first, as `kvlab` does at start.
final class ProcessMemoryTests: XCTestCase {
  static let childFlag = "KVLAB_PROCESS_MEMORY_CHILD"

  func testLargeFreesReturnToTheSystem() throws {
    // Under AddressSanitizer (scripts/sanitize.sh) malloc is ASan's: it quarantines freed
    // blocks on purpose, and glibc's mmap threshold does not apply.
    try XCTSkipIf(
      dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil,
      "glibc's allocator is replaced by AddressSanitizer's")
    if ProcessInfo.processInfo.environment[Self.childFlag] != nil {
      try checkInThisProcess()
      return
    }
    let child = Process()
    child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    child.arguments = ["KVTensorTests.ProcessMemoryTests/testLargeFreesReturnToTheSystem"]
    child.environment = ProcessInfo.processInfo.environment.merging([Self.childFlag: "1"]) { $1 }
    let output = Pipe()
    child.standardOutput = output
    child.standardError = output
    try child.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    child.waitUntilExit()
    XCTAssertEqual(child.terminationStatus, 0, text)
    XCTAssertTrue(text.contains("Executed 1 test, with 0 failures"), text)
  }

  private func checkInThisProcess() throws {
    XCTAssertTrue(ProcessMemory.returnLargeFreesToTheSystem())
    func touched(_ floats: Int) -> FloatBuffer {
      let b = FloatBuffer(uninitializedCount: floats, category: .activations, meter: nil)
      b.pointer.update(repeating: 1, count: floats)  // every page resident
      return b
    }
    var big: FloatBuffer? = touched(4 << 20)  // 16 MiB, then freed: the default would now
    big = nil  // serve blocks under 16 MiB from the heap
    _ = big
    let before = try XCTUnwrap(ProcessMemory.currentRSS())
    var buffer: FloatBuffer? = touched(2 << 20)  // 8 MiB
    let held = try XCTUnwrap(ProcessMemory.currentRSS())
    XCTAssertGreaterThan(held - before, 6 << 20)
    buffer = nil
    _ = buffer
    let after = try XCTUnwrap(ProcessMemory.currentRSS())
    XCTAssertLessThan(after - before, 2 << 20, "a freed 8 MiB buffer stayed resident")
  }
}

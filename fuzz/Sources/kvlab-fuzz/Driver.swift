import Foundation

// libFuzzer's driver. SwiftPM links an executable's entry point as `<module>_main` (here
// `kvlab_fuzz_main`); with -parse-as-library there is none, so this function is it, and it
// hands the chosen target to libFuzzer: `kvlab-fuzz TARGET [libFuzzer flags] [corpus folders]`.

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
  _ callback: @convention(c) (UnsafeRawPointer?, Int) -> CInt
) -> CInt

@_cdecl("kvlab_fuzz_main")
func kvlabFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt
{
  let name = argc > 1 ? argv[1].map { String(cString: $0) } : nil
  guard let name, let target = fuzzTargets.first(where: { $0.name == name }) else {
    let list = fuzzTargets.map {
      "  \($0.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.about)"
    }
    FileHandle.standardError.write(
      Data(
        ("usage: kvlab-fuzz TARGET [libFuzzer flags] [corpus folders]\ntargets:\n"
          + list.joined(separator: "\n") + "\n").utf8))
    return 2
  }
  // Drop the target's name: libFuzzer sees the program name and its own arguments.
  argv[1] = argv[0]
  var count = argc - 1
  var rest: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv + 1
  return LLVMFuzzerRunDriver(&count, &rest, target.run)
}

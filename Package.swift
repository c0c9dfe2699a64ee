// swift-tools-version: 6.1
import Foundation
import PackageDescription

// Layering (lower never imports higher), as in llama.cpp's ggml < llama < tools:
// KVTensor < KVModels < KVCache < KVEngine < KVRepl < kvlab, and
// KVModels < KVTasks (the synthetic task generator: images + question + answer) < KVEngine
let package = Package(
  name: "kvlab",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "kvlab", targets: ["kvlab"]),
    .executable(name: "kvlab-bench", targets: ["kvlab-bench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    .systemLibrary(
      name: "COpenBLAS", pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(
      name: "CEditLine", pkgConfig: "libedit",
      providers: [.apt(["libedit-dev"])]),
    .systemLibrary(
      name: "CImageCodecs", pkgConfig: "libpng",
      providers: [.apt(["libpng-dev", "libturbojpeg0-dev"])]),
    // The weight kernels (portable, AVX2, AVX-512, chosen at run time): C, since Swift cannot
    // name an instruction set per function. No fused multiply-add where a kernel promises
    // ggml's reference values bit for bit.
    .target(
      name: "CKVKernels",
      cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),
    .target(name: "KVTensor", dependencies: ["COpenBLAS", "CKVKernels"]),
    .target(name: "KVModels", dependencies: ["KVTensor", "CImageCodecs"]),
    .target(name: "KVCache", dependencies: ["KVTensor", "KVModels"]),
    .target(name: "KVTasks", dependencies: ["KVModels"]),
    .target(name: "KVEngine", dependencies: ["KVTensor", "KVModels", "KVCache", "KVTasks"]),
    .target(
      name: "KVRepl",
      dependencies: ["KVTensor", "KVModels", "KVCache", "KVEngine", "KVTasks", "CEditLine"]),
    .executableTarget(
      name: "kvlab",
      dependencies: [
        "KVTensor", "KVEngine", "KVRepl",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .executableTarget(
      name: "kvlab-bench", dependencies: ["KVTensor", "KVModels", "KVCache", "KVEngine", "KVTasks"],
      path: "bench/Sources/kvlab-bench"),
    .testTarget(name: "KVTensorTests", dependencies: ["KVTensor"]),
    .testTarget(name: "KVTasksTests", dependencies: ["KVTasks"]),
    .testTarget(
      name: "KVModelsTests", dependencies: ["KVModels"],
      resources: [.copy("Fixtures")]),
    .testTarget(
      name: "KVEngineTests", dependencies: ["KVTensor", "KVModels", "KVCache", "KVEngine"],
      resources: [.copy("Fixtures")]),
    .testTarget(
      name: "KVReplTests",
      dependencies: ["KVTensor", "KVModels", "KVCache", "KVEngine", "KVTasks", "KVRepl"],
      resources: [.copy("Fixtures")]),
    .testTarget(name: "KVCacheTests", dependencies: ["KVCache"], resources: [.copy("Fixtures")]),
  ],
  swiftLanguageModes: [.v5]
)

// The libFuzzer targets (fuzz/, run by scripts/fuzz.sh) exist only when asked for: they are
// built with -sanitize=fuzzer, whose runtime provides the program's entry point, so an ordinary
// `swift build` could not link them.
if ProcessInfo.processInfo.environment["KVLAB_FUZZ"] == "1" {
  package.products.append(.executable(name: "kvlab-fuzz", targets: ["kvlab-fuzz"]))
  package.targets.append(
    .executableTarget(
      name: "kvlab-fuzz", dependencies: ["KVModels", "KVRepl"], path: "fuzz/Sources/kvlab-fuzz"))
}

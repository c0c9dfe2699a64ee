#!/usr/bin/env bash
# Runs the Swift test suite under a sanitizer, multi-threaded kernels on (the tests
# use 2 threads), and replays the examples with the sanitized kvlab:
#
#   scripts/sanitize.sh address     AddressSanitizer (heap/stack overflows, use after free)
#   scripts/sanitize.sh thread      ThreadSanitizer (data races)
#   scripts/sanitize.sh thread --filter KVTensorTests    extra arguments go to `swift test`
#
# Each sanitizer has its own build folder (.build-asan, .build-tsan), so the ordinary build is
# untouched. A sanitizer report fails the run (halt_on_error): the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/sanitize.sh address|thread [swift test arguments]}
shift
case $kind in
  address) dir=.build-asan; export ASAN_OPTIONS=halt_on_error=1:detect_leaks=0:strict_string_checks=1 ;;
  thread) dir=.build-tsan; export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ;;
  *) echo "sanitize.sh: unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
esac
flags=(-c release -Xswiftc -enable-testing --sanitize="$kind" --build-path "$dir")
swift build "${flags[@]}" --build-tests
start=$(date +%s)
swift test "${flags[@]}" --skip-build "$@"
bin="$(swift build "${flags[@]}" --show-bin-path)"
if [[ $# -eq 0 ]]; then
  for script in examples/*.kvl; do "$bin/kvlab" replay "$script" --check; done
fi
echo "sanitize.sh: $kind: tests and replays passed in $(($(date +%s) - start)) s"

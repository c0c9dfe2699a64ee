#!/usr/bin/env bash
# The test command (README): builds, runs the Swift test suite, then the pseudo-terminal tests
# of the interactive REPL.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product kvlab
swift test -c release
if [ -f Tests/pty/test_interactive.py ]; then
  python3 Tests/pty/test_interactive.py "$(swift build -c release --show-bin-path)/kvlab"
fi

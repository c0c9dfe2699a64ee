#!/usr/bin/env bash
# The test command (README): builds, runs the Swift test suite, then the pseudo-terminal tests
# of the interactive REPL, then the Jupyter kernel (notebooks through nbclient).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release -Xswiftc -enable-testing --product kvlab
# -enable-testing: the suite uses @testable imports in a release (optimised) build, since the
# model tests would take minutes unoptimised.
swift test -c release -Xswiftc -enable-testing
bin="$(swift build -c release -Xswiftc -enable-testing --show-bin-path)"
# Saved sessions are regression tests: each must replay with identical output.
for script in examples/*.kvl; do
  "$bin/kvlab" replay "$script" --check
done
# So are the tutorial notebooks (nbformat 4; code cells hold kvlab commands), checked twice:
# a second run in the same state must give the same output.
for pass in 1 2; do
  for nb in notebooks/*.ipynb; do
    "$bin/kvlab" notebook run "$nb" --check
  done
done
# The embedded model's accuracy, CI subset (bench/accuracy.py): full cache, the blank-image
# control and SnapKV capped at 25% on the first 24 held-out seeds of each task, against the
# answers recorded in bench/accuracy-ci.json (at most 1 answer per task and setting may differ).
swift build -c release -Xswiftc -enable-testing --product kvlab-bench
python3 bench/accuracy.py --ci
# The same benchmark as a Ray sweep (bench/sweep.py, Ray from scripts/setup.sh in .venv-sweep):
# 2 local workers against one process answer for answer, a worker killed mid-shard, resume.
.venv-sweep/bin/python Tests/sweep/test_sweep.py "$bin"
python3 Tests/pty/test_interactive.py "$bin/kvlab"
# The Jupyter kernel: notebooks executed through it with nbclient (kernel/README.md).
KVLAB_BIN="$bin/kvlab" kernel/run_notebook.sh

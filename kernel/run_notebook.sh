#!/usr/bin/env bash
# CI for the Jupyter kernel: installs kernel/ (pinned ipykernel, jupyter_client, nbclient,
# nbformat) into the venv .venv-kernel with the kvlab kernelspec (--sys-prefix), executes the
# test notebooks through it with nbclient (every code cell's outputs must equal the stored ones;
# failing.ipynb must raise CellExecutionError at its failing cell), then drives the kernel over
# jupyter_client: interrupt, kvlab killed mid-cell and between cells, quit, and the sockets.
# Usage: kernel/run_notebook.sh [--update]   (--update rewrites the stored outputs)
# Env: KVLAB_BIN (default .build/release/kvlab), KVLAB_KERNEL_VENV (default .venv-kernel).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${KVLAB_KERNEL_VENV:-$root/.venv-kernel}
kvlab=${KVLAB_BIN:-$root/.build/release/kvlab}
log() { printf 'run_notebook: %s\n' "$*"; }

if [[ ! -x $kvlab ]]; then
  log "no kvlab binary at $kvlab (build it: swift build -c release --product kvlab)" >&2
  exit 1
fi
if [[ ! -x $venv/bin/python ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
py=$venv/bin/python
# Without build isolation when the venv has setuptools and wheel (no download on every run).
isolation=()
"$py" -c 'import setuptools, wheel' 2>/dev/null && isolation=(--no-build-isolation)
"$py" -m pip install -q --disable-pip-version-check "${isolation[@]}" "$root/kernel[test]"
rm -rf "$root/kernel/build"
# Hermetic: the kernelspec in the venv is the one found (not a user-level 'kvlab' spec), and
# connection files go to a fresh folder.
export JUPYTER_DATA_DIR=$venv/share/jupyter JUPYTER_PLATFORM_DIRS=1
JUPYTER_RUNTIME_DIR=$(mktemp -d)
export JUPYTER_RUNTIME_DIR
trap 'rm -rf "$JUPYTER_RUNTIME_DIR"' EXIT
"$py" -m kvlab_kernel install --sys-prefix --kvlab "$kvlab"

cd "$root/kernel/tests"
"$py" check_notebooks.py "$@" basic.ipynb failing.ipynb
# The tutorials that need no download run through the kernel too.
"$py" check_notebooks.py "$@" ../../notebooks/budgets-and-policies.ipynb ../../notebooks/reading-the-cache.ipynb \
  ../../notebooks/long-clip.ipynb
"$py" test_kernel.py
log "ok"

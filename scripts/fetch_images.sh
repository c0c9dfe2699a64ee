#!/usr/bin/env bash
# Fetches the real photographs used by the image tests and demos (docs/design.md, Models): the files under
# skimage/data/ of the scikit-image 0.26.0 wheel from PyPI (astronaut.png, chelsea.png, coffee.png,
# motorcycle_left.png, rocket.jpg, ...), into data/images/ (git-ignored; never committed).
# Idempotent: does nothing when data/images/ already holds the files of this exact wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.26.0
# One pinned wheel (the images are the same in every wheel of a release; pinning the platform
# tags makes the download, and so its sha256, the same whatever Python runs this script).
WHEEL=scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA256=74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af
DEST=data/images
STAMP="$DEST/.scikit-image-wheel.sha256"
NEEDED=(astronaut.png chelsea.png coffee.png motorcycle_left.png rocket.jpg camera.png logo.png
  chessboard_RGB.png)

log() { printf 'fetch_images: %s\n' "$*"; }

complete() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WHEEL_SHA256" ] || return 1
  for f in "${NEEDED[@]}"; do [ -s "$DEST/$f" ] || return 1; done
}

if complete; then
  log "$DEST present (scikit-image $VERSION)"
  exit 0
fi

PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading scikit-image==$VERSION from PyPI"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
  --python-version 3.11 --abi cp311 --platform manylinux_2_28_x86_64 \
  "scikit-image==$VERSION" -d "$tmp"
if ! echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --status; then
  log "error: $WHEEL is missing or its sha256 is not $WHEEL_SHA256"
  exit 1
fi
mkdir -p "$DEST"
"$PYTHON" - "$tmp/$WHEEL" "$DEST" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith("skimage/data/") or name.endswith("/"):
            continue
        base = os.path.basename(name)
        if not base.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".tif")):
            continue
        with z.open(info) as src, open(os.path.join(dest, base + ".part"), "wb") as dst:
            dst.write(src.read())
        os.replace(os.path.join(dest, base + ".part"), os.path.join(dest, base))
PY
echo "$WHEEL_SHA256" >"$STAMP"
log "$DEST ok ($(ls "$DEST" | wc -l) files)"

#!/usr/bin/env python3
"""JPEGs carrying each EXIF orientation, and what transformers' load_image makes of them.

transformers' `load_image` applies the EXIF orientation (`PIL.ImageOps.exif_transpose`), so a
photo taken on its side reaches the processor upright; kvlab must see the same pixels. Writes
Tests/KVModelsTests/Fixtures/images/exif/: orient_N.jpg for N = 1…8 (a 13×7 picture with no
symmetry, 4:4:4, quality 95, the orientation tag in IFD0; one big-endian (Motorola) EXIF block
among them) plus orient_none.jpg (no EXIF) and exif.json: per file its size after the transpose
and the sha256 of the RGB bytes Pillow gives.

    python3 scripts/gen_exif_fixtures.py      (Pillow only; deterministic)
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import PIL
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests/KVModelsTests/Fixtures/images/exif")


def picture() -> Image.Image:
    w, h = 13, 7
    img = Image.new("RGB", (w, h))
    for y in range(h):
        for x in range(w):
            img.putpixel((x, y), ((x * 19) % 256, (y * 37) % 256, 255 if (x, y) == (0, 0) else 40))
    return img


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    base = picture()
    entries = []
    for n in [None] + list(range(1, 9)):
        name = "orient_none.jpg" if n is None else f"orient_{n}.jpg"
        buf = io.BytesIO()
        if n is None:
            base.save(buf, "JPEG", quality=95, subsampling=0)
        else:
            exif = Image.Exif()
            exif[0x0112] = n
            raw = exif.tobytes()
            if n == 6:  # the same tag in a big-endian TIFF block
                raw = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + \
                    b"\x01\x12\x00\x03\x00\x00\x00\x01" + n.to_bytes(2, "big") + b"\x00\x00" + \
                    b"\x00\x00\x00\x00"
            base.save(buf, "JPEG", quality=95, subsampling=0, exif=raw)
        data = buf.getvalue()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        seen = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        entries.append({"file": name, "orientation": n or 1, "width": seen.width,
                        "height": seen.height,
                        "sha256": hashlib.sha256(seen.tobytes()).hexdigest()})
    with open(os.path.join(OUT, "exif.json"), "w") as f:
        json.dump({"pillow": PIL.__version__, "images": entries}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

"""A 64-frame synthetic clip for the long-clip tutorial (notebooks/long-clip.ipynb): a grey
background with slow noise, a small square drifting left to right, and a red "needle" dot in
frames 40-43 only. 32×32 pixels: one tile (4 tokens) of the tiny Idefics3 fixture per frame.

    .venv-ref/bin/python scripts/gen_clip_fixture.py
"""
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "KVEngineTests", "Fixtures", "vlm",
                   "images", "clip64")
rng = np.random.default_rng(64)
os.makedirs(OUT, exist_ok=True)
base = rng.integers(90, 110, size=(32, 32, 3))
for f in range(64):
    frame = np.clip(base + rng.integers(-4, 5, size=(32, 32, 3)), 0, 255)
    x = 2 + (f * 24) // 63
    frame[12:20, x:x + 6] = (40, 60, 200)
    if 40 <= f < 44:
        frame[4:8, 24:28] = (230, 30, 30)
    Image.fromarray(frame.astype(np.uint8)).save(os.path.join(OUT, f"frame_{f:03d}.png"), optimize=True)
print(f"wrote 64 frames to {os.path.normpath(OUT)}")

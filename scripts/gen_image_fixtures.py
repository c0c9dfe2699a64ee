#!/usr/bin/env python3
"""Generates the image decoding / preprocessing fixtures (Tests/KVModelsTests/Fixtures/images/).

Run with the reference venv (docs/design.md, Models), from the repository root:

    .venv-ref/bin/python scripts/gen_image_fixtures.py

Everything the tests compare against comes from Pillow and from transformers' PIL-backend ("slow")
image processors, never from kvlab. Writes (all small, committed):

  *.png *.jpg *.ppm *.pgm   test images made here: odd sizes; 8-bit RGB, Adam7-interlaced, gray
                            (1-, 2-, 8-, 16-bit), gray+alpha, RGBA (8- and 16-bit), 4-bit and 8-bit
                            palettes (with tRNS), an RGB tRNS colour key, 16-bit RGB, a PNG with gAMA
                            and cHRM chunks, JPEGs (4:2:0, 4:2:2, 4:4:4, progressive, grayscale, and a
                            CMYK one for the error path), binary PPM/PGM with maxval 255, 15, 100,
                            1000 and 65535. The PNGs are written by a small encoder below, since Pillow
                            cannot write 16-bit colour, interlaced or low-bit-depth PNGs.
  decoded.json + decoded.rgb
                            per image: size, Pillow's mode, whether transformers sees alpha, the
                            sha256 of Image.convert("RGB") (alpha dropped) and of transformers'
                            convert_to_rgb (alpha composited over white), whose bytes are also
                            concatenated in decoded.rgb (offset/length in the JSON)
  resize.json + resize.rgb  Image.resize of rgb_61x45.png with every filter to several sizes
  pass_order.json           sha256 of Image.resize to sizes on both sides of Pillow 13's rule for
                            resizing vertically first
  processors.json + proc_*.npy
                            pixel_values of CLIP / SigLIP / Qwen2-VL PIL-backend processors (channel
                            first float32; Qwen2-VL's patches folded back to C×H×W), with each
                            processor's to_dict() so the test configures kvlab from the same JSON
  skimage.json              for the scikit-image photographs in data/images/ (scripts/fetch_images.sh):
                            sha256 of the decoded RGB bytes and, per processor, the sha256 of the
                            float32 tensor, per-channel sums and means and 100 sampled values (the
                            processors' to_dict() once, at the top); Idefics3 (SmolVLM's settings)
                            gives tiles x C x H x W, with its rows and cols

Deterministic: fixed seeds; re-running reproduces the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

import transformers
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import PILImageResampling as R
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVModelsTests", "Fixtures", "images")
PHOTOS = os.path.join(ROOT, "data", "images")

rng = np.random.default_rng(20260503)


# ---------------------------------------------------------------------------------------------
# A minimal PNG encoder (filter type 0 everywhere; Adam7 when asked)


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _rows(a: np.ndarray, bit_depth: int) -> bytes:
    out = []
    for row in a:
        flat = row.reshape(-1)
        if bit_depth == 16:
            b = flat.astype(">u2").tobytes()
        elif bit_depth == 8:
            b = flat.astype(np.uint8).tobytes()
        else:
            bits = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth :]
            b = np.packbits(bits.reshape(-1)).tobytes()
        out.append(b"\x00" + b)
    return b"".join(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(a, color_type, bit_depth, palette=None, trns=None, interlace=False, extra=()):
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w = a.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    for tag, data in extra:
        out += _chunk(tag, data)
    if palette is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    if interlace:
        raw = b"".join(
            _rows(a[ys::dy, xs::dx], bit_depth)
            for xs, ys, dx, dy in ADAM7
            if a[ys::dy, xs::dx].size
        )
    else:
        raw = _rows(a, bit_depth)
    return out + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# Content: smooth structure plus noise, so that resampling filters differ visibly


def photo(h: int, w: int, channels: int = 3, noise: float = 18.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [
        127 + 100 * np.sin(x / 5.0 + c) * np.cos(y / 7.0 - c) + 40 * ((x + 2 * y + 9 * c) % 17 > 8)
        for c in range(channels)
    ]
    img = np.stack(planes, -1) + rng.normal(0, noise, (h, w, channels))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write(name: str, data: bytes) -> str:
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_images() -> list[str]:
    names = []

    def png(name, *args, **kw):
        write(name, png_bytes(*args, **kw))
        names.append(name)

    png("rgb_61x45.png", photo(45, 61), 2, 8)
    png("rgb_interlaced_37x29.png", photo(29, 37), 2, 8, interlace=True)
    png("gray_33x47.png", photo(47, 33, 1), 0, 8)
    png("gray_2bit_21x13.png", rng.integers(0, 4, (13, 21)), 0, 2)
    png("gray_1bit_19x11.png", rng.integers(0, 2, (11, 19)), 0, 1)
    la = np.concatenate([photo(19, 25, 1), rng.integers(0, 256, (19, 25, 1))], -1)
    png("gray_alpha_25x19.png", la, 4, 8)
    alpha = rng.integers(0, 256, (27, 41, 1))
    alpha[:5] = 0
    alpha[-5:] = 255
    png("rgba_41x27.png", np.concatenate([photo(27, 41), alpha], -1), 6, 8)
    pal16 = rng.integers(0, 256, (16, 3))
    png("palette_4bit_23x17.png", rng.integers(0, 16, (17, 23)), 3, 4, palette=pal16)
    pal = rng.integers(0, 256, (40, 3))
    trns = bytes(rng.integers(0, 256, 30).astype(np.uint8))  # entries 30..39 stay opaque
    png("palette_trns_29x21.png", rng.integers(0, 40, (21, 29)), 3, 8, palette=pal, trns=trns)
    key = photo(13, 17)
    key[3:6, 4:9] = (10, 200, 30)
    png("rgb_trns_17x13.png", key, 2, 8, trns=struct.pack(">HHH", 10, 200, 30))
    png("rgb16_27x19.png", rng.integers(0, 65536, (19, 27, 3)), 2, 16)
    g16 = rng.integers(0, 65536, (15, 23))
    g16[:4] = rng.integers(0, 256, (4, 23))  # some values <= 255, which Pillow keeps
    png("gray16_23x15.png", g16, 0, 16)
    png("rgba16_21x15.png", rng.integers(0, 65536, (15, 21, 4)), 6, 16)
    png("gray_alpha16_15x11.png", rng.integers(0, 65536, (11, 15, 2)), 4, 16)
    chrm = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    png(
        "gamma_chrm_19x13.png", photo(13, 19), 2, 8,
        extra=[(b"gAMA", struct.pack(">I", 100000)), (b"cHRM", chrm)],
    )

    src = Image.fromarray(photo(29, 37, noise=10))
    for name, kw in [
        ("jpeg_420_37x29.jpg", dict(quality=90)),
        ("jpeg_422_37x29.jpg", dict(quality=90, subsampling=1)),
        ("jpeg_444_37x29.jpg", dict(quality=90, subsampling=0)),
        ("jpeg_progressive_37x29.jpg", dict(quality=85, progressive=True)),
    ]:
        buf = io.BytesIO()
        src.save(buf, "JPEG", **kw)
        write(name, buf.getvalue())
        names.append(name)
    buf = io.BytesIO()
    Image.fromarray(photo(31, 23, 1)[..., 0]).save(buf, "JPEG", quality=90)
    write("jpeg_gray_23x31.jpg", buf.getvalue())
    names.append("jpeg_gray_23x31.jpg")
    buf = io.BytesIO()
    Image.fromarray(photo(16, 16)).convert("CMYK").save(buf, "JPEG", quality=90)
    write("jpeg_cmyk_16x16.jpg", buf.getvalue())  # error path: not in decoded.json

    def pnm(name, magic, a, maxval, comment=False):
        h, w = a.shape[:2]
        head = magic + b"\n" + (b"# made by gen_image_fixtures.py\n" if comment else b"")
        head += b"%d %d\n%d\n" % (w, h, maxval)
        body = a.astype(">u2" if maxval > 255 else np.uint8).tobytes()
        write(name, head + body)
        names.append(name)

    pnm("p6_19x13.ppm", b"P6", photo(13, 19), 255, comment=True)
    pnm("p6_maxval15_11x7.ppm", b"P6", rng.integers(0, 16, (7, 11, 3)), 15)
    pnm("p6_maxval1000_9x7.ppm", b"P6", rng.integers(0, 1001, (7, 9, 3)), 1000)
    pnm("p6_16bit_13x9.ppm", b"P6", rng.integers(0, 65536, (9, 13, 3)), 65535)
    pnm("p5_17x11.pgm", b"P5", photo(11, 17, 1)[..., 0], 255)
    pnm("p5_maxval100_9x5.pgm", b"P5", rng.integers(0, 101, (5, 9)), 100)
    pnm("p5_16bit_13x9.pgm", b"P5", np.concatenate(
        [rng.integers(0, 256, (3, 13)), rng.integers(0, 65536, (6, 13))]), 65535)
    return names


# ---------------------------------------------------------------------------------------------


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def has_alpha(im: Image.Image) -> bool:
    # transformers.image_transforms.convert_to_rgb's own test
    return "A" in im.getbands() or im.info.get("transparency") is not None


def decoded_entries(names: list[str]) -> None:
    entries, blob = [], bytearray()
    for name in names:
        im = Image.open(os.path.join(OUT, name))
        im.load()
        dropped = np.asarray(im.convert("RGB"))
        composited = convert_to_rgb(im, return_numpy=True)
        assert composited.dtype == np.uint8 and composited.shape == (im.height, im.width, 3)
        raw = composited.tobytes()
        # 16-bit PNGs with alpha: libpng's simplified API reduces 16 → 8 bits by rounding
        # (v·255 + 32895) >> 16, Pillow by taking the high byte: colour and alpha each up to 1
        # apart, so up to 2 after compositing over white; the test allows that there.
        tolerance = 2 if name in ("rgba16_21x15.png", "gray_alpha16_15x11.png") else 0
        entries.append(dict(
            file=name, width=im.width, height=im.height, pil_mode=im.mode,
            has_alpha=has_alpha(im), dropped_sha256=sha(dropped.tobytes()),
            composited_sha256=sha(raw), offset=len(blob), tolerance=tolerance,
        ))
        blob += raw
    with open(os.path.join(OUT, "decoded.rgb"), "wb") as f:
        f.write(blob)
    with open(os.path.join(OUT, "decoded.json"), "w") as f:
        json.dump(dict(pillow=Image.__version__, images=entries), f, indent=1)
        f.write("\n")


FILTERS = {"nearest": R.NEAREST, "box": R.BOX, "bilinear": R.BILINEAR, "hamming": R.HAMMING,
           "bicubic": R.BICUBIC, "lanczos": R.LANCZOS}


def resize_cases() -> None:
    src = Image.open(os.path.join(OUT, "rgb_61x45.png")).convert("RGB")
    # Both passes, in both of Pillow 13's orders: vertical first when the height shrinks by more
    # than twice the width's shrink ((64, 40), (40, 12)), horizontal first otherwise.
    sizes = [(23, 17), (64, 40), (23, 58), (40, 12), (62, 46), (5, 3), (1, 1)]
    cases, blob = [], bytearray()
    for fname, f in FILTERS.items():
        extra = [(30, 45), (61, 20)] if fname == "bicubic" else []
        for w, h in sizes + extra:
            out = np.asarray(src.resize((w, h), resample=f)).tobytes()
            cases.append(dict(filter=fname, width=w, height=h, offset=len(blob)))
            blob += out
    with open(os.path.join(OUT, "resize.rgb"), "wb") as f:
        f.write(blob)
    with open(os.path.join(OUT, "resize.json"), "w") as f:
        json.dump(dict(source="rgb_61x45.png", cases=cases), f, indent=1)
        f.write("\n")


def pass_order_cases() -> None:
    """Pillow 13 resizes vertically first when h - H > 2 (w - W) (and H < h): target sizes on both
    sides of that boundary, each with the sha256 of Pillow's result (bicubic, lanczos, bilinear)."""
    src = Image.open(os.path.join(OUT, "rgb_interlaced_37x29.png")).convert("RGB")
    w, h = src.size
    cases = []
    filters = [("bicubic", R.BICUBIC), ("lanczos", R.LANCZOS), ("bilinear", R.BILINEAR)]
    i = 0
    for dw in (-9, -1, 1, 3, 6, 11):
        for delta in (-3, -1, 0, 1, 2, 5):  # dh = 2·dw + delta; > 0 means vertical first
            dh = 2 * dw + delta
            W, H = w - dw, h - dh
            if not (0 < W != w and 0 < H != h):
                continue
            for fname, f in (filters[i % 3], filters[(i + 1) % 3]):
                out = np.asarray(src.resize((W, H), resample=f)).tobytes()
                cases.append(dict(filter=fname, width=W, height=H, vertical_first=bool(H < h and h - H > 2 * (w - W)),
                                  sha256=sha(out)))
            i += 1
    with open(os.path.join(OUT, "pass_order.json"), "w") as f:
        json.dump(dict(source="rgb_interlaced_37x29.png", pillow=Image.__version__, cases=cases), f, indent=1)
        f.write("\n")


def qwen_unpatchify(pv: np.ndarray, grid: np.ndarray, p) -> np.ndarray:
    """Qwen2-VL's patchify (reshape + transpose + temporal repeat) undone: C×H×W of frame 0."""
    _, gh, gw = (int(v) for v in grid[0])
    m, ps, tp = p.merge_size, p.patch_size, p.temporal_patch_size
    x = pv.reshape(gh // m, gw // m, m, m, 3, tp, ps, ps)[:, :, :, :, :, 0]
    x = x.transpose(4, 0, 2, 5, 1, 3, 6)  # C, gh/m, m, ps, gw/m, m, ps
    return np.ascontiguousarray(x.reshape(3, gh * ps, gw * ps))


def run_processor(proc, im: Image.Image) -> np.ndarray:
    out = proc(images=im, return_tensors="np")
    pv = np.asarray(out["pixel_values"], dtype=np.float32)
    if isinstance(proc, Qwen2VLImageProcessorPil):
        return qwen_unpatchify(pv, out["image_grid_thw"], proc)
    assert pv.shape[0] == 1
    return pv[0]


PROCESSOR_CASES = [
    ("siglip_rgb", SiglipImageProcessorPil, dict(size={"height": 32, "width": 32}), "rgb_61x45.png"),
    ("siglip_rgba_lanczos", SiglipImageProcessorPil,
     dict(size={"height": 24, "width": 40}, resample=R.LANCZOS), "rgba_41x27.png"),
    ("siglip_nearest", SiglipImageProcessorPil,
     dict(size={"height": 20, "width": 30}, resample=R.NEAREST), "rgb_interlaced_37x29.png"),
    ("siglip_normalize_only", SiglipImageProcessorPil,
     dict(size={"height": 16, "width": 16}, do_rescale=False), "jpeg_gray_23x31.jpg"),
    ("siglip_rescale_only", SiglipImageProcessorPil,
     dict(size={"height": 16, "width": 16}, do_normalize=False, resample=R.HAMMING), "rgb16_27x19.png"),
    ("clip_gray", CLIPImageProcessorPil,
     dict(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}), "gray_33x47.png"),
    ("clip_pad_bilinear", CLIPImageProcessorPil,
     dict(size={"shortest_edge": 12}, crop_size={"height": 16, "width": 15}, resample=R.BILINEAR),
     "palette_trns_29x21.png"),
    ("qwen2vl_rgb", Qwen2VLImageProcessorPil, dict(min_pixels=28 * 28, max_pixels=28 * 28 * 2),
     "jpeg_progressive_37x29.jpg"),
    ("qwen2vl_upscale", Qwen2VLImageProcessorPil,
     dict(patch_size=7, merge_size=2, min_pixels=14 * 14 * 4, max_pixels=14 * 14 * 16), "p6_19x13.ppm"),
    ("qwen2vl_downscale", Qwen2VLImageProcessorPil,
     dict(patch_size=7, merge_size=2, min_pixels=14 * 14, max_pixels=14 * 14 * 4), "rgb_61x45.png"),
]


def processor_cases() -> None:
    cases = []
    for name, cls, kwargs, image in PROCESSOR_CASES:
        proc = cls(**kwargs)
        im = Image.open(os.path.join(OUT, image))
        tensor = run_processor(proc, im)
        np.save(os.path.join(OUT, f"proc_{name}.npy"), tensor.astype("<f4"))
        cfg = json.loads(proc.to_json_string())
        cases.append(dict(name=name, image=image, shape=list(tensor.shape), config=cfg))
    with open(os.path.join(OUT, "processors.json"), "w") as f:
        json.dump(dict(transformers=transformers.__version__, cases=cases), f, indent=1)
        f.write("\n")


PHOTO_FILES = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
               "camera.png", "logo.png", "chessboard_RGB.png"]
PHOTO_PROCESSORS = [
    ("siglip", SiglipImageProcessorPil, {}),
    ("clip", CLIPImageProcessorPil, {}),
    ("qwen2vl", Qwen2VLImageProcessorPil, {}),
    # SmolVLM-256M/500M-Instruct's preprocessor_config.json: longest edge to 2048, rounded up to
    # 512-pixel tiles, rows x cols tiles plus the global image (tiles x 3 x 512 x 512).
    ("idefics3", Idefics3ImageProcessorPil,
     dict(do_image_splitting=True, size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
          resample=R.LANCZOS, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])),
]
# The first three processors draw their sample indices from one generator (their entries came
# first); each processor added later draws from its own, so the earlier entries stay as they were.
OWN_SAMPLE_SEED = {"idefics3": 11}


def photo_cases() -> None:
    if not all(os.path.exists(os.path.join(PHOTOS, f)) for f in PHOTO_FILES):
        print(f"skipping skimage.json: run scripts/fetch_images.sh first ({PHOTOS} incomplete)")
        return
    local = np.random.default_rng(7)
    own = {name: np.random.default_rng(seed) for name, seed in OWN_SAMPLE_SEED.items()}
    photos = []
    configs = {pname: json.loads(cls(**kw).to_json_string()) for pname, cls, kw in PHOTO_PROCESSORS}
    for fname in PHOTO_FILES:
        im = Image.open(os.path.join(PHOTOS, fname))
        im.load()
        rgb = convert_to_rgb(im, return_numpy=True)
        entry = dict(file=fname, width=im.width, height=im.height, pil_mode=im.mode,
                     has_alpha=has_alpha(im), rgb_sha256=sha(rgb.tobytes()), processors=[])
        for pname, cls, kwargs in PHOTO_PROCESSORS:
            proc = cls(**kwargs)
            tiles = {}
            if isinstance(proc, Idefics3ImageProcessorPil):
                # tiles x C x H x W: the rows x cols tiles (row-major) then the global image
                out = proc(images=im, return_tensors="np", return_row_col_info=True)
                t = np.asarray(out["pixel_values"], dtype=np.float32)[0].astype("<f4")
                tiles = dict(tiles=t.shape[0], rows=int(np.asarray(out["rows"]).reshape(-1)[0]),
                             cols=int(np.asarray(out["cols"]).reshape(-1)[0]),
                             pixel_attention_mask_all_true=bool(np.asarray(out["pixel_attention_mask"]).all()))
                planes = [t[:, c] for c in range(3)]
            else:
                t = run_processor(proc, im).astype("<f4")
                planes = [t[c] for c in range(3)]
            flat = t.reshape(-1)
            idx = np.sort(own.get(pname, local).choice(flat.size, size=100, replace=False))
            entry["processors"].append(dict(
                name=pname, shape=list(t.shape), **tiles,
                sha256=sha(t.tobytes()),
                channel_sums=[float(p.astype(np.float64).sum()) for p in planes],
                channel_means=[float(p.astype(np.float64).mean()) for p in planes],
                sample_indices=idx.tolist(),
                # float32 values printed shortest-round-trip: exact, and half the digits
                sample_values=[float(str(v)) for v in flat[idx]],
            ))
        photos.append(entry)
    with open(os.path.join(OUT, "skimage.json"), "w") as f:
        # One line per photo processor entry: small, still diffable.
        f.write('{"scikit_image": "0.26.0",\n "processors": ' + json.dumps(configs) + ',\n "photos": [\n')
        for i, p in enumerate(photos):
            procs = p.pop("processors")
            f.write("  " + json.dumps(p)[:-1] + ', "processors": [\n')
            f.write(",\n".join("   " + json.dumps(q) for q in procs))
            f.write("]}" + ("," if i + 1 < len(photos) else "") + "\n")
        f.write(" ]}\n")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    names = make_images()
    decoded_entries(names)
    resize_cases()
    pass_order_cases()
    processor_cases()
    photo_cases()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")
    if total > 450_000:
        sys.exit("fixtures exceed 450 KB")


if __name__ == "__main__":
    main()

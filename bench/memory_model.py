"""The model and frames bench/memory_vs_frames.py measures: the SmolLM2-shaped Idefics3 folder it
builds, the frames, and the settings --family internvl and --model switch to another model."""
from __future__ import annotations

import json
import os

from idefics3_folder import FIXTURE, build_idefics3_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTDIR = os.path.join(ROOT, "bench", "out")
# --model PATH measures another model folder instead (e.g. the embedded weights/kvlab-shapes); the
# environment carries it to the --worker subprocesses.
MODEL_DIR = os.environ.get("KVLAB_MEMORY_MODEL") or os.path.join(OUTDIR, "memory-model")
FRAMES_DIR = os.path.join(OUTDIR, "frames")
FRAME_SIZE = 512
SEED = 20260604

VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
              image_size=FRAME_SIZE, patch_size=32, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
SCALE_FACTOR = 2
# SmolLM2-135M's decoder (HuggingFaceTB/SmolLM2-135M config.json), vocabulary from the fixture.
TEXT = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5,
            max_position_embeddings=8192, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
            attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
KV_BYTES_PER_TOKEN = TEXT["num_hidden_layers"] * TEXT["num_key_value_heads"] * TEXT["head_dim"] * 2 * 4
TOKENS_PER_FRAME = 64
MODEL_DESC = ("random Idefics3 (SmolVLM layout), decoder SmolLM2-135M-shaped (30 layers, 3 KV heads x 64), "
              "vision SigLIP-like 512x512 / patch 32, hidden 384, 6 layers, scale 2")
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The model folder and the frames (built with the reference venv's transformers)


def spec():
    with open(os.path.join(FIXTURE, "config.json")) as f:
        fixture = json.load(f)
    import torch
    return {"vision": VISION, "text": TEXT, "scale_factor": SCALE_FACTOR, "seed": SEED,
            "fixture_config": fixture, "torch": torch.__version__}


def build_model(folder=MODEL_DIR):
    want = spec()
    ftext = want["fixture_config"]["text_config"]
    text = dict(TEXT, model_type="llama", vocab_size=ftext["vocab_size"], bos_token_id=ftext["bos_token_id"],
                eos_token_id=ftext["eos_token_id"], pad_token_id=ftext["pad_token_id"])
    build_idefics3_folder(folder, want, VISION, text, SCALE_FACTOR, SEED,
                          tile_edge=FRAME_SIZE, image_edge=4 * FRAME_SIZE)


def make_frames(count, folder=FRAMES_DIR):
    """frame_000.png ...: smooth value noise (fixed seed) drifting right, plus a disc moving on a
    circle; deterministic (regenerated only when missing)."""
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    names = [os.path.join(folder, f"frame_{i:03d}.png") for i in range(count)]
    if all(os.path.exists(n) for n in names):
        return
    rng = np.random.default_rng(SEED)
    coarse = rng.uniform(0, 255, (3, 20, 40))  # 3 channels of coarse noise, upsampled smoothly
    s = FRAME_SIZE
    y, x = np.mgrid[0:s, 0:s].astype(np.float64)
    for i, name in enumerate(names):
        if os.path.exists(name):
            continue
        planes = []
        for c in range(3):
            gx = (x + 6.0 * i) / s * 19.0  # drift right 6 px a frame
            gy = y / s * 19.0
            x0, y0 = np.floor(gx).astype(int) % 40, np.floor(gy).astype(int) % 20
            fx, fy = gx - np.floor(gx), gy - np.floor(gy)
            fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
            n = coarse[c]
            a = n[y0, x0] * (1 - fx) + n[y0, (x0 + 1) % 40] * fx
            b = n[(y0 + 1) % 20, x0] * (1 - fx) + n[(y0 + 1) % 20, (x0 + 1) % 40] * fx
            planes.append(a * (1 - fy) + b * fy)
        img = np.stack(planes, -1)
        cx = s / 2 + 0.3 * s * np.cos(i * 0.35)
        cy = s / 2 + 0.3 * s * np.sin(i * 0.35)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (0.08 * s) ** 2
        img[disc] = [230, 40, 40]
        img += np.random.default_rng(SEED + i).normal(0, 4, img.shape)
        Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(name)


def frame_paths(n):
    return [os.path.join(FRAMES_DIR, f"frame_{i:03d}.png") for i in range(n)]


def use_internvl(args):
    """--family internvl: the random InternVL3.5-1B-shaped folder (written once, numpy only) and 448-px
    frames (one tile each, 256 visual tokens); transformers and kvpress are not run for it."""
    global MODEL_DIR, FRAMES_DIR, FRAME_SIZE, MODEL_DESC, KV_BYTES_PER_TOKEN, TOKENS_PER_FRAME
    import internvl_memory_model as internvl
    MODEL_DIR = os.path.join(OUTDIR, f"memory-internvl-t{args.tower_layers}d{args.decoder_layers}")
    cfg = internvl.write(MODEL_DIR, args.tower_layers, args.decoder_layers)
    FRAME_SIZE, FRAMES_DIR = internvl.TILE, os.path.join(OUTDIR, f"frames{internvl.TILE}")
    t, v = cfg["text_config"], cfg["vision_config"]
    KV_BYTES_PER_TOKEN = t["num_hidden_layers"] * t["num_key_value_heads"] * t["head_dim"] * 2 * 4
    TOKENS_PER_FRAME = internvl.TOKENS_PER_TILE
    counts = internvl.parameter_count(cfg)
    MODEL_DESC = (f"random InternVL (InternVL3.5-1B shapes, BF16 file): InternViT hidden {v['hidden_size']}, "
                  f"{v['num_hidden_layers']} of 24 layers, {v['num_attention_heads']} heads, MLP "
                  f"{v['intermediate_size']}, {FRAME_SIZE}-px tiles of {v['patch_size'][0]}-px patches, "
                  f"pixel shuffle 0.5 -> {TOKENS_PER_FRAME} tokens a frame; Qwen3 decoder hidden {t['hidden_size']}, "
                  f"{t['num_hidden_layers']} of 28 layers, {t['num_attention_heads']} heads, "
                  f"{t['num_key_value_heads']} KV heads x {t['head_dim']}, MLP {t['intermediate_size']}, vocab "
                  f"{t['vocab_size']} (tied); parameters: tower {counts['tower'] / 1e6:.1f}M, projector "
                  f"{counts['projector'] / 1e6:.1f}M, decoder {counts['decoder'] / 1e6:.1f}M")
    args.no_torch = args.no_kvpress = True


def use_model(args):
    """--model PATH: measure another model folder (an Idefics3 layout); the environment carries it
    to the --worker subprocesses."""
    global MODEL_DIR, MODEL_DESC, KV_BYTES_PER_TOKEN, TOKENS_PER_FRAME
    MODEL_DIR = os.environ["KVLAB_MEMORY_MODEL"] = os.path.abspath(args.model)
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        cfg = json.load(f)
    t, v = cfg["text_config"], cfg["vision_config"]
    head_dim = t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
    KV_BYTES_PER_TOKEN = t["num_hidden_layers"] * t["num_key_value_heads"] * head_dim * 2 * 4
    TOKENS_PER_FRAME = (v["image_size"] // v["patch_size"] // cfg.get("scale_factor", 2)) ** 2
    MODEL_DESC = (f"{os.path.relpath(MODEL_DIR, ROOT)} ({t['num_hidden_layers']} decoder layers, "
                  f"{t['num_key_value_heads']} KV heads x {head_dim})")

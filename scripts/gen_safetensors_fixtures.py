#!/usr/bin/env python3
"""Generates the safetensors reader's test fixtures (Tests/KVModelsTests/Fixtures/safetensors/).

Run with the reference venv (docs/design.md, Models), from the repository root:

    .venv-ref/bin/python scripts/gen_safetensors_fixtures.py

Writes (all small, committed):
  dtypes.safetensors        written by safetensors.torch: F32, F16 and BF16 tensors (odd shapes,
                            a scalar, empty tensors, subnormals, ±0, ±inf, NaN), an I64 and a U8
                            tensor (readable header, not convertible), and __metadata__
  dtypes.expected.json      per tensor: dtype, shape, data_offsets, and for F32/F16/BF16 the
                            float32 bit patterns (F16 through numpy, BF16 through torch)
  tiny_llama/               a Hugging Face folder from transformers' save_pretrained of a tiny random
                            LlamaForCausalLM with max_shard_size="8KB", so several shards:
                            config.json, model-0000N-of-0000M.safetensors,
                            model.safetensors.index.json
  tiny_llama.expected.json  per tensor: shape and sha256 of its float32 bytes (torch)
  configs/*.json            config.json of tiny Qwen2-VL, LLaVA and Idefics3 models (configs only,
                            with their architectures as save_pretrained writes them)

Deterministic: fixed seeds (torch's and, by re-executing itself, Python's hash seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

# safetensors.torch orders tensors that share storage (here: the empty ones) through a set:
# fix the hash seed so that re-running writes the same bytes.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

import numpy as np
import torch
from safetensors.torch import save_file

import transformers
from transformers import (
    Idefics3Config,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    Qwen2VLConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVModelsTests", "Fixtures", "safetensors")

torch.manual_seed(20260503)


def bits(t: torch.Tensor) -> list[int]:
    """float32 bit patterns of the values. F16 goes through numpy (IEEE conversion; NaN keeps its
    payload, as the GGUF reader's fixtures have it: torch would canonicalise it to 0x7fffffff);
    BF16 is the upper half of a float32 either way."""
    if t.dtype == torch.float16:
        f = t.contiguous().view(torch.int16).numpy().view(np.float16).astype(np.float32)
    else:
        f = t.float().contiguous().numpy()
    return [int(v) for v in f.reshape(-1).view(np.uint32)]


def dtypes_file() -> None:
    special = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -3e-39, 65504.0, 1.5, -2.25]
    tensors = {
        "f32.odd": torch.randn(3, 5, 7),
        "f32.special": torch.tensor(special, dtype=torch.float32),
        "f32.scalar": torch.tensor(3.25),
        "f32.empty": torch.zeros(0),
        "f16.vector": torch.cat([torch.randn(13), torch.tensor(special)]).to(torch.float16),
        "f16.subnormal": torch.tensor([6e-8, -6e-8, 5.9e-5, 6.1e-5, 0.0], dtype=torch.float16),
        "bf16.matrix": (torch.randn(2, 2, 3) * 100).to(torch.bfloat16),
        "bf16.special": torch.tensor(special, dtype=torch.bfloat16),
        "bf16.empty": torch.zeros(2, 0, dtype=torch.bfloat16),
        "i64.ids": torch.tensor([1, -2, 3, 1 << 40]),
        "u8.bytes": torch.tensor([0, 7, 255], dtype=torch.uint8),
    }
    path = os.path.join(OUT, "dtypes.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "made_by": "gen_safetensors_fixtures.py"})
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.uint8: "U8"}
    expected = []
    for name, t in tensors.items():
        entry = dict(name=name, dtype=names[t.dtype], shape=list(t.shape),
                     data_offsets=header[name]["data_offsets"])
        if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
            entry["bits"] = bits(t)
        expected.append(entry)
    with open(os.path.join(OUT, "dtypes.expected.json"), "w") as f:
        json.dump(dict(safetensors_header_length=n, metadata=header["__metadata__"], tensors=expected), f, indent=1)
        f.write("\n")


def tiny_llama() -> None:
    folder = os.path.join(OUT, "tiny_llama")
    shutil.rmtree(folder, ignore_errors=True)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder, max_shard_size="8KB", safe_serialization=True)
    for extra in ("generation_config.json",):
        p = os.path.join(folder, extra)
        if os.path.exists(p):
            os.remove(p)
    state = {k: v for k, v in model.state_dict().items()}
    expected = {k: dict(shape=list(v.shape), sha256=hashlib.sha256(v.float().contiguous().numpy().tobytes()).hexdigest())
                for k, v in sorted(state.items())}
    files = sorted(os.listdir(folder))
    with open(os.path.join(OUT, "tiny_llama.expected.json"), "w") as f:
        json.dump(dict(transformers=transformers.__version__, files=files, tensors=expected), f, indent=1)
        f.write("\n")


def configs() -> None:
    folder = os.path.join(OUT, "configs")
    os.makedirs(folder, exist_ok=True)
    tiny_text = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    made = {
        "qwen2_vl": Qwen2VLConfig(
            text_config=dict(tiny_text, rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                              mrope_section=[2, 1, 1])),
            vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2)),
        "llava": LlavaConfig(
            text_config=dict(tiny_text, model_type="llama"),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48,
                               num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)),
        "idefics3": Idefics3Config(
            text_config=dict(tiny_text, model_type="llama"),
            vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, image_size=28, patch_size=14)),
    }
    made["qwen2_vl"].architectures = ["Qwen2VLForConditionalGeneration"]
    made["llava"].architectures = ["LlavaForConditionalGeneration"]
    made["idefics3"].architectures = ["Idefics3ForConditionalGeneration"]
    for name, cfg in made.items():
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            f.write(cfg.to_json_string())


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    dtypes_file()
    tiny_llama()
    configs()
    total = 0
    for dirpath, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"wrote {OUT}: {total} bytes")
    if total > 100_000:
        raise SystemExit("fixtures exceed 100 KB")


if __name__ == "__main__":
    main()

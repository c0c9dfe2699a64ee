#!/usr/bin/env python3
"""Generates the GGUF reader's test fixtures (Tests/KVModelsTests/Fixtures/gguf/).

Run with the reference venv (docs/design.md, Models), from the repository root:

    .venv-ref/bin/python scripts/gen_gguf_fixtures.py

Writes (all small, committed):
  all_types.gguf            metadata of every GGUF value type, one or more tensors of each type
                            kvlab dequantizes (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)
  all_types.expected.json   per tensor: ggml type, dims (ne0 first), absolute data offset and the
                            float32 bit patterns `gguf.quants.dequantize` gives for those bytes
  align1.gguf (+ .expected.json)  general.alignment = 1, so tensor data sits at odd offsets
  smollm2_spotcheck.json    a few dequantized values and whole-tensor sums of the real
                            SmolLM2-135M-Instruct.Q4_1.gguf (only when models/ holds it)

Deterministic: a fixed seed, so re-running reproduces the same bytes.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVModelsTests", "Fixtures", "gguf")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

rng = np.random.default_rng(20260417)


def f16_bits(x: float) -> int:
    return int(np.array([x], dtype=np.float16).view(np.uint16)[0])


def sane_scale() -> float:
    """A block scale as real files have them, sometimes tiny enough to be an f16 subnormal."""
    magnitude = 10 ** rng.uniform(-6, -1)  # f16 subnormals are below 6.1e-5
    return float(magnitude if rng.random() < 0.7 else -magnitude)


def raw_blocks(qtype: T, n_blocks: int) -> np.ndarray:
    """Random bytes for `n_blocks` blocks of `qtype`, with every f16 scale field set to a sane
    value (random bits there would be mostly inf/NaN-free garbage of absurd magnitude)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scale_offsets = {
        T.Q8_0: [0],
        T.Q4_0: [0],
        T.Q4_1: [0, 2],  # d, m
        T.Q4_K: [0, 2],  # d, dmin
        T.Q6_K: [type_size - 2],  # d is last
    }[qtype]
    for b in range(n_blocks):
        for off in scale_offsets:
            bits = f16_bits(sane_scale())
            data[b, off] = bits & 0xFF
            data[b, off + 1] = bits >> 8
    return data


SPECIAL_F16 = [
    0x0000, 0x8000,  # ±0
    0x0001, 0x8001, 0x03FF, 0x0200,  # subnormals (smallest, largest, middle)
    0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x3555,  # normals: smallest, ±max, ±1, ~1/3
    0x7C00, 0xFC00,  # ±inf
    0x7E00, 0xFE00, 0x7C01, 0x7DFF, 0xFFFF,  # NaNs: quiet, negative, signalling, payloads
]

SPECIAL_BF16 = [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80,
                0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF]


def build_all_types(path: str) -> None:
    w = gguf.GGUFWriter(path, arch="llama")  # writes general.architecture = "llama"
    # One key per value type, with values at the edges of their ranges.
    w.add_key_value("test.uint8", 200, V.UINT8)
    w.add_key_value("test.int8", -100, V.INT8)
    w.add_key_value("test.uint16", 60000, V.UINT16)
    w.add_key_value("test.int16", -30000, V.INT16)
    w.add_key_value("test.uint32", 4_000_000_000, V.UINT32)
    w.add_key_value("test.int32", -2_000_000_000, V.INT32)
    w.add_key_value("test.uint64", 2**63 + 5, V.UINT64)  # does not fit in Int
    w.add_key_value("test.int64", -(2**62) - 3, V.INT64)
    w.add_key_value("test.float32", 0.1, V.FLOAT32)
    w.add_key_value("test.float64", 0.1, V.FLOAT64)
    w.add_key_value("test.bool_true", True, V.BOOL)
    w.add_key_value("test.bool_false", False, V.BOOL)
    w.add_key_value("test.string", "héllo, ✓ wörld", V.STRING)
    w.add_key_value("test.empty_string", "", V.STRING)
    w.add_key_value("test.array_int32", [1, -2, 3], V.ARRAY)
    w.add_key_value("test.array_uint8", [0, 255, 7], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.array_uint64", [1, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.array_float32", [0.5, -1.25, 3.0], V.ARRAY)
    w.add_key_value("test.array_float64", [0.1, -2.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.array_bool", [True, False, True], V.ARRAY)
    w.add_key_value("test.array_string", ["a", "bb", "", "ccc"], V.ARRAY)
    w.add_key_value("test.array_nested", [[1, 2], [3]], V.ARRAY)
    w.add_key_value("test.array_nested_string", [["x"], ["y", "z"]], V.ARRAY)
    w.add_uint32("llama.block_count", 1)

    # Plain types. numpy shapes are (rows, ne0): the file stores dims reversed.
    f32 = rng.standard_normal(16).astype(np.float32)
    f32[:6] = [np.inf, -np.inf, np.nan, -0.0, 1e-45, np.finfo(np.float32).max]
    w.add_tensor("f32", f32.reshape(2, 8))
    w.add_tensor("f32_4d", rng.standard_normal((2, 3, 1, 4)).astype(np.float32))

    f16 = rng.integers(0, 65536, size=64, dtype=np.uint16)
    f16[: len(SPECIAL_F16)] = SPECIAL_F16
    w.add_tensor("f16", f16.view(np.float16).reshape(4, 16))

    bf16 = rng.integers(0, 65536, size=64, dtype=np.uint16)
    bf16[: len(SPECIAL_BF16)] = SPECIAL_BF16
    w.add_tensor("bf16", bf16.view(np.uint8).reshape(2, 64), raw_dtype=T.BF16)

    # Block types: quantized by the gguf package where it can, and random bytes (all bit patterns,
    # both scale signs, subnormal scales) for every type.
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
        values = rng.standard_normal((2, 64)).astype(np.float32)
        values[0, :32] = 0.0  # an all-zero block (d = 0)
        w.add_tensor(qtype.name.lower(), gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    for qtype, n_blocks in ((T.Q8_0, 6), (T.Q4_0, 6), (T.Q4_1, 6), (T.Q4_K, 3), (T.Q6_K, 3)):
        blocks = raw_blocks(qtype, n_blocks)
        rows = 3 if n_blocks % 3 == 0 else 1
        w.add_tensor(qtype.name.lower() + "_raw", blocks.reshape(rows, -1), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_align1(path: str) -> None:
    """Alignment 1: an 18-byte Q4_0 block first, so the F32 and F16 data after it are misaligned
    in memory (the reader must use unaligned loads)."""
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_custom_alignment(1)
    w.add_tensor("q4_0", raw_blocks(T.Q4_0, 1), raw_dtype=T.Q4_0)
    w.add_tensor("f32", rng.standard_normal(5).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal(3).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequantized_bits(path: str, tensor: gguf.ReaderTensor) -> np.ndarray:
    """Dequantizes the tensor's exact bytes in the file with gguf.quants.dequantize."""
    raw = np.fromfile(path, dtype=np.uint8, count=int(tensor.n_bytes), offset=int(tensor.data_offset))
    ne0 = int(tensor.shape[0])
    block_size, type_size = gguf.GGML_QUANT_SIZES[tensor.tensor_type]
    rows = raw.reshape(-1, ne0 // block_size * type_size)
    values = gguf.quants.dequantize(rows, tensor.tensor_type).astype(np.float32, copy=False)
    return values.reshape(-1).view(np.uint32)


def expected_json(path: str) -> dict:
    r = gguf.GGUFReader(path)
    tensors = []
    for t in r.tensors:
        bits = dequantized_bits(path, t)
        assert bits.size == int(t.n_elements), t.name
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "dims": [int(d) for d in t.shape],  # the reader reports ne0 first
            "offset": int(t.data_offset),
            "bits": [int(b) for b in bits],
        })
    return {
        "version": int(r.fields["GGUF.version"].parts[-1][0]),
        "alignment": int(r.alignment),
        "tensors": tensors,
    }


def spotcheck_model(path: str) -> dict:
    """A few values and whole-tensor sums of the real model, to pin the reader to it."""
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    out = {}
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight",
                 "blk.29.ffn_down.weight"):
        t = by_name[name]
        values = dequantized_bits(path, t).view(np.float32)
        n = values.size
        ne0 = int(t.shape[0])
        candidates = {0, 1, 15, 16, 31, 32, 33, ne0 - 1, ne0, n // 2 + 7, n - 32, n - 1,
                      int(rng.integers(0, n)), int(rng.integers(0, n))}
        indices = sorted(i for i in candidates if 0 <= i < n)
        as_double = values.astype(np.float64)
        out[name] = {
            "type": int(t.tensor_type),
            "dims": [int(d) for d in t.shape],
            "indices": indices,
            "bits": [int(values.view(np.uint32)[i]) for i in indices],
            "sum": float(as_double.sum()),
            "abs_sum": float(np.abs(as_double).sum()),
        }
    return out


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, build in (("all_types", build_all_types), ("align1", build_align1)):
        path = os.path.join(OUT, name + ".gguf")
        build(path)
        with open(os.path.join(OUT, name + ".expected.json"), "w") as f:
            json.dump(expected_json(path), f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    if os.path.exists(MODEL):
        with open(os.path.join(OUT, "smollm2_spotcheck.json"), "w") as f:
            json.dump(spotcheck_model(MODEL), f, indent=1)
            f.write("\n")
        print("wrote smollm2_spotcheck.json")
    else:
        print(f"{MODEL} not found: smollm2_spotcheck.json left as it is", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generates Tests/KVCacheTests/Fixtures/policies/*.json: kvpress 0.5.4's scores and selections
for SnapKV, KeyDiff, K-norm and StreamingLLM (and block-wise KeyDiff / K-norm via BlockPress) on
small random Q/K/V, which the Swift tests reproduce with kvlab's policies.

Set-up (a throwaway venv; CI never needs it — the JSON outputs are committed):

    python3 -m venv /tmp/venv-kvpress
    /tmp/venv-kvpress/bin/pip install kvpress==0.5.4 "torch==2.13.0+cpu"
    /tmp/venv-kvpress/bin/python scripts/gen_policy_fixtures.py

The tensors come from a real (random-weight) LlamaAttention layer of transformers, so that
SnapKVPress can recompute its window queries from the hidden states exactly as it does in a model
(`get_prerope_query_states` + RoPE); the roped Q, K and V are stored as kvlab's decoder hands them
to the cache: row t holds every head, head h at columns h*head_dim.
"""

import json
import math
import os
import sys

import numpy as np
import torch

import kvpress
from kvpress import BlockPress, KeyDiffPress, KnormPress, SnapKVPress, StreamingLLMPress
from kvpress.utils import get_prerope_query_states
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "KVCacheTests", "Fixtures", "policies")
HEADS, KV_HEADS, HEAD_DIM, TOKENS = 6, 2, 16, 40


def floats(t):
    # float32 values written in their shortest round-tripping form (parsed back bit-exactly).
    return [float(str(np.float32(x))) for x in t.detach().reshape(-1).numpy()]


def rows(t):
    """[1, heads, tokens, dim] -> [tokens, heads*dim] flattened (kvlab's row layout)."""
    return floats(t[0].transpose(0, 1).reshape(t.shape[2], -1))


def make_case(seed):
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HEADS * HEAD_DIM,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        intermediate_size=64,
        num_hidden_layers=1,
        rope_theta=10000.0,
        max_position_embeddings=256,
    )
    module = LlamaAttention(config, layer_idx=0).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
        hidden = torch.randn(1, TOKENS, config.hidden_size)
        rotary = LlamaRotaryEmbedding(config)
        cos, sin = rotary(hidden, torch.arange(TOKENS)[None])
        q = get_prerope_query_states(module, hidden)
        k = module.k_proj(hidden).view(1, TOKENS, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = module.v_proj(hidden).view(1, TOKENS, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return module, hidden, (cos, sin), q, k, v


def kept_indices(press, module, hidden, k, v, kwargs):
    """Runs press.compress and recovers the kept token indices per KV head (sorted) by matching
    the kept key rows to the input's."""
    with torch.no_grad():
        ck, cv = press.compress(module, hidden, k, v, None, kwargs)
    out = []
    for h in range(KV_HEADS):
        idx = []
        for row in ck[0, h]:
            match = (k[0, h] == row).all(dim=-1).nonzero().flatten().tolist()
            assert len(match) == 1, "ambiguous key row"
            idx.append(match[0])
        assert len(set(idx)) == len(idx)
        out.append(sorted(idx))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for seed in (0, 1, 2):
        module, hidden, pe, q, k, v = make_case(seed)
        kwargs = {"position_embeddings": pe}
        presses = []
        for ratio in (0.25, 0.6):
            presses += [
                ("snapkv", {"window": 8, "kernel": 5}, SnapKVPress(compression_ratio=ratio, window_size=8, kernel_size=5)),
                ("snapkv", {"window": 4, "kernel": 3}, SnapKVPress(compression_ratio=ratio, window_size=4, kernel_size=3)),
                ("keydiff", {}, KeyDiffPress(compression_ratio=ratio)),
                ("knorm", {}, KnormPress(compression_ratio=ratio)),
                ("streaming", {"sinks": 4}, StreamingLLMPress(compression_ratio=ratio, n_sink=4)),
            ]
        results = []
        for name, options, press in presses:
            with torch.no_grad():
                scores = press.score(module, hidden, k, v, None, kwargs)
            n_kept = int(TOKENS * (1 - press.compression_ratio))
            top = scores.topk(n_kept, dim=-1).indices[0]
            selected = [sorted(top[h].tolist()) for h in range(KV_HEADS)]
            assert selected == kept_indices(press, module, hidden, k, v, kwargs)
            results.append(
                {
                    "policy": name,
                    "options": options,
                    "compression_ratio": press.compression_ratio,
                    "kept": n_kept,
                    "scores": [floats(scores[0, h]) for h in range(KV_HEADS)],
                    "selected": selected,
                }
            )
        # Block-wise iterative compression (the KeyDiff paper's loop, kvpress's BlockPress):
        # the first n_kept tokens in bulk, then blocks of block_size, keeping n_kept each time.
        blockwise = []
        for name, inner in (("keydiff", KeyDiffPress), ("knorm", KnormPress)):
            for ratio, block in ((0.6, 8), (0.25, 3)):
                press = BlockPress(press=inner(compression_ratio=ratio), block_size=block)
                n_kept = int(TOKENS * (1 - ratio))
                blockwise.append(
                    {
                        "policy": name,
                        "compression_ratio": ratio,
                        "kept": n_kept,
                        "block": block,
                        "selected": kept_indices(press, module, hidden, k, v, kwargs),
                    }
                )
        cases.append(
            {
                "seed": seed,
                "heads": HEADS,
                "kv_heads": KV_HEADS,
                "head_dim": HEAD_DIM,
                "tokens": TOKENS,
                "queries": rows(q),
                "keys": rows(k),
                "values": rows(v),
                "results": results,
                "blockwise": blockwise,
            }
        )
    meta = {
        "generator": "scripts/gen_policy_fixtures.py",
        "kvpress": kvpress.__version__ if hasattr(kvpress, "__version__") else "0.5.4",
        "torch": torch.__version__,
    }
    path = os.path.join(OUT, "kvpress_presses.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, separators=(",", ":"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

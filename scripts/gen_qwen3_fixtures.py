#!/usr/bin/env python3
"""Tiny random Qwen3 decoders, as transformers saves them and as GGUF, with golden logits.

Run with the reference venv from the repository root:

    .venv-ref/bin/python scripts/gen_qwen3_fixtures.py

Two shapes unlike each other (GQA 2 with head_dim 32 > hidden/heads, untied, F32; GQA 6 with
head_dim 12 > hidden/heads, tied, F16 in the GGUF) are written to
Tests/KVEngineTests/Fixtures/qwen3/ as

  <name>/                 the Hugging Face folder `save_pretrained` writes (config.json,
                          model.safetensors) plus a small byte-level tokenizer.json
  <name>.gguf             the weights under llama.cpp's names (`blk.N.attn_q_norm.weight`, ...);
                          llama.cpp does not permute qwen3's Q/K rows, so none are permuted
  <name>.logits.npy       float32 [positions][vocab], every position of `ids`
  manifest.json           per variant: ids, argmax per position, 8-token greedy continuation,
                          the smallest top-1/top-2 gap

The reference runs on the weights as stored (F16 variants rounded to F16 first, also in the
safetensors), so both files and transformers see the same parameters. Deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_decoder_fixtures import (  # noqa: E402
    GREEDY, MIN_GAP, PROMPT_LEN, check_with_transformers_gguf, greedy, randomize, round_to_f16,
    write_gguf)
from vlm_common import byte_level_bpe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "qwen3")

VARIANTS = [
    dict(name="qwen3_gqa2", f16=False, seed=41,
         config=Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=32, intermediate_size=128,
                            vocab_size=300, rope_theta=1e6, rms_norm_eps=1e-6,
                            max_position_embeddings=512, tie_word_embeddings=False,
                            attn_implementation="eager")),
    dict(name="qwen3_gqa6", f16=True, seed=54,
         config=Qwen3Config(hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                            num_key_value_heads=1, head_dim=12, intermediate_size=96,
                            vocab_size=300, rope_theta=1e4, rms_norm_eps=1e-5,
                            max_position_embeddings=256, tie_word_embeddings=True,
                            attn_implementation="eager")),
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "What is in this picture? A cat on a chair.",
    "Describe the video in one sentence.", "The sky is blue and the sun is shining.",
]


def tokenizer(folder: str) -> None:
    """A byte-level BPE of under 300 ids with ChatML's markers, so a session can load the folder."""
    tok = byte_level_bpe(CORPUS * 4, vocab_size=290, min_frequency=2)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]])
    assert tok.get_vocab_size() <= 300
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>").save_pretrained(folder)


def gguf_tokenizer(path: str) -> dict:
    """The folder's tokenizer as llama.cpp's `tokenizer.ggml.*` metadata (gpt2 BPE, the GPT-2
    pre-tokenizer its ByteLevel regex is; added tokens as control tokens)."""
    with open(path, encoding="utf-8") as f:
        t = json.load(f)
    vocab = dict(t["model"]["vocab"])
    specials = {a["content"]: a["id"] for a in t["added_tokens"]}
    vocab.update(specials)
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[x] for x in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    types = [3 if tok in specials else 1 for tok in tokens]
    return dict(tokens=tokens, merges=merges, types=types, eos=specials["<|im_end|>"])


def main() -> int:
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformers": __import__("transformers").__version__,
                "torch": torch.__version__, "variants": []}
    for v in VARIANTS:
        cfg = v["config"]
        torch.manual_seed(v["seed"])
        model = Qwen3ForCausalLM(cfg).eval()
        randomize(model, v["seed"], zero_o_bias=False)
        if v["f16"]:
            round_to_f16(model)
        assert not any(k.endswith(".bias") for k in model.state_dict()), "qwen3 has no biases"
        rng = np.random.default_rng(v["seed"])
        ids = rng.integers(0, cfg.vocab_size, size=PROMPT_LEN).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
        top2 = np.sort(logits, axis=1)[:, -2:]
        gap = float((top2[:, 1] - top2[:, 0]).min())
        cont, cont_gap = greedy(model, ids, GREEDY)
        if min(gap, cont_gap) < MIN_GAP:
            print(f"{v['name']}: top-2 gap {min(gap, cont_gap):.2e} too small: pick another seed")
            return 1
        name = v["name"]
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(folder, extra)):
                os.remove(os.path.join(folder, extra))
        tmp = tempfile.mkdtemp()
        try:
            tokenizer(tmp)
            shutil.copy(os.path.join(tmp, "tokenizer.json"), folder)
        finally:
            shutil.rmtree(tmp)
        gguf_path = os.path.join(OUT, name + ".gguf")
        write_gguf(gguf_path, model, cfg, "qwen3", v["f16"],
                   tokenizer=gguf_tokenizer(os.path.join(folder, "tokenizer.json")))
        np.save(os.path.join(OUT, name + ".logits.npy"), np.ascontiguousarray(logits))
        cross = check_with_transformers_gguf(gguf_path, model)
        manifest["variants"].append({
            "name": name, "f16": v["f16"], "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
            "tied": cfg.tie_word_embeddings, "ids": ids,
            "argmax": logits.argmax(axis=1).tolist(), "greedy": cont,
            "min_top2_gap": min(gap, cont_gap),
        })
        print(f"{name}: logits [{logits.min():.2f}, {logits.max():.2f}], min top-2 gap "
              f"{min(gap, cont_gap):.3f}, greedy {cont}; {cross}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

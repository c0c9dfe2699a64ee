#!/usr/bin/env python3
"""Hugging Face folders of the text-decoder families, for the registry's fixture test.

Run with the reference venv (docs/design.md, Models), from the repository root:

    .venv-ref/bin/python scripts/gen_registry_fixtures.py

For llama and qwen2 a seeded, random-weight (with spread) *ForCausalLM (transformers 5.24.0, fp32, eager
attention) is saved with `save_pretrained` to Tests/KVEngineTests/Fixtures/decoders/<family>_folder/,
with the LLaVA fixture's tokenizer.json (byte-level BPE, 361 tokens) next to it, and

  expected.json   the text, its ids (the `tokenizers` library's), and the logits of the last
                  position as transformers computes them

and the same weights as decoders/<family>_tokenized.gguf (F32, llama.cpp's tensor names and
permutation, as gen_decoder_fixtures.py writes them) with the tokenizer in its metadata
(`tokenizer.ggml.*`, pre type gpt2), so that the GGUF path loads through the registry too and
must give the folder's logits.

so that loading the folder through kvlab's registry is checked by what the model says, not only
that it loads. The vision-language families have their fixtures under vlm/ (gen_vlm_fixtures.py);
the GGUF files under decoders/ come from gen_decoder_fixtures.py.

Deterministic: fixed seeds, so re-running reproduces the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil

import sys

import gguf
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_decoder_fixtures import randomize, write_gguf  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "Tests/KVEngineTests/Fixtures")
TOKENIZER = os.path.join(FIXTURES, "vlm/llava/model/tokenizer.json")
TEXT = "a red square above a blue circle"

# Shapes unlike each other: GQA 4:2 with head_dim 8 and tied embeddings (llama), 6:1 with
# head_dim 6, q/k/v biases and an untied head (qwen2).
VARIANTS = {
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(
            vocab_size=384, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        ),
    ),
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(
            vocab_size=400, hidden_size=36, intermediate_size=40, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=1, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
        ),
    ),
}


def add_tokenizer(path: str, tokenizer_json: str, arch: str) -> None:
    """Rewrites the GGUF at `path` with the byte-level BPE of `tokenizer_json` in its metadata."""
    spec = json.load(open(tokenizer_json))
    vocab = spec["model"]["vocab"]
    added = {t["id"]: t for t in spec["added_tokens"]}
    size = max(list(vocab.values()) + list(added)) + 1
    tokens = [""] * size
    types = [gguf.TokenType.NORMAL] * size
    for text, i in vocab.items():
        tokens[i] = text
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = gguf.TokenType.CONTROL if t["special"] else gguf.TokenType.USER_DEFINED
    reader = gguf.GGUFReader(path)
    tmp = path + ".tmp"
    w = gguf.GGUFWriter(tmp, arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        w.add_key_value(field.name, field.contents(), field.types[0], field.types[-1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) for m in spec["model"]["merges"]])
    for t in reader.tensors:
        w.add_tensor(t.name, t.data.reshape([int(d) for d in reversed(t.shape)]), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def main() -> None:
    tokenizer = Tokenizer.from_file(TOKENIZER)
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    for seed, (name, (cls, config)) in enumerate(VARIANTS.items()):
        torch.manual_seed(1000 + seed)
        config._attn_implementation = "eager"
        model = cls(config).eval()
        # Weights with spread (transformers' std-0.02 init leaves every logit near zero).
        randomize(model, 2000 + seed, zero_o_bias=False)
        out = os.path.join(FIXTURES, "decoders", f"{name}_folder")
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        shutil.copy(TOKENIZER, os.path.join(out, "tokenizer.json"))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump({"text": TEXT, "ids": ids, "last_logits": logits.tolist()}, f)
            f.write("\n")
        gguf_path = os.path.join(FIXTURES, "decoders", f"{name}_tokenized.gguf")
        write_gguf(gguf_path, model, config, name, f16=False)
        add_tokenizer(gguf_path, TOKENIZER, name)
        print(name, out, len(ids), "ids", sum(p.numel() for p in model.parameters()), "parameters")


if __name__ == "__main__":
    main()

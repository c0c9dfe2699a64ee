#!/usr/bin/env python3
"""Tiny random qwen2 / llama decoders as GGUF files, with transformers golden logits.

Run with the reference venv (docs/design.md, Models), from the repository root:

    .venv-ref/bin/python scripts/gen_decoder_fixtures.py

For each variant below a seeded, random-weight Hugging Face model (transformers 5.24.0, fp32,
eager attention) is written to Tests/KVEngineTests/Fixtures/decoders/ as

  <name>.gguf            the weights under llama.cpp's tensor names and `<arch>.*` metadata, the
                         way convert_hf_to_gguf.py lays them out: for llama the Q and K rows (weights
                         AND biases) go through `LlamaModel.permute` (per head, the two rotary halves
                         interleaved); qwen2 is written unpermuted. 2-D weights F32 or F16, 1-D
                         tensors (norms, biases) always F32.
  <name>.config.json     the model's config.json as `save_pretrained` writes it
  <name>.logits.npy      float32 [positions][vocab]: logits of every position of `ids`, all columns
  manifest.json          per variant: ids, argmax per position, greedy continuation, and the
                         smallest top-1/top-2 logit gap (so a reader knows argmax is not a coin toss)

The reference runs on the weights exactly as stored (F16 variants are rounded to F16 first), so
the Swift loader and transformers see bit-identical parameters. Every GGUF is also read back with
transformers' own GGUF loader and its tensors compared with the reference's (an independent check
of the permutation and metadata conventions, as far as transformers maps the tensors).

Deterministic: fixed seeds, so re-running reproduces the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

import gguf
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "decoders")
PROMPT_LEN = 40
GREEDY = 8
MIN_GAP = 2e-3  # smallest acceptable top-1/top-2 gap anywhere (the Swift tolerance is 1e-4)

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, vocab_size=300, attn_implementation="eager")

VARIANTS = [
    # qwen2: q/k/v biases (no o_proj bias), NEOX rope (no GGUF permutation), θ = 1e6, untied.
    dict(name="qwen2", cls=Qwen2ForCausalLM, arch="qwen2", f16=False, seed=11, zero_o_bias=False,
         config=Qwen2Config(**COMMON, rope_theta=1e6, rms_norm_eps=1e-6,
                            max_position_embeddings=512, tie_word_embeddings=False)),
    # llama, attention_bias=True: q/k/v AND o_proj biases; tied embeddings; head_dim 24 so that
    # heads·head_dim (96) differs from hidden (64). F16 weights. o_proj.bias is zero here, as a
    # model whose attention biases were trained only on q/k/v would have it.
    dict(name="llama_qkv_bias", cls=LlamaForCausalLM, arch="llama", f16=True, seed=22,
         zero_o_bias=True,
         config=LlamaConfig(**COMMON, head_dim=24, attention_bias=True, rope_theta=5e5,
                            rms_norm_eps=1e-5, max_position_embeddings=1024,
                            tie_word_embeddings=True)),
    # The same architecture with a random (non-zero) o_proj bias: the full llama attention_bias.
    dict(name="llama_bias", cls=LlamaForCausalLM, arch="llama", f16=True, seed=33,
         zero_o_bias=False,
         config=LlamaConfig(**COMMON, head_dim=24, attention_bias=True, rope_theta=5e5,
                            rms_norm_eps=1e-5, max_position_embeddings=1024,
                            tie_word_embeddings=True)),
]


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`: per head, rows [half0; half1] become
    interleaved pairs (row 2i+p of a head holds HF row p·d/2+i). Used for q (n_head, n_head) and k
    (n_head, n_kv_head) weights and biases."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def randomize(model: torch.nn.Module, seed: int, zero_o_bias: bool) -> None:
    """Weights with enough spread that attention, RoPE and every bias matter (transformers' own
    init is std 0.02 with zero biases, which makes all of them nearly invisible)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
                if zero_o_bias and "o_proj" in name:
                    p.zero_()
            elif "embed_tokens" in name:  # also the output matrix when tied
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:  # Linear [out, in]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / p.shape[1] ** 0.5))


def round_to_f16(model: torch.nn.Module) -> None:
    """Rounds every 2-D weight to F16 (what the GGUF stores), keeping 1-D tensors F32."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())


def write_gguf(path: str, model: torch.nn.Module, cfg, arch: str, f16: bool,
               tokenizer: dict | None = None) -> None:
    w = gguf.GGUFWriter(path, arch=arch)
    if tokenizer:  # tokens, merges, types, eos (gen_qwen3_fixtures.gguf_tokenizer)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list(tokenizer["tokens"])
        w.add_token_merges(tokenizer["merges"])
        w.add_token_types(tokenizer["types"])
        w.add_eos_token_id(tokenizer["eos"])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_name(os.path.basename(path).removesuffix(".gguf"))
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(head_dim)
    if arch == "qwen3" or (arch == "llama" and head_dim != cfg.hidden_size // cfg.num_attention_heads):
        w.add_key_length(head_dim)  # convert_hf_to_gguf writes these when head_dim is explicit
        w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    def add(name: str, a: np.ndarray) -> None:
        if f16 and a.ndim == 2:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        hf, p = f"model.layers.{i}.", f"blk.{i}."
        for proj, short in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            for kind in ("weight", "bias"):
                key = f"{hf}self_attn.{proj}_proj.{kind}"
                if key not in sd:
                    continue
                a = sd[key]
                if arch == "llama" and proj == "q":
                    a = permute(a, n_head, n_head)
                elif arch == "llama" and proj == "k":
                    a = permute(a, n_head, n_kv)
                add(f"{p}{short}.{kind}", a)
        for proj in ("q", "k"):  # qwen3's per-head norms, stored as they are (no permutation)
            if (key := f"{hf}self_attn.{proj}_norm.weight") in sd:
                add(f"{p}attn_{proj}_norm.weight", sd[key])
        add(p + "attn_norm.weight", sd[hf + "input_layernorm.weight"])
        add(p + "ffn_gate.weight", sd[hf + "mlp.gate_proj.weight"])
        add(p + "ffn_up.weight", sd[hf + "mlp.up_proj.weight"])
        add(p + "ffn_down.weight", sd[hf + "mlp.down_proj.weight"])
        add(p + "ffn_norm.weight", sd[hf + "post_attention_layernorm.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        add("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy(model: torch.nn.Module, ids: list[int], n: int) -> tuple[list[int], float]:
    """n greedy tokens by full recomputation (no cache), and the smallest top-2 gap on the way."""
    seq, out, gap = list(ids), [], float("inf")
    with torch.no_grad():
        for _ in range(n):
            last = model(torch.tensor([seq])).logits[0, -1].double()
            top2 = torch.topk(last, 2).values
            gap = min(gap, float(top2[0] - top2[1]))
            out.append(int(last.argmax()))
            seq.append(out[-1])
    return out, gap


def check_with_transformers_gguf(path: str, model: torch.nn.Module) -> str:
    """Reads the GGUF back with transformers' own GGUF loader (which un-permutes llama Q/K weights
    itself) and compares every tensor it loads with the reference model's. An independent check
    of the permutation and metadata conventions; it reports, never fails (transformers 5.24
    drops llama's attention biases, which it does not map)."""
    from transformers import AutoModelForCausalLM
    tmp = tempfile.mkdtemp()
    try:
        shutil.copy(path, tmp)
        m = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=os.path.basename(path),
                                                 dtype=torch.float32)
        ours, theirs = model.state_dict(), m.state_dict()
        diff = max(float((theirs[k] - ours[k]).abs().max()) for k in theirs)
        missing = sorted({k.split(".", 3)[-1] for k in ours if k not in theirs})
        return (f"transformers GGUF loader: {len(theirs)} tensors, max |Δ| {diff:.1e}"
                + (f", not loaded: {missing}" if missing else ""))
    except Exception as e:  # noqa: BLE001 - a cross-check only
        return f"transformers GGUF loader could not load it ({type(e).__name__}: {str(e)[:120]})"
    finally:
        shutil.rmtree(tmp)


def main() -> int:
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformers": __import__("transformers").__version__,
                "torch": torch.__version__, "gguf": gguf.__version__ if hasattr(gguf, "__version__")
                else "0.19.0", "variants": []}
    for v in VARIANTS:
        cfg = v["config"]
        torch.manual_seed(v["seed"])
        model = v["cls"](cfg).eval()
        randomize(model, v["seed"], v["zero_o_bias"])
        if v["f16"]:
            round_to_f16(model)
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        rng = np.random.default_rng(v["seed"])
        ids = rng.integers(0, cfg.vocab_size, size=PROMPT_LEN).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
        top2 = np.sort(logits, axis=1)[:, -2:]
        gap = float((top2[:, 1] - top2[:, 0]).min())
        cont, cont_gap = greedy(model, ids, GREEDY)
        assert cont[0] == int(logits[-1].argmax())
        if min(gap, cont_gap) < MIN_GAP:
            print(f"{v['name']}: top-2 gap {min(gap, cont_gap):.2e} too small: pick another seed")
            return 1

        name = v["name"]
        gguf_path = os.path.join(OUT, name + ".gguf")
        write_gguf(gguf_path, model, cfg, v["arch"], v["f16"])
        np.save(os.path.join(OUT, name + ".logits.npy"), np.ascontiguousarray(logits))  # C order
        tmp = tempfile.mkdtemp()
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            shutil.copy(os.path.join(tmp, "config.json"), os.path.join(OUT, name + ".config.json"))
        finally:
            shutil.rmtree(tmp)
        cross = check_with_transformers_gguf(gguf_path, model)
        manifest["variants"].append({
            "name": name, "architecture": v["arch"], "f16": v["f16"],
            "o_proj_bias": cfg.model_type == "llama" and not v["zero_o_bias"],
            "ids": ids, "argmax": logits.argmax(axis=1).tolist(), "greedy": cont,
            "min_top2_gap": min(gap, cont_gap),
            "logit_range": [float(logits.min()), float(logits.max())],
        })
        print(f"{name}: {os.path.getsize(gguf_path)} bytes, logits [{logits.min():.2f}, "
              f"{logits.max():.2f}], min top-2 gap {min(gap, cont_gap):.3f}, greedy {cont}; {cross}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total {total} bytes in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Prefill and decode speed of kvlab vs Hugging Face transformers (fp32), side by side.

Both run SmolLM2-135M-Instruct (the same GGUF, dequantized to float32) on the same token ids
with 2 threads, alternating engine by engine for each repeat so that load on this shared
machine hits both alike. Reports min and median tokens/s, the ratio kvlab/transformers, and
OpenBLAS's kernel (kvlab) next to torch's BLAS backend.

  .venv-ref/bin/python bench/prefill_vs_transformers.py [--repeats 5] [--out bench/out/prefill.md]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def token_ids(n, vocab):
    # The same formula as bench/Sources/kvlab-bench.
    return [(i * 7919 + 13) % (vocab - 256) + 256 for i in range(n)]


def torch_prefill(model, ids):
    t = time.perf_counter()
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    return time.perf_counter() - t, out.past_key_values


def torch_decode(model, ids, past, steps):
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(steps):
            out = model(torch.tensor([[ids[s]]]), past_key_values=past, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
    return time.perf_counter() - t


def kvlab(binary, lengths, decode, threads, env):
    cmd = [binary, "--lengths", ",".join(map(str, lengths)), "--decode", str(decode),
           "--repeats", "1", "--threads", str(threads)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/kvlab-bench"))
    ap.add_argument("--blas-core", default=None, help="OPENBLAS_CORETYPE for kvlab (default: as detected)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, "models"), gguf_file=GGUF,
                                                 dtype=torch.float32).eval()
    ids = token_ids(max(lengths) + args.decode, model.config.vocab_size)
    env = dict(os.environ)
    if args.blas_core:
        env["OPENBLAS_CORETYPE"] = args.blas_core
    results = {}  # (engine, kind, n) -> [tokens/s]
    core = "?"
    # warm-up both
    torch_prefill(model, ids[:64])
    kvlab(args.binary, [64], 0, args.threads, env)
    for r in range(args.repeats):
        for row in kvlab(args.binary, lengths, args.decode, args.threads, env):
            core = row["blas_core"]
            results.setdefault(("kvlab", row["kind"], row["tokens"] if row["kind"] == "prefill" else row["context"]), []).append(row["tokens_per_s"])
        for n in lengths:
            secs, past = torch_prefill(model, ids[:n])
            results.setdefault(("transformers", "prefill", n), []).append(n / secs)
            if n == lengths[0] and args.decode:
                d = torch_decode(model, ids[n:], past, args.decode)
                results.setdefault(("transformers", "decode", n), []).append(args.decode / d)
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)

    torch_blas = "mkldnn" if torch.backends.mkldnn.is_available() else "native"
    lines = [f"SmolLM2-135M fp32, {args.threads} threads, {args.repeats} repeats, tokens/s min / median. "
             f"kvlab OpenBLAS core: **{core}**; torch {torch.__version__} ({torch_blas}, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}).", "",
             "| measurement | kvlab min / median | transformers min / median | ratio (median) |",
             "| --- | --- | --- | --- |"]
    for kind in ("prefill", "decode"):
        for n in lengths:
            a = results.get(("kvlab", kind, n))
            b = results.get(("transformers", kind, n))
            if not a or not b:
                continue
            label = f"prefill {n} tokens" if kind == "prefill" else f"decode after {n} tokens"
            lines.append(f"| {label} | {min(a):.0f} / {statistics.median(a):.0f} | "
                         f"{min(b):.0f} / {statistics.median(b):.0f} | "
                         f"{statistics.median(a) / statistics.median(b):.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

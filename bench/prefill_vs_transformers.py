#!/usr/bin/env python3
"""Prefill and decode speed of kvlab vs Hugging Face transformers (fp32), side by side.

Both run SmolLM2-135M-Instruct (the same GGUF, dequantized to float32) on the same token ids
with 2 threads. kvlab runs as one `kvlab-bench --serve` process (model loaded once) and the two
engines alternate measurement by measurement (kvlab prefill 512, torch prefill 512, ...) so that
load on this shared machine hits both alike. Reports min and median tokens/s, the ratio
kvlab/transformers, OpenBLAS's kernel (kvlab) next to torch's CPU capability, and the 1-minute
load average seen during the run (on 2 cores shared with builds, > 2 means both engines were
competing for the CPU and the absolute numbers are not meaningful, only the ratio).

  .venv-ref/bin/python bench/prefill_vs_transformers.py [--repeats 5] [--out bench/out/prefill.md]
"""
import argparse
import os
import statistics
import sys
import time

import torch
from kvlab_serve import Kvlab
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
    loads = []
    kv = Kvlab(args.binary, ["--serve"], args.threads, env, ROOT)
    core = kv.ready["blas_core"]
    # warm-up both
    torch_prefill(model, ids[:64])
    kv.ask("prefill 64")
    for r in range(args.repeats):
        for n in lengths:
            # kvlab first on even repeats, transformers first on odd ones
            order = ["kvlab", "transformers"] if r % 2 == 0 else ["transformers", "kvlab"]
            for engine in order:
                loads.append(os.getloadavg()[0])
                if engine == "kvlab":
                    row = kv.ask(f"prefill {n}")
                    results.setdefault(("kvlab", "prefill", n), []).append(row["tokens_per_s"])
                else:
                    secs, _ = torch_prefill(model, ids[:n])
                    results.setdefault(("transformers", "prefill", n), []).append(n / secs)
        if args.decode:
            n = lengths[0]
            for engine in (["kvlab", "transformers"] if r % 2 == 0 else ["transformers", "kvlab"]):
                if engine == "kvlab":
                    row = kv.ask(f"decode {n} {args.decode}")
                    results.setdefault(("kvlab", "decode", n), []).append(row["tokens_per_s"])
                else:
                    _, past = torch_prefill(model, ids[:n])
                    d = torch_decode(model, ids[n:], past, args.decode)
                    results.setdefault(("transformers", "decode", n), []).append(args.decode / d)
        print(f"repeat {r + 1}/{args.repeats} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    kv.close()

    torch_blas = "mkldnn" if torch.backends.mkldnn.is_available() else "native"
    lines = [f"SmolLM2-135M fp32, {args.threads} threads, {args.repeats} repeats. "
             f"kvlab OpenBLAS core: **{core}**; torch {torch.__version__} ({torch_blas}, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}). "
             f"1-min load average during the run: min {min(loads):.1f}, "
             f"median {statistics.median(loads):.1f}, max {max(loads):.1f} "
             f"({os.cpu_count()} CPUs).", "",
             "Tokens/s as min / median / max over the repeats; on a loaded machine the max is "
             "the closest to an idle-machine figure. Ratios are kvlab / transformers.", "",
             "| measurement | kvlab min / median / max | transformers min / median / max "
             "| ratio of medians | ratio of maxima |",
             "| --- | --- | --- | --- | --- |"]
    for kind in ("prefill", "decode"):
        for n in lengths:
            a = results.get(("kvlab", kind, n))
            b = results.get(("transformers", kind, n))
            if not a or not b:
                continue
            label = f"prefill {n} tokens" if kind == "prefill" else f"decode after {n} tokens"
            fmt = lambda v: f"{min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f}" if kind == "prefill" \
                else f"{min(v):.1f} / {statistics.median(v):.1f} / {max(v):.1f}"
            lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | "
                         f"{statistics.median(a) / statistics.median(b):.2f}x | {max(a) / max(b):.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

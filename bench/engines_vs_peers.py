#!/usr/bin/env python3
"""kvlab vs transformers (fp32) vs llama.cpp (xllamacpp) on the same GGUF, side by side.

All three engines run SmolLM2-135M-Instruct from models/SmolLM2-135M-Instruct.Q4_1.gguf with the
same thread count (--threads, default 2) on the same deterministic token ids
`[(i * 7919 + 13) % (vocab - 256) + 256 for i in range(n)]` (the formula of kvlab-bench).
Each engine loads the model once; then, round by round, the measurements alternate between the
engines in a fixed order (prefill: kvlab, transformers, llama.cpp; then decode: kvlab,
transformers, llama.cpp), so that load on this shared machine hits all of them alike. One small
untimed warm-up per engine (a 64-token prefill, and a 2-step decode after 64) precedes the rounds.

What is measured, per engine (P = --prefill, default 512; D = --decode, default 64):

* kvlab: one `kvlab-bench --serve --threads T [--kvlab-args ...]` child process (weights as the
  GGUF stores them unless --kvlab-args says `--precision f32`).
  - prefill: the line `prefill P`: a fresh KV cache, P tokens through the model (logits of the
    last position only); tokens/s = P / seconds, as kvlab-bench reports it.
  - decode: the line `decode P D`: a fresh P-token prefill (untimed), then D single-token
    forward passes (ids[P..P+D), logits of each); tokens/s = D / seconds of those D passes.
  - kernels: `blas_core`, `kernel_path`, `prefill_kernel`, `cpu_features`, `weights` from its JSON lines.
  - peak RSS: VmHWM of the child (/proc/<pid>/status) read after the last round, before it
    exits. The child only ever held at most P + D tokens of KV (float32 K and V), so the table
    relates that peak to GGUF file size + KV bytes, KV bytes = 2 * layers * kv_heads *
    head_dim * 4 * (P + D).
* transformers: AutoModelForCausalLM.from_pretrained(models/, gguf_file=...) with
  dtype=float32, i.e. the GGUF dequantized to fp32 (the same path as
  bench/prefill_vs_transformers.py, whose torch_prefill / torch_decode are reused);
  torch.set_num_threads(T); torch.no_grad().
  - prefill: one forward of the P ids (use_cache=True, logits_to_keep=1); tokens/s = P / wall.
  - decode: an untimed P-token prefill, then D single-token forwards of ids[P..P+D) with the
    returned past_key_values (logits_to_keep=1); tokens/s = D / wall of those D forwards.
  - kernels: torch.backends.cpu.get_cpu_capability() (and whether mkldnn is available).
* llama.cpp: xllamacpp.Server (llama.cpp's server, in-process, no HTTP) with n_gpu_layers=0,
  n_ctx = max(1024, P + D + 8), n_batch = n_ubatch = max(512, P) (so the prefill is one
  llama_decode), cpuparams.n_threads = cpuparams_batch.n_threads = T, one slot. Requests go
  through Server.handle_completions({"prompt": [token ids], ...}) with cache_prompt=False (no
  prompt-cache reuse: every request prefills from an empty KV; checked: timings.cache_n == 0),
  greedy sampling (temperature 0), ignore_eos=True. The numbers are llama.cpp's own `timings`:
  - prefill: a request with n_predict=1; tokens/s = timings.prompt_per_second
    (= prompt_n / prompt_ms; prompt_ms covers the prompt's llama_decode plus sampling the first
    token). Checked each time: prompt_n == P.
  - decode: a request with n_predict=D+1. The server samples the first generated token from the
    prompt's logits (inside prompt_ms), so predicted_ms covers exactly D single-token
    llama_decode calls (+ D+1 greedy samplings); tokens/s = D / predicted_ms (not llama.cpp's
    predicted_per_second, which divides by D+1). Checked each time: predicted_n == D+1, and the
    server's /metrics counters (Server.handle_metrics(): n_decode_total, prompt_tokens_total,
    tokens_predicted_total) grew by exactly ceil(P / n_batch) + D llama_decode calls, P prompt
    tokens and D+1 predicted tokens; and prompt_ms + predicted_ms fits in the request's wall time.
  - kernels: xllamacpp.get_system_info() (ggml's CPU feature string).
  Note: llama.cpp runs the Q4_1 weights as stored (with its f16 KV cache); decode feeds back its
  own greedy tokens instead of ids[P..P+D) (token values do not change the cost).
  llama.cpp runs in this process beside torch, and with transformers in the run it decodes at
  well below its speed alone (35-66 against 83-94 tok/s on a 2-core Zen 4): measure decode
  against llama.cpp with `--engines kvlab,llamacpp` (the report leaves the decode ratio out and
  says so when both peers run), prefill against transformers with `--engines kvlab,torch`.

Also printed: the 1-minute load average before and after the run (on a 2-core machine shared
with builds, > 2 means the engines competed for the CPU: trust the ratios more than the
absolute numbers), the CPU model from /proc/cpuinfo, and the GGUF size / tensor bytes (gguf).

  python3 bench/engines_vs_peers.py [--rounds 5] [--prefill 512] [--decode 64] [--threads 2]
      [--kvlab-args "--kernel-path avx2"] [--engines kvlab,torch,llamacpp] [--out FILE.md]
      [--avx2] [--binary PATH]

--avx2 is the AVX2 configuration in one flag: kvlab on `--kernel-path avx2 --prefill-kernel int8`
(what auto picks on an AVX2 CPU without avx512_bf16; add `--kvlab-args "--prefill-kernel sgemm"`
for the float32 reference) with OpenBLAS's
Haswell kernels (OPENBLAS_CORETYPE=Haswell) and torch at ATEN_CPU_CAPABILITY=avx2 (this
xllamacpp wheel's ggml runs AVX2 anyway).
"""
import argparse
import math
import os
import re
import shlex
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = ("kvlab", "torch", "llamacpp")
LABEL = {"kvlab": "kvlab", "torch": "transformers fp32", "llamacpp": "llama.cpp (xllamacpp)"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def token_ids(n, vocab):
    # The same formula as bench/Sources/kvlab-bench (benchmarkIDs).
    return [(i * 7919 + 13) % (vocab - 256) + 256 for i in range(n)]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def gguf_facts(path):
    import gguf
    r = gguf.GGUFReader(path)

    def field(name):
        f = r.fields.get(name)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    heads = int(field(f"{arch}.attention.head_count"))
    key_length = field(f"{arch}.attention.key_length")
    head_dim = int(key_length) if key_length is not None else \
        int(field(f"{arch}.embedding_length")) // heads
    vocab = field(f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    return {
        "file_bytes": os.path.getsize(path),
        "tensor_bytes": sum(int(t.n_bytes) for t in r.tensors),
        "layers": int(field(f"{arch}.block_count")),
        "kv_heads": int(field(f"{arch}.attention.head_count_kv")),
        "head_dim": head_dim,
        "vocab": int(vocab),
    }


# ---------------------------------------------------------------- engines

class KvlabEngine:
    def __init__(self, args):
        from kvlab_serve import Kvlab
        mode = ["--serve", "--model", args.model, *shlex.split(args.kvlab_args)]
        self.kv = Kvlab(args.binary, mode, args.threads, dict(os.environ), ROOT)
        r = self.kv.ready
        self.info = (f"blas_core {r.get('blas_core')}, kernel_path {r.get('kernel_path')}, "
                     f"prefill {r.get('prefill_kernel')}, "
                     f"cpu_features {r.get('cpu_features')}, weights {r.get('weights')}")
        self.rows = []

    def _ask(self, cmd):
        row = self.kv.ask(cmd)
        self.rows.append(row)
        return row

    def prefill(self, n):
        row = self._ask(f"prefill {n}")
        assert row["kind"] == "prefill" and row["tokens"] == n, row
        return row["tokens_per_s"]

    def decode(self, n, steps):
        row = self._ask(f"decode {n} {steps}")
        assert row["kind"] == "decode" and row["tokens"] == steps and row["context"] == n, row
        return row["tokens_per_s"]

    def peak_rss_kib(self):
        return vm_hwm_kib(self.kv.proc.pid)

    def close(self):
        self.kv.close()


class TorchEngine:
    def __init__(self, args, vocab):
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantizing progress bar
        import torch
        from prefill_vs_transformers import torch_decode, torch_prefill
        import transformers
        from transformers import AutoModelForCausalLM
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)  # past_key_values (reused code)
        self.torch, self._prefill, self._decode = torch, torch_prefill, torch_decode
        torch.set_num_threads(args.threads)
        self.model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(args.model), gguf_file=os.path.basename(args.model),
            dtype=torch.float32).eval()
        if self.model.config.vocab_size != vocab:
            raise RuntimeError(f"vocab: transformers {self.model.config.vocab_size}, gguf {vocab}")
        self.ids = token_ids(args.prefill + args.decode, vocab)
        mkldnn = "mkldnn" if torch.backends.mkldnn.is_available() else "no mkldnn"
        self.info = (f"torch {torch.__version__}, CPU capability "
                     f"{torch.backends.cpu.get_cpu_capability()}, {mkldnn}, "
                     f"{torch.get_num_threads()} threads")

    def prefill(self, n):
        secs, _ = self._prefill(self.model, self.ids[:n])
        return n / secs

    def decode(self, n, steps):
        _, past = self._prefill(self.model, self.ids[:n])
        secs = self._decode(self.model, self.ids[n:], past, steps)
        return steps / secs

    def close(self):
        pass


class LlamaCppEngine:
    METRICS = ("n_decode_total", "prompt_tokens_total", "tokens_predicted_total")

    def __init__(self, args, vocab):
        import xllamacpp
        p = xllamacpp.CommonParams()
        p.model.path = args.model
        p.n_gpu_layers = 0
        p.n_ctx = max(1024, args.prefill + args.decode + 8)
        self.n_batch = max(512, args.prefill)
        p.n_batch = self.n_batch
        p.n_ubatch = self.n_batch
        p.n_parallel = 1
        p.cpuparams.n_threads = args.threads
        p.cpuparams_batch.n_threads = args.threads
        p.warmup = False
        p.endpoint_metrics = True
        p.verbosity = -1  # llama.cpp's own log lines off (they would drown the progress)
        self.server = xllamacpp.Server(p)
        self.vocab = vocab
        # "CPU : SSE3 = 1 | AVX2 = 1 | ..." -> "CPU: SSE3 AVX2 ..." (no '|': it is a table cell)
        info = xllamacpp.get_system_info().strip()
        parts = [x.strip() for x in info.replace("CPU :", "").split("|") if x.strip()]
        feats = [x.split("=")[0].strip() + ("" if x.endswith("= 1") else f"={x.split('=')[-1].strip()}")
                 for x in parts]
        self.info = f"xllamacpp {xllamacpp.__version__}, get_system_info: CPU {' '.join(feats)}"
        self.checked = 0  # requests whose timings and /metrics counters were verified

    def _metrics(self):
        text = self.server.handle_metrics()
        out = {}
        for name in self.METRICS:
            m = re.search(rf"^llamacpp:{name} ([0-9.eE+-]+)$", text, re.M)
            out[name] = float(m.group(1)) if m else None
        return out

    def _complete(self, n, n_predict):
        before = self._metrics()
        wall = time.perf_counter()
        r = self.server.handle_completions({
            "prompt": token_ids(n, self.vocab), "n_predict": n_predict, "ignore_eos": True,
            "cache_prompt": False, "temperature": 0.0, "top_k": 1, "stream": False})
        if "timings" not in r:
            raise RuntimeError(f"llama.cpp: no timings in {str(r)[:500]}")
        wall = time.perf_counter() - wall
        after = self._metrics()
        t = r["timings"]
        if (t["prompt_ms"] + t["predicted_ms"]) / 1000.0 > wall * 1.01:
            raise RuntimeError(f"llama.cpp timings {t} exceed the request's wall time {wall:.3f} s")
        grown = {k: (after[k] - before[k]) if None not in (after[k], before[k]) else None
                 for k in self.METRICS}
        want = {"n_decode_total": math.ceil(n / self.n_batch) + n_predict - 1,
                "prompt_tokens_total": n, "tokens_predicted_total": n_predict}
        problems = [f"{k}: +{grown[k]:g}, expected +{v}" for k, v in want.items()
                    if grown[k] is not None and grown[k] != v]
        if t["cache_n"] != 0 or t["prompt_n"] != n or t["predicted_n"] != n_predict or problems:
            raise RuntimeError(f"llama.cpp did not run what was asked: timings {t}; {problems}")
        if None not in grown.values():
            self.checked += 1
        return t

    def prefill(self, n):
        return self._complete(n, 1)["prompt_per_second"]

    def decode(self, n, steps):
        t = self._complete(n, steps + 1)
        return steps / (t["predicted_ms"] / 1000.0)

    def close(self):
        del self.server


# ---------------------------------------------------------------- main

def stats(v):
    return (min(v), statistics.median(v)) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kvlab-args", default="", help='extra kvlab-bench args, e.g. "--kernel-path avx2"')
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--avx2", action="store_true",
                    help="the AVX2 configuration: kvlab --kernel-path avx2 --prefill-kernel int8, OpenBLAS Haswell "
                         "(OPENBLAS_CORETYPE), torch ATEN_CPU_CAPABILITY=avx2")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", GGUF))
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/kvlab-bench"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.model = os.path.abspath(args.model)
    if args.avx2:  # before torch is imported and the kvlab child starts
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
        # An AVX2 CPU has no avx512_bf16, so its auto prefill kernel is int8 (a later
        # --prefill-kernel in --kvlab-args wins).
        args.kvlab_args = f"--kernel-path avx2 --prefill-kernel int8 {args.kvlab_args}".strip()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        ap.error(f"--engines: choose from {','.join(ENGINES)}")
    engines = [e for e in ENGINES if e in engines]  # the fixed order

    load_before = os.getloadavg()[0]
    facts = gguf_facts(args.model)
    held = args.prefill + args.decode
    kv_bytes = 2 * facts["layers"] * facts["kv_heads"] * facts["head_dim"] * 4 * held

    live = {}
    for e in engines:
        t = time.perf_counter()
        log(f"loading {LABEL[e]} ...")
        live[e] = (KvlabEngine(args) if e == "kvlab" else
                   TorchEngine(args, facts["vocab"]) if e == "torch" else
                   LlamaCppEngine(args, facts["vocab"]))
        log(f"  {LABEL[e]} loaded in {time.perf_counter() - t:.1f} s: {live[e].info}")
    for e in engines:  # untimed warm-up
        live[e].prefill(min(64, args.prefill))
        if args.decode > 0:
            live[e].decode(min(64, args.prefill), min(2, args.decode))

    res = {(e, k): [] for e in engines for k in ("prefill", "decode")}
    loads = []
    for r in range(args.rounds):
        for e in engines:
            loads.append(os.getloadavg()[0])
            v = live[e].prefill(args.prefill)
            res[(e, "prefill")].append(v)
            log(f"round {r + 1}/{args.rounds} {LABEL[e]} prefill {args.prefill}: {v:.1f} tok/s")
        if args.decode > 0:
            for e in engines:
                loads.append(os.getloadavg()[0])
                v = live[e].decode(args.prefill, args.decode)
                res[(e, "decode")].append(v)
                log(f"round {r + 1}/{args.rounds} {LABEL[e]} decode {args.decode} after "
                    f"{args.prefill}: {v:.2f} tok/s")
        log(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})")

    rss_kib = live["kvlab"].peak_rss_kib() if "kvlab" in live else None
    for e in engines:
        live[e].close()
    load_after = os.getloadavg()[0]

    # ------------------------------------------------------------ table
    P, D = args.prefill, args.decode
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    lines = [
        f"SmolLM2-135M-Instruct ({GGUF}), {args.threads} threads per engine, {args.rounds} "
        f"rounds (engines alternating within each round). CPU: **{cpu_model()}** "
        f"({os.cpu_count()} CPUs). 1-min load average: before {load_before:.2f}, after "
        f"{load_after:.2f}" + (f", during min {min(loads):.2f} / max {max(loads):.2f}" if loads else "")
        + (". AVX2 configuration (`--avx2`: kvlab `--kernel-path avx2 --prefill-kernel int8`, OPENBLAS_CORETYPE=Haswell, ATEN_CPU_CAPABILITY=avx2)"
           if args.avx2 else "")
        + (f". kvlab args: `{args.kvlab_args}`" if args.kvlab_args else "") + ".",
        "",
        f"| engine | prefill {P} tok/s min / median | decode {D} after {P} tok/s min / median "
        "| kernels / CPU capability |",
        "| --- | --- | --- | --- |",
    ]
    for e in engines:
        p, d = stats(res[(e, "prefill")]), stats(res[(e, "decode")])
        fp = f"{p[0]:.0f} / {p[1]:.0f}" if p else "-"
        fd = f"{d[0]:.1f} / {d[1]:.1f}" if d else "-"
        lines.append(f"| {LABEL[e]} | {fp} | {fd} | {live[e].info} |")
    ratio_rows = []
    # llama.cpp beside torch in this process decodes slower than alone: no decode ratio then.
    llama_beside_torch = "llamacpp" in live and "torch" in live
    for kind, a, b in (("prefill", "kvlab", "torch"), ("decode", "kvlab", "llamacpp")):
        x, y = stats(res.get((a, kind), [])), stats(res.get((b, kind), []))
        if x and y and not (kind == "decode" and llama_beside_torch):
            ratio_rows.append(f"| {kind}: kvlab / {LABEL[b]} | {x[1] / y[1]:.2f}x | {x[0] / y[0]:.2f}x |")
    if ratio_rows:
        lines += ["", "| ratio | on medians | on mins |", "| --- | --- | --- |", *ratio_rows]
    lines += ["", f"GGUF: file {mib(facts['file_bytes'])} ({facts['file_bytes']} B), tensors "
              f"{mib(facts['tensor_bytes'])} ({facts['tensor_bytes']} B); {facts['layers']} layers, "
              f"{facts['kv_heads']} KV heads x {facts['head_dim']}; float32 KV for {held} tokens "
              f"= {mib(kv_bytes)}."]
    if rss_kib is not None:
        rss = rss_kib * 1024
        lines.append(f"kvlab peak RSS (VmHWM of the --serve child): {mib(rss)}; RSS / (file + KV) "
                     f"= {rss / (facts['file_bytes'] + kv_bytes):.2f}; RSS / (tensors + KV) = "
                     f"{rss / (facts['tensor_bytes'] + kv_bytes):.2f}.")
    if llama_beside_torch:
        # Measured on this machine: llama.cpp decoded at 35-66 tok/s with torch in the run and
        # 83-94 tok/s without it, kvlab (its own process) the same either way.
        lines.append("**Decode against llama.cpp is not fair in this run**: llama.cpp runs in this "
                     "process beside torch and decodes right after transformers, which slows it; "
                     "compare decode with `--engines kvlab,llamacpp`.")
    if "llamacpp" in live:
        n_batch = live["llamacpp"].n_batch
        lines.append(f"llama.cpp checks: every timed request had timings.cache_n = 0, prompt_n = {P}, "
                     f"predicted_n = 1 (prefill) / {D + 1} (decode), and its /metrics counters "
                     f"grew by {math.ceil(P / n_batch)} / {math.ceil(P / n_batch) + D} llama_decode "
                     f"calls ({live['llamacpp'].checked} requests, warm-ups included, verified against /metrics).")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

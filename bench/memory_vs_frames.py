#!/usr/bin/env python3
"""Peak memory vs number of video frames: kvlab's prefill modes at one KV budget, next to
transformers with a kvpress press applied after prefill (the post-prefill practice), in one script.

The model is a randomly initialised Idefics3 (SmolVLM layout) whose text decoder is SmolLM2-135M
shaped (llama: hidden 576, 30 layers, 9 heads, 3 KV heads of 64, MLP 1536), so the K/V cache costs
what it costs in the real model: 30 layers x 3 KV heads x 64 x (K+V) x 4 B = 46,080 B per token.
The vision tower is small (SigLIP layout: 512x512 tiles of 32x32 patches = 256 patches, hidden 384,
6 layers) with scale_factor 2, so one frame (one unsplit tile) becomes 16x16/2^2 = 64 visual tokens,
as a SmolVLM-256M tile does (512/16 = 32 patches a side, scale 4). The decoder's vocabulary is the
fixture tokenizer's (Tests/KVEngineTests/Fixtures/vlm/idefics3/model, 402 ids): the logits are
small, so what is measured is the cache, the activations and the vision tower. The folder is built
once in bench/out/memory-model/ (git-ignored; rebuilt when its spec changes), and the frames
(deterministic 512x512 PNGs: smooth noise plus a moving disc) in bench/out/frames/.

kvlab: every (frames, mode) runs in a fresh `kvlab -c '...'` process:

    budget 1024 tokens; policy keydiff; prefill mode=M block=frame   (mode=full: no budget)
    load bench/out/memory-model; mem reset
    feed frames bench/out/frames max=N --timing; mem unit=MiB

so the peaks are those of the feed alone (`mem reset` after load restarts both the meter's
high-water marks and the process's VmHWM via /proc/self/clear_refs). Reported: the meter's KV,
activation and vision peaks, VmHWM (process peak RSS), the feed's wall time (kvlab's ~seconds) and the process's
CPU seconds (getrusage of the child; steadier than wall time on a shared machine).

transformers (same folder, fp32, sdpa attention in tower and decoder (the default), 2 threads), each
frame count in a fresh subprocess: Idefics3Processor with do_image_splitting=False (one tile per
frame, as kvlab feeds frames) on a user turn of N <image> placeholders, then ONE forward (prefill,
logits_to_keep=1, use_cache=True); VmHWM read from /proc/self/status after the forward, reset with
`echo 5 > /proc/self/clear_refs` after loading the model (so it counts the processor's pixels and
the forward, as kvlab's counts decode, vision and prefill).
  * "transformers full": .venv-ref (transformers 5.24.0) — the full prefill, no press.
  * "transformers+kvpress": kvpress 0.5.4's KeyDiffPress (the same query-agnostic score as kvlab's
    keydiff) with compression_ratio = 1 - 1024/seq_len, applied the way kvpress applies presses:
    forward hooks on each decoder attention layer that prune that layer's cache right after the
    layer has run over the whole prefill. kvpress's context manager looks for
    model.model.language_model (Idefics3 calls it model.model.text_model), so the script points
    an alias at the text model; the press then hooks the same 30 attention layers. Runs in the
    kvpress venv (--kvpress-python, default /tmp/venv-kvpress-mem/bin/python, made with
        python3 -m venv /tmp/venv-kvpress-mem && /tmp/venv-kvpress-mem/bin/pip install \
            --find-links /opt/wheels "torch==2.13.0+cpu" kvpress==0.5.4 pillow
    kvpress 0.5.4 requires transformers<5.3, so pip gives it 5.2.0); the report shows the KV cache
    left after prefill (min(1024, seq_len) tokens per layer, i.e. the press did run).
  * "kvpress venv, no press": the same venv's transformers without the press, at the largest frame
    count only, so that the press's effect on the peak is read within one transformers version.
  Weights: every parameter is read once after from_pretrained (which may leave them as lazily
  paged-in file mappings), so "RSS after load" holds the weights, as kvlab's does.

A diagnostic row runs capped again at the smallest and largest frame counts with glibc's
MALLOC_MMAP_THRESHOLD_=65536 (--no-diag skips it): kvlab as built, only the allocator's setting
differs; it separates memory kvlab holds from freed heap memory glibc keeps resident.

    .venv-ref/bin/python bench/memory_vs_frames.py [--frames 4,8,16,32,64]
        [--modes full,post,sequential,capped] [--budget 1024] [--policy keydiff] [--quick]
        [--binary .build-mem/release/kvlab] [--threads 2] [--no-torch] [--no-kvpress]
        [--no-kvpress-baseline] [--no-diag] [--out bench/out/memory.md] [--plot bench/out/memory.png]
    .venv-ref/bin/python bench/memory_vs_frames.py --replot bench/out/memory.json   # report + plot only

--family internvl measures a random InternVL folder with InternVL3.5-1B's shapes instead
(bench/internvl_memory_model.py writes it with numpy: BF16 safetensors + config.json, the
internvl_qwen3 fixture's tokenizer) on 448x448 frames (one tile, 256 visual tokens each), kvlab
only. --tower-layers and --decoder-layers lower the layer counts (real: 24 and 28; widths stay) so
that 64 frames fit a slow machine; --full-frames limits mode=full to some frame counts:

    python bench/memory_vs_frames.py --family internvl --tower-layers 1 --decoder-layers 4 \
        --frames 4,16,64 --modes full,capped --full-frames 4,64 --no-diag \
        --out bench/out/memory-internvl.md --plot bench/out/memory-internvl.png

The default run takes about 11 minutes on 2 cores at load ~2 (15 at load ~4); --quick (frames 4 and
64, modes full and capped) about 6. Needs matplotlib in the venv for the plot. Writes
bench/out/memory.md (also printed), bench/out/memory.json (raw numbers) and bench/out/memory.png.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import memory_model as mm
import memory_report as rep
from memory_model import MiB, OUTDIR, ROOT


# ---------------------------------------------------------------------------------------------
# /proc/self helpers (Linux)


def proc_status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    return float("nan")


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ---------------------------------------------------------------------------------------------
# transformers worker (a fresh process per frame count; the parent runs it with the right venv)


def worker(kind, n, budget, threads):
    import torch
    torch.set_num_threads(threads)
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    model = Idefics3ForConditionalGeneration.from_pretrained(mm.MODEL_DIR, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(mm.MODEL_DIR)
    press = None
    if kind in ("kvpress", "kvpress-off"):  # the same libraries resident in both kvpress-venv runs
        import kvpress
        from kvpress import KeyDiffPress
        # kvpress's BasePress.__call__ hooks model.model.language_model.layers (else model.model.layers);
        # Idefics3Model names its decoder text_model: alias it (the same module, registered twice).
        model.model.language_model = model.model.text_model
    with torch.no_grad():  # from_pretrained may leave weights as lazily paged-in file mappings:
        for prm in model.parameters():  # read every one now, so "after load" holds the weights as
            prm.sum()                   # kvlab's does
    rss_load = proc_status_mib("VmRSS")
    reset_peak_rss()
    t0 = time.perf_counter()
    images = [Image.open(p).convert("RGB") for p in mm.frame_paths(n)]
    messages = [{"role": "user", "content": [{"type": "image"} for _ in range(n)]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    inputs = processor(text=prompt, images=[images], do_image_splitting=False, return_tensors="pt")
    seq = int(inputs["input_ids"].shape[1])
    t1 = time.perf_counter()
    ratio = 0.0
    with torch.no_grad():
        if kind == "kvpress":
            # keep exactly min(budget, seq) entries per layer and KV head (ScorerPress keeps
            # int(seq * (1 - ratio)))
            ratio = max(0.0, 1.0 - (budget + 0.5) / seq)
            press = KeyDiffPress(compression_ratio=ratio)
            with press(model):
                out = model(**inputs, use_cache=True, logits_to_keep=1)
        else:
            out = model(**inputs, use_cache=True, logits_to_keep=1)
    t2 = time.perf_counter()
    hwm = proc_status_mib("VmHWM")
    cache = out.past_key_values
    layer0 = cache.layers[0]
    kept = [int(l.keys.shape[2]) for l in cache.layers]
    result = {
        "kind": kind, "frames": n, "seq_len": seq, "rss_load_mib": rss_load, "rss_peak_mib": hwm,
        "rss_end_mib": proc_status_mib("VmRSS"), "process_s": t1 - t0, "forward_s": t2 - t1,
        "feed_s": t2 - t0, "kv_tokens_min": min(kept), "kv_tokens_max": max(kept),
        "kv_end_mib": sum(l.keys.numel() + l.values.numel() for l in cache.layers) * 4 / MiB,
        "pixel_values_mib": inputs["pixel_values"].numel() * 4 / MiB,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "compression_ratio": ratio, "layer0_keys": list(layer0.keys.shape),
    }
    if kind in ("kvpress", "kvpress-off"):
        import kvpress
        result["kvpress"] = getattr(kvpress, "__version__", "?")
        try:
            from importlib.metadata import version
            result["kvpress"] = version("kvpress")
        except Exception:
            pass
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# kvlab runs (a fresh process per configuration)

MEM_ROW = re.compile(r"^(weights|kv|activations|vision|total|rss)\s+~?([0-9.]+) MiB\s+~?([0-9.]+) MiB")
FED = re.compile(r"^fed (\d+) frames .*?(\d+) visual \+ (\d+) text tokens \(context (\d+)\), ~([0-9.]+) s")


def kvlab_script(mode, n, budget, policy):
    setup = []
    if mode != "full":
        setup = [f"budget {budget} tokens", f"policy {policy}", f"prefill mode={mode} block=frame"]
    return "; ".join(setup + [
        f"load {os.path.relpath(mm.MODEL_DIR, ROOT)}", "mem reset", "echo AFTER-LOAD", "mem unit=MiB",
        f"feed frames {os.path.relpath(mm.FRAMES_DIR, ROOT)} max={n} --timing", "echo AFTER-FEED",
        "mem unit=MiB"])


def parse_mem(lines):
    out = {}
    for line in lines:
        m = MEM_ROW.match(line.strip())
        if m:
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


def kvlab_run(binary, mode, n, budget, policy, threads, extra_env=None):
    env = dict(os.environ)
    env.update(extra_env or {})
    cmd = [binary, "--threads", str(threads), "-c", kvlab_script(mode, n, budget, policy)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"kvlab failed ({p.returncode}) for mode={mode} frames={n}:\n{p.stdout}\n{p.stderr}")
    lines = p.stdout.splitlines()
    a, b = lines.index("AFTER-LOAD"), lines.index("AFTER-FEED")
    load, feed = parse_mem(lines[a:b]), parse_mem(lines[b:])
    fed = next(FED.match(l) for l in lines if FED.match(l))
    return {
        "engine": "kvlab", "mode": mode, "frames": n, "context": int(fed.group(4)),
        "visual_tokens": int(fed.group(2)), "text_tokens": int(fed.group(3)), "feed_s": float(fed.group(5)),
        "wall_s": wall, "kv_peak_mib": feed["kv"][1], "kv_end_mib": feed["kv"][0],
        "act_peak_mib": feed["activations"][1], "vision_peak_mib": feed["vision"][1],
        "meter_peak_mib": feed["total"][1], "weights_mib": feed["weights"][0],
        "rss_load_mib": load["rss"][0], "rss_end_mib": feed["rss"][0], "rss_peak_mib": feed["rss"][1],
        "env": extra_env or {},
    }


def torch_run(python, kind, n, budget, threads):
    cmd = [python, os.path.abspath(__file__), "--worker", kind, "--n", str(n), "--budget", str(budget),
           "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not res:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-25:])
        return {"engine": kind, "frames": n, "error": f"exit {p.returncode}: {tail}"}
    r = json.loads(res[-1][len("RESULT "):])
    r.update(engine=kind, wall_s=wall)
    return r



def child_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn, *args, **kw):
    """fn's result with the child CPU seconds (user + sys) it used and the load average before."""
    load = os.getloadavg()[0]
    c0 = child_cpu_s()
    r = fn(*args, **kw)
    r["cpu_s"] = child_cpu_s() - c0
    r["load1"] = load
    return r


def blas_info(binary):
    p = subprocess.run([binary, "-c", "info"], cwd=ROOT, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("blas:"):
            return line.split(":", 1)[1].strip()
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="4,8,16,32,64")
    ap.add_argument("--modes", default="full,post,sequential,capped")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--policy", default="keydiff")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="frames 4,64; modes full,capped")
    ap.add_argument("--family", choices=["idefics3", "internvl"], default="idefics3",
                    help="internvl: a random InternVL3.5-1B-shaped folder (bench/internvl_memory_model.py), "
                         "kvlab only")
    ap.add_argument("--tower-layers", type=int, default=24, help="--family internvl: InternViT layers (real: 24)")
    ap.add_argument("--decoder-layers", type=int, default=28, help="--family internvl: Qwen3 layers (real: 28)")
    ap.add_argument("--full-frames", default=None, help="frame counts that run mode=full (default: all of --frames)")
    ap.add_argument("--model", default=None, help="a model folder to measure instead of the built SmolLM2-shaped one")
    ap.add_argument("--binary", default=None, help="kvlab binary (default: .build-mem, then .build release)")
    ap.add_argument("--torch-python", default=sys.executable, help="python with transformers (default: this one)")
    ap.add_argument("--kvpress-python", default="/tmp/venv-kvpress-mem/bin/python",
                    help="python with kvpress 0.5.4, torch and Pillow")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-kvpress", action="store_true")
    ap.add_argument("--no-diag", action="store_true",
                    help="skip the diagnostic capped run with MALLOC_MMAP_THRESHOLD_=65536")
    ap.add_argument("--no-kvpress-baseline", action="store_true",
                    help="skip the kvpress venv's own transformers without a press (run at the largest frame count)")
    ap.add_argument("--replot", metavar="JSON", help="only rebuild the report and plot from a memory.json")
    ap.add_argument("--out", default=os.path.join(OUTDIR, "memory.md"))
    ap.add_argument("--plot", default=os.path.join(OUTDIR, "memory.png"))
    args = ap.parse_args()
    if args.quick:
        args.frames, args.modes = "4,64", "full,capped"
    args.frames = sorted(int(x) for x in args.frames.split(","))
    args.modes = [m.strip() for m in args.modes.split(",")]
    torch_frames = args.frames
    full_frames = sorted(int(x) for x in args.full_frames.split(",")) if args.full_frames else args.frames
    if args.family == "internvl":
        mm.use_internvl(args)
    if args.model:
        mm.use_model(args)
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        runs = saved["runs"]
        loads = [r.get("load1", 0.0) for r in runs]
        text = rep.report(args, runs, saved["blas"], loads, saved["elapsed_s"])
        with open(args.out, "w") as f:
            f.write(text)
        rep.plot(args, runs, args.plot)
        print(text + f"\nplot: {os.path.relpath(args.plot, ROOT)}")
        return
    binary = args.binary or next((b for b in (os.path.join(ROOT, ".build-mem", "release", "kvlab"),
                                              os.path.join(ROOT, ".build", "release", "kvlab")) if os.path.exists(b)), None)
    if not binary:
        sys.exit("no kvlab binary: swift build -c release --product kvlab (or --binary PATH)")
    kvpress_ok = not args.no_kvpress and os.path.exists(args.kvpress_python)
    if not args.no_kvpress and not kvpress_ok:
        print(f"warning: {args.kvpress_python} not found; skipping kvpress (see --kvpress-python)", file=sys.stderr)
    if not args.model and args.family == "idefics3":
        mm.build_model()
    mm.make_frames(args.frames[-1], mm.FRAMES_DIR)
    blas = blas_info(binary)
    start = time.perf_counter()
    runs, loads = [], []

    def log(r):
        runs.append(r)
        loads.append(r.get("load1", os.getloadavg()[0]))
        name = r["engine"] + (" " + r["mode"] if "mode" in r else "") + (" +env" if r.get("env") else "")
        if "error" in r:
            print(f"[{time.perf_counter() - start:6.0f}s] {name} {r['frames']} frames: ERROR {r['error'][-400:]}",
                  file=sys.stderr)
        else:
            print(f"[{time.perf_counter() - start:6.0f}s] {name:22s} {r['frames']:3d} frames: peak RSS "
                  f"{r['rss_peak_mib']:7.1f} MiB, feed {r['feed_s']:6.2f} s, load avg {r['load1']:.2f}", file=sys.stderr)

    for n in args.frames:
        for m in args.modes:
            if m == "full" and n not in full_frames:
                continue
            log(timed(kvlab_run, binary, m, n, args.budget, args.policy, args.threads))
        if not args.no_diag and "capped" in args.modes and n in (args.frames[0], args.frames[-1]):
            log(timed(kvlab_run, binary, "capped", n, args.budget, args.policy, args.threads,
                      {"MALLOC_MMAP_THRESHOLD_": "65536"}))
        if n in torch_frames:
            if not args.no_torch:
                log(timed(torch_run, args.torch_python, "torch", n, args.budget, args.threads))
            if kvpress_ok:
                log(timed(torch_run, args.kvpress_python, "kvpress", n, args.budget, args.threads))
                if not args.no_kvpress_baseline and n == args.frames[-1]:
                    log(timed(torch_run, args.kvpress_python, "kvpress-off", n, args.budget, args.threads))
    elapsed = time.perf_counter() - start
    text = rep.report(args, runs, blas, loads, elapsed)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"blas": blas, "runs": runs, "elapsed_s": elapsed}, f, indent=1)
    try:
        rep.plot(args, runs, args.plot)
        text += f"\nplot: {os.path.relpath(args.plot, ROOT)}\n"
    except ImportError as e:
        text += f"\nno plot ({e}; pip install matplotlib)\n"
    print(text)


if __name__ == "__main__" and "--worker" in sys.argv:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["torch", "kvpress", "kvpress-off"])
    ap.add_argument("--n", type=int)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    worker(a.worker, a.n, a.budget, a.threads)
    sys.exit(0)


if __name__ == "__main__":
    main()

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
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "vlm", "idefics3", "model")
OUTDIR = os.path.join(ROOT, "bench", "out")
# --model PATH measures another model folder instead (e.g. the embedded weights/kvlab-shapes); the
# environment carries it to the --worker subprocesses.
MODEL_DIR = os.environ.get("KVLAB_MEMORY_MODEL") or os.path.join(OUTDIR, "memory-model")
FRAMES_DIR = os.path.join(OUTDIR, "frames")
FRAME_SIZE = 512
SEED = 20260604

VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
              image_size=FRAME_SIZE, patch_size=32, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
SCALE_FACTOR = 2
# SmolLM2-135M's decoder (HuggingFaceTB/SmolLM2-135M config.json), vocabulary from the fixture.
TEXT = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5,
            max_position_embeddings=8192, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
            attention_bias=False, mlp_bias=False, tie_word_embeddings=False)
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
KV_BYTES_PER_TOKEN = TEXT["num_hidden_layers"] * TEXT["num_key_value_heads"] * TEXT["head_dim"] * 2 * 4
TOKENS_PER_FRAME = 64
MODEL_DESC = ("random Idefics3 (SmolVLM layout), decoder SmolLM2-135M-shaped (30 layers, 3 KV heads x 64), "
              "vision SigLIP-like 512x512 / patch 32, hidden 384, 6 layers, scale 2")
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The model folder and the frames (built with the reference venv's transformers)


def spec():
    with open(os.path.join(FIXTURE, "config.json")) as f:
        fixture = json.load(f)
    import torch
    return {"vision": VISION, "text": TEXT, "scale_factor": SCALE_FACTOR, "seed": SEED,
            "fixture_config": fixture, "torch": torch.__version__}


def build_model(folder=MODEL_DIR):
    want = spec()
    stamp = os.path.join(folder, "bench_spec.json")
    if os.path.exists(stamp) and os.path.exists(os.path.join(folder, "model.safetensors")):
        with open(stamp) as f:
            if json.load(f) == want:
                return
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    print(f"creating {folder} ...", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    fixture = want["fixture_config"]
    with open(os.path.join(FIXTURE, "tokenizer.json")) as f:
        added = {t["content"]: t["id"] for t in json.load(f)["added_tokens"]}
    for token in ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"):
        assert token in added, f"fixture tokenizer has no {token}"
    assert added["<image>"] == fixture["image_token_id"], "image_token_id differs from <image>'s id"
    ftext = fixture["text_config"]
    text = dict(TEXT, model_type="llama", vocab_size=ftext["vocab_size"], bos_token_id=ftext["bos_token_id"],
                eos_token_id=ftext["eos_token_id"], pad_token_id=ftext["pad_token_id"])
    assert text["vocab_size"] >= max(added.values()) + 1
    cfg = Idefics3Config(vision_config=VISION, text_config=text, scale_factor=SCALE_FACTOR,
                         image_token_id=fixture["image_token_id"], tie_word_embeddings=False,
                         pad_token_id=fixture.get("_pad_token_id", fixture.get("pad_token_id")))
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # non-trivial biases and norms (init leaves them at 0 and 1)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith(".weight") and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(FIXTURE, name), folder)
    with open(os.path.join(FIXTURE, "preprocessor_config.json")) as f:
        prep = json.load(f)
    prep["max_image_size"] = {"longest_edge": FRAME_SIZE}
    prep["size"] = {"longest_edge": 4 * FRAME_SIZE}
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(prep, f, indent=2, sort_keys=True)
    tokens = (FRAME_SIZE // VISION["patch_size"]) ** 2 // SCALE_FACTOR ** 2
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"image_processor": prep, "image_seq_len": tokens, "processor_class": "Idefics3Processor"},
                  f, indent=2, sort_keys=True)
    with open(stamp, "w") as f:
        json.dump(want, f, indent=2, sort_keys=True)


def make_frames(count, folder=FRAMES_DIR):
    """frame_000.png ...: smooth value noise (fixed seed) drifting right, plus a disc moving on a
    circle; deterministic (regenerated only when missing)."""
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    names = [os.path.join(folder, f"frame_{i:03d}.png") for i in range(count)]
    if all(os.path.exists(n) for n in names):
        return
    rng = np.random.default_rng(SEED)
    coarse = rng.uniform(0, 255, (3, 20, 40))  # 3 channels of coarse noise, upsampled smoothly
    s = FRAME_SIZE
    y, x = np.mgrid[0:s, 0:s].astype(np.float64)
    for i, name in enumerate(names):
        if os.path.exists(name):
            continue
        planes = []
        for c in range(3):
            gx = (x + 6.0 * i) / s * 19.0  # drift right 6 px a frame
            gy = y / s * 19.0
            x0, y0 = np.floor(gx).astype(int) % 40, np.floor(gy).astype(int) % 20
            fx, fy = gx - np.floor(gx), gy - np.floor(gy)
            fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
            n = coarse[c]
            a = n[y0, x0] * (1 - fx) + n[y0, (x0 + 1) % 40] * fx
            b = n[(y0 + 1) % 20, x0] * (1 - fx) + n[(y0 + 1) % 20, (x0 + 1) % 40] * fx
            planes.append(a * (1 - fy) + b * fy)
        img = np.stack(planes, -1)
        cx = s / 2 + 0.3 * s * np.cos(i * 0.35)
        cy = s / 2 + 0.3 * s * np.sin(i * 0.35)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (0.08 * s) ** 2
        img[disc] = [230, 40, 40]
        img += np.random.default_rng(SEED + i).normal(0, 4, img.shape)
        Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(name)


def frame_paths(n):
    return [os.path.join(FRAMES_DIR, f"frame_{i:03d}.png") for i in range(n)]


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

    model = Idefics3ForConditionalGeneration.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(MODEL_DIR)
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
    images = [Image.open(p).convert("RGB") for p in frame_paths(n)]
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
        f"load {os.path.relpath(MODEL_DIR, ROOT)}", "mem reset", "echo AFTER-LOAD", "mem unit=MiB",
        f"feed frames {os.path.relpath(FRAMES_DIR, ROOT)} max={n} --timing", "echo AFTER-FEED",
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


def slope(points):
    """Least-squares MiB per frame."""
    if len(points) < 2:
        return float("nan")
    xs, ys = zip(*points)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def fmt(v, digits=1):
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def report(args, runs, blas, loads, elapsed):
    kv = {(r["mode"], r["frames"]): r for r in runs if r["engine"] == "kvlab" and not r["env"]}
    diag = {r["frames"]: r for r in runs if r["engine"] == "kvlab" and r["env"]}
    tr = {(r["engine"], r["frames"]): r for r in runs
          if r["engine"] in ("torch", "kvpress", "kvpress-off") and "error" not in r}
    errs = [r for r in runs if "error" in r]
    frames, modes = args.frames, args.modes
    lo, hi = frames[0], frames[-1]
    L = []
    L.append(f"# Peak memory vs frames: kvlab prefill modes vs transformers (+kvpress)\n")
    L.append(f"Model: {MODEL_DESC}: {KV_BYTES_PER_TOKEN} B of K/V per token, "
             f"{TOKENS_PER_FRAME} tokens per frame. Budget {args.budget} tokens "
             f"({args.budget * KV_BYTES_PER_TOKEN / MiB:.2f} MiB), policy {args.policy}, block=frame; "
             f"mode full has no budget. {args.threads} threads. kvlab BLAS: {blas}. "
             f"1-min load average before each run: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
             f"max {max(loads):.2f} ({os.cpu_count()} CPUs). Whole benchmark {elapsed / 60:.1f} min.\n")
    L.append("kvlab columns: the meter's high-water marks during `feed frames` (after `mem reset` following "
             "`load`), the process's VmRSS after load and its VmHWM during the feed, the feed's seconds "
             "(kvlab's own ~s) and the process's CPU seconds (user+sys, load included). "
             "Transformers columns: VmRSS after from_pretrained, VmHWM during processor + one forward "
             "(clear_refs reset after load), the K/V left in the cache after the forward.\n")
    L.append("| frames | engine / mode | context | KV peak MiB | act. peak MiB | vision peak MiB | "
             "RSS after load MiB | peak RSS MiB | peak - load MiB | prefill s | CPU s |")
    L.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in frames:
        for m in modes:
            r = kv.get((m, n))
            if r:
                L.append(f"| {n} | kvlab {m} | {r['context']} | {fmt(r['kv_peak_mib'])} | {fmt(r['act_peak_mib'])} | "
                         f"{fmt(r['vision_peak_mib'])} | {fmt(r['rss_load_mib'])} | **{fmt(r['rss_peak_mib'])}** | "
                         f"{fmt(r['rss_peak_mib'] - r['rss_load_mib'])} | {fmt(r['feed_s'], 2)} | {fmt(r['cpu_s'], 1)} |")
        r = diag.get(n)
        if r:
            L.append(f"| {n} | kvlab capped, MALLOC_MMAP_THRESHOLD_=65536 (diagnostic) | {r['context']} | "
                     f"{fmt(r['kv_peak_mib'])} | {fmt(r['act_peak_mib'])} | {fmt(r['vision_peak_mib'])} | "
                     f"{fmt(r['rss_load_mib'])} | **{fmt(r['rss_peak_mib'])}** | "
                     f"{fmt(r['rss_peak_mib'] - r['rss_load_mib'])} | {fmt(r['feed_s'], 2)} | {fmt(r['cpu_s'], 1)} |")
        for kind, label in (("torch", "transformers full prefill"), ("kvpress", "transformers + kvpress KeyDiffPress"),
                            ("kvpress-off", "transformers full prefill, kvpress venv, no press")):
            r = tr.get((kind, n))
            if r:
                L.append(f"| {n} | {label} ({r['transformers']}) | {r['seq_len']} | {fmt(r['kv_end_mib'])} (after) | | "
                         f"| {fmt(r['rss_load_mib'])} | **{fmt(r['rss_peak_mib'])}** | "
                         f"{fmt(r['rss_peak_mib'] - r['rss_load_mib'])} | {fmt(r['feed_s'], 2)} | {fmt(r['cpu_s'], 1)} |")
    L.append("")
    L.append("## Ratios\n")
    L.append(f"| mode | peak RSS {lo} -> {hi} frames MiB | ratio RSS({hi})/RSS({lo}) | peak RSS slope MiB/frame | "
             f"KV peak {lo} -> {hi} MiB | (peak - load) {lo} -> {hi} MiB |")
    L.append("| --- | --- | ---: | ---: | --- | --- |")
    verdict = {}
    series = [(f"kvlab {m}", {n: kv[(m, n)] for n in frames if (m, n) in kv}) for m in modes]
    series.append(("kvlab capped + MALLOC_MMAP_THRESHOLD_=65536", diag))
    series += [(f"transformers {'full' if k == 'torch' else '+ kvpress'}", {n: tr[(k, n)] for n in frames if (k, n) in tr})
               for k in ("torch", "kvpress")]
    for name, d in series:
        if lo in d and hi in d:
            a, b = d[lo], d[hi]
            ratio = b["rss_peak_mib"] / a["rss_peak_mib"]
            verdict[name] = ratio
            kvs = (f"{fmt(a['kv_peak_mib'])} -> {fmt(b['kv_peak_mib'])}" if "kv_peak_mib" in a
                   else f"{fmt(a['kv_end_mib'])} -> {fmt(b['kv_end_mib'])} (after prefill)")
            L.append(f"| {name} | {fmt(a['rss_peak_mib'])} -> {fmt(b['rss_peak_mib'])} | {ratio:.3f} | "
                     f"{fmt(slope([(n, d[n]['rss_peak_mib']) for n in sorted(d)]), 2)} | {kvs} | "
                     f"{fmt(a['rss_peak_mib'] - a['rss_load_mib'])} -> {fmt(b['rss_peak_mib'] - b['rss_load_mib'])} |")
    L.append("")
    if "kvlab capped" in verdict:
        ok = verdict["kvlab capped"] <= 1.05
        L.append(f"- capped: peak RSS({hi}) / peak RSS({lo}) = **{verdict['kvlab capped']:.3f}** "
                 f"(target <= 1.05: {'met' if ok else 'NOT met'}).")
    diag_name = "kvlab capped + MALLOC_MMAP_THRESHOLD_=65536"
    if diag_name in verdict and "kvlab capped" in verdict:
        c = [kv[("capped", n)] for n in frames if ("capped", n) in kv]
        flat = all(abs(r["kv_peak_mib"] - c[0]["kv_peak_mib"]) < 0.01 and abs(r["act_peak_mib"] - c[0]["act_peak_mib"]) < 0.01
                   and abs(r["vision_peak_mib"] - c[0]["vision_peak_mib"]) < 0.01 for r in c)
        L.append(f"- capped with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_=65536, which also turns "
                 f"off its dynamic adjustment): RSS({hi}) / RSS({lo}) = **{verdict[diag_name]:.3f}**. "
                 + ("The meter's KV, activation and vision peaks are the same at every frame count, so " if flat else "")
                 + "the default run's extra growth is freed heap memory that glibc keeps resident (its mmap threshold "
                 "rises to the largest block freed, so later large transient buffers come from the brk heap and "
                 "fragment it), not data that kvlab holds.")
    for m in ("sequential", "capped"):
        if (m, hi) in kv:
            r = kv[(m, hi)]
            L.append(f"- {m}: KV high-water mark {r['kv_peak_mib']:.2f} MiB = "
                     f"{r['kv_peak_mib'] * MiB / KV_BYTES_PER_TOKEN:.0f} tokens per layer and KV head "
                     f"(budget {args.budget}; a block=frame block is {TOKENS_PER_FRAME} visual tokens and the frame's text tokens).")
    if "kvlab full" in verdict:
        d = {n: kv[("full", n)] for n in frames if ("full", n) in kv}
        L.append(f"- full: peak RSS grows {verdict['kvlab full']:.2f}x from {lo} to {hi} frames, "
                 f"{slope([(n, d[n]['rss_peak_mib']) for n in sorted(d)]):.2f} MiB/frame "
                 f"(K/V alone: {TOKENS_PER_FRAME} tokens x {KV_BYTES_PER_TOKEN} B = "
                 f"{TOKENS_PER_FRAME * KV_BYTES_PER_TOKEN / MiB:.2f} MiB/frame); "
                 f"KV peak slope {slope([(n, d[n]['kv_peak_mib']) for n in sorted(d)]):.2f} MiB/frame.")
    for n in frames:
        if ("capped", n) in kv and ("full", n) in kv:
            c, f = kv[("capped", n)], kv[("full", n)]
            if n == hi:
                L.append(f"- prefill time capped / full at {n} frames: **{c['feed_s'] / f['feed_s']:.2f}x** wall "
                         f"({c['feed_s']:.1f} s / {f['feed_s']:.1f} s), {c['cpu_s'] / f['cpu_s']:.2f}x CPU seconds "
                         f"(target <= 1.2; single runs on a shared machine, see the load average).")
    others = ", ".join(f"{n}: {kv[('capped', n)]['feed_s'] / kv[('full', n)]['feed_s']:.2f}x"
                       for n in frames if ("capped", n) in kv and ("full", n) in kv)
    if others:
        L.append(f"- capped / full prefill wall-time ratio per frame count: {others}.")
    for kind, label in (("kvpress", "transformers + kvpress (KeyDiffPress after prefill)"),
                        ("torch", "transformers full prefill")):
        cells = []
        for n in frames:
            if (kind, n) in tr and ("capped", n) in kv:
                t, c = tr[(kind, n)], kv[("capped", n)]
                cells.append(f"{n}: {t['rss_peak_mib'] / c['rss_peak_mib']:.2f}x "
                             f"(peak - load: {(t['rss_peak_mib'] - t['rss_load_mib']) / max(1e-9, c['rss_peak_mib'] - c['rss_load_mib']):.1f}x)")
        if cells:
            L.append(f"- {label} peak RSS / kvlab capped peak RSS, per frame count: " + "; ".join(cells) + ".")
    off = [r for (k, n), r in tr.items() if k == "kvpress-off"]
    for r in off:
        on = tr.get(("kvpress", r["frames"]))
        if on:
            don, doff = on["rss_peak_mib"] - on["rss_load_mib"], r["rss_peak_mib"] - r["rss_load_mib"]
            L.append(f"- same venv (transformers {r['transformers']}, kvpress imported in both), {r['frames']} frames: "
                     f"peak RSS with the press {on['rss_peak_mib']:.1f} MiB vs without {r['rss_peak_mib']:.1f} MiB "
                     f"({on['rss_peak_mib'] / r['rss_peak_mib']:.3f}x; peak - load {don:.1f} vs {doff:.1f} MiB). "
                     f"The press prunes each layer's cache right after that layer has run over the whole input: "
                     f"at best it saves the other layers' full-length K/V "
                     f"({(r['kv_end_mib'] - on['kv_end_mib']):.1f} MiB here), never the full-length activations "
                     f"or the pixels.")
    kp = [r for (k, n), r in tr.items() if k == "kvpress"]
    if kp:
        r = kp[0]
        L.append(f"- kvpress {r.get('kvpress', '?')} with transformers {r['transformers']}, torch {r['torch']} "
                 f"({r['cpu_capability']}); the cache after prefill held "
                 + ", ".join(f"{x['frames']} frames: {x['kv_tokens_min']}-{x['kv_tokens_max']} tokens/layer"
                             for x in sorted(kp, key=lambda x: x["frames"])) + ".")
    for r in errs:
        L.append(f"- ERROR {r['engine']} at {r['frames']} frames: {r['error'].splitlines()[-1] if r['error'] else ''}")
    return "\n".join(L) + "\n"


def plot(args, runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"full": "o-", "post": "s-", "sequential": "^-", "capped": "D-"}
    for m in args.modes:
        pts = sorted((r["frames"], r) for r in runs if r["engine"] == "kvlab" and r["mode"] == m and not r["env"])
        if pts:
            ax1.plot([p[0] for p in pts], [p[1]["rss_peak_mib"] for p in pts], styles.get(m, "o-"), label=f"kvlab {m}")
            ax2.plot([p[0] for p in pts], [p[1]["kv_peak_mib"] for p in pts], styles.get(m, "o-"), label=f"kvlab {m}")
    pts = sorted((r["frames"], r) for r in runs if r["engine"] == "kvlab" and r["env"])
    if pts:
        ax1.plot([p[0] for p in pts], [p[1]["rss_peak_mib"] for p in pts], "D:", color="gray",
                 label="kvlab capped, MALLOC_MMAP_THRESHOLD_=65536")
    for kind, label, st in (("torch", "transformers full", "x--"), ("kvpress", "transformers + kvpress", "+--"),
                            ("kvpress-off", "transformers (kvpress venv), no press", "*")):
        pts = sorted((r["frames"], r) for r in runs if r["engine"] == kind and "error" not in r)
        if pts:
            ax1.plot([p[0] for p in pts], [p[1]["rss_peak_mib"] for p in pts], st, label=label)
    for ax in (ax1, ax2):
        ax.set_xticks(args.frames)
        ax.set_xticklabels([str(n) for n in args.frames])
        ax.set_xlabel(f"frames ({TOKENS_PER_FRAME} tokens each)")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("process peak RSS during prefill (MiB)")
    ax1.set_title("peak RSS (VmHWM)")
    ax2.set_ylabel("KV high-water mark (MiB)")
    ax2.set_title(f"KV peak, budget {args.budget} tokens")
    ax2.axhline(args.budget * KV_BYTES_PER_TOKEN / MiB, color="k", lw=0.8, ls=":")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def use_internvl(args):
    """--family internvl: the random InternVL3.5-1B-shaped folder (written once, numpy only) and 448-px
    frames (one tile each, 256 visual tokens); transformers and kvpress are not run for it."""
    global MODEL_DIR, FRAMES_DIR, FRAME_SIZE, MODEL_DESC, KV_BYTES_PER_TOKEN, TOKENS_PER_FRAME
    import internvl_memory_model as internvl
    MODEL_DIR = os.path.join(OUTDIR, f"memory-internvl-t{args.tower_layers}d{args.decoder_layers}")
    cfg = internvl.write(MODEL_DIR, args.tower_layers, args.decoder_layers)
    FRAME_SIZE, FRAMES_DIR = internvl.TILE, os.path.join(OUTDIR, f"frames{internvl.TILE}")
    t, v = cfg["text_config"], cfg["vision_config"]
    KV_BYTES_PER_TOKEN = t["num_hidden_layers"] * t["num_key_value_heads"] * t["head_dim"] * 2 * 4
    TOKENS_PER_FRAME = internvl.TOKENS_PER_TILE
    counts = internvl.parameter_count(cfg)
    MODEL_DESC = (f"random InternVL (InternVL3.5-1B shapes, BF16 file): InternViT hidden {v['hidden_size']}, "
                  f"{v['num_hidden_layers']} of 24 layers, {v['num_attention_heads']} heads, MLP "
                  f"{v['intermediate_size']}, {FRAME_SIZE}-px tiles of {v['patch_size'][0]}-px patches, "
                  f"pixel shuffle 0.5 -> {TOKENS_PER_FRAME} tokens a frame; Qwen3 decoder hidden {t['hidden_size']}, "
                  f"{t['num_hidden_layers']} of 28 layers, {t['num_attention_heads']} heads, "
                  f"{t['num_key_value_heads']} KV heads x {t['head_dim']}, MLP {t['intermediate_size']}, vocab "
                  f"{t['vocab_size']} (tied); parameters: tower {counts['tower'] / 1e6:.1f}M, projector "
                  f"{counts['projector'] / 1e6:.1f}M, decoder {counts['decoder'] / 1e6:.1f}M")
    args.no_torch = args.no_kvpress = True


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
        use_internvl(args)
    if args.model:
        global MODEL_DIR, MODEL_DESC, KV_BYTES_PER_TOKEN, TOKENS_PER_FRAME
        MODEL_DIR = os.environ["KVLAB_MEMORY_MODEL"] = os.path.abspath(args.model)
        with open(os.path.join(MODEL_DIR, "config.json")) as f:
            cfg = json.load(f)
        t, v = cfg["text_config"], cfg["vision_config"]
        head_dim = t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
        KV_BYTES_PER_TOKEN = t["num_hidden_layers"] * t["num_key_value_heads"] * head_dim * 2 * 4
        TOKENS_PER_FRAME = (v["image_size"] // v["patch_size"] // cfg.get("scale_factor", 2)) ** 2
        MODEL_DESC = (f"{os.path.relpath(MODEL_DIR, ROOT)} ({t['num_hidden_layers']} decoder layers, "
                      f"{t['num_key_value_heads']} KV heads x {head_dim})")
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        runs = saved["runs"]
        loads = [r.get("load1", 0.0) for r in runs]
        text = report(args, runs, saved["blas"], loads, saved["elapsed_s"])
        with open(args.out, "w") as f:
            f.write(text)
        plot(args, runs, args.plot)
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
        build_model()
    make_frames(args.frames[-1], FRAMES_DIR)
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
    text = report(args, runs, blas, loads, elapsed)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"blas": blas, "runs": runs, "elapsed_s": elapsed}, f, indent=1)
    try:
        plot(args, runs, args.plot)
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

#!/usr/bin/env python3
"""Vision-encoder speed of kvlab vs Hugging Face transformers (fp32), side by side.

Both run the same randomly initialised Idefics3 model whose vision tower is SigLIP-base/patch16-512
sized (SmolVLM-256M's: hidden 768, MLP 3072, 12 layers, 12 heads, 512x512 tiles of 16x16 patches =
1024 patches) with scale_factor 4 (1024 patches -> 64 tokens per tile) and a tiny text decoder
(not timed). The folder is created once in bench/out/vision-model/ (git-ignored; reused while its
spec is unchanged) with the tokenizer of Tests/KVEngineTests/Fixtures/vlm/idefics3/model, so kvlab
loads it like any SmolVLM folder.

A measurement encodes --tiles tiles of fixed pseudo-random pixels through the tower and the
pixel-shuffle connector: kvlab one tile per call (as it encodes a split image), transformers all
tiles in one get_image_features call (as it does for a split image). kvlab runs as one
`kvlab-bench --vision-serve FOLDER` process (model loaded once) and the two engines alternate
measurement by measurement so that load on this shared machine hits both alike. Reports min and
median seconds per tile, tiles/s, tokens/s (after the connector) and patches/s (through the tower),
the ratio kvlab/transformers, OpenBLAS's kernel (kvlab) next to torch's CPU capability, and the
1-minute load average seen during the run (on 2 cores shared with builds, > 2 means both engines
were competing for the CPU and the absolute numbers are not meaningful, only the ratio).

Before timing, one identical tile goes through both and the tower's output and the connector's are
compared (max |difference|, and relative to the largest value). With --stages, a second table
times each stage of one tile's tower in both (kvlab: the kernels the tower calls, on these shapes;
transformers: the model's own modules of layer 0, times the layer count).

With --bf16 both run bench/out/vision-model-bf16, the same weights rounded to bfloat16 (as
published checkpoints store them): kvlab keeps them 16-bit (its products run kvlab's default
prefill kernel, `auto`: the AVX512-BF16 kernel where the CPU has it, else sgemm on dequantized
tiles; --prefill-kernel sgemm is the float32 reference), transformers upcasts to fp32.

  .venv-ref/bin/python bench/vision_vs_transformers.py [--tiles 4] [--repeats 5] [--stages]
      [--bf16] [--prefill-kernel auto|sgemm|bf16] [--binary .build/release/kvlab-bench]
      [--out bench/out/vision.md]
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import torch
from idefics3_folder import FIXTURE, build_idefics3_folder
from kvlab_serve import Kvlab
from transformers import Idefics3ForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              image_size=512, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
SCALE_FACTOR = 4
SEED = 20260601


def spec():
    """What the cached folder must have been built from (with the fixture's config.json, whose
    text decoder and token ids the folder takes over)."""
    with open(os.path.join(FIXTURE, "config.json")) as f:
        fixture = json.load(f)
    return {"vision_config": VISION, "scale_factor": SCALE_FACTOR, "seed": SEED,
            "fixture_config": fixture, "torch": torch.__version__}


def build_model(folder):
    """The benchmark's Idefics3 folder, created once (fp32 safetensors, ~350 MB), with the fixture's
    text decoder and SmolVLM-256M's processor sizes: 512x512 tiles, images resized to a longest
    edge of 4 tiles."""
    want = spec()
    text = dict(want["fixture_config"]["text_config"])
    build_idefics3_folder(folder, want, VISION, text, SCALE_FACTOR, SEED,
                          tile_edge=VISION["image_size"], image_edge=4 * VISION["image_size"])


def build_bf16(source, folder):
    """The float32 folder with every float tensor rounded to bfloat16 (what a published checkpoint
    stores), created once; transformers loads it as float32, so both engines use the same values."""
    want = dict(spec(), dtype="bfloat16")
    stamp = os.path.join(folder, "bench_spec.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                return
    from safetensors.torch import load_file, save_file
    print(f"creating {folder} ...", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name in os.listdir(source):
        if name.endswith(".safetensors"):
            tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                       for k, v in load_file(os.path.join(source, name)).items()}
            save_file(tensors, os.path.join(folder, name), metadata={"format": "pt"})
        elif name != "bench_spec.json":
            shutil.copy(os.path.join(source, name), folder)
    with open(stamp, "w") as f:
        json.dump(want, f, indent=2, sort_keys=True)


def pixels(tiles, size):
    """[tiles][3][size][size]: the same formula as bench/Sources/kvlab-bench/VisionBench.swift."""
    count = 3 * size * size
    i = np.arange(tiles * count, dtype=np.int64)
    v = ((i * 2654435761) % 2001 - 1000).astype(np.float32) / np.float32(1000)
    return torch.from_numpy(v.reshape(tiles, 3, size, size))


def torch_encode(model, pv):
    """All tiles in one call, as transformers encodes a split image: [1][tiles][3][S][S]."""
    t = time.perf_counter()
    with torch.no_grad():
        out = model.model.get_image_features(pv[None])
    return time.perf_counter() - t, out


def check(kv, model, size, work):
    """One identical tile through both: (name, shape, max |Δ|, max |reference|) for the tower's
    output and the connector's."""
    tile = pixels(1, size)[0]
    src = os.path.join(work, "check.pixels.npy")
    np.save(src, tile.numpy())
    kv.ask(f"check {src} {os.path.join(work, 'check.kvlab')}")
    _, out = torch_encode(model, tile[None])
    rows = []
    for name, ref in (("vision", out.last_hidden_state[0]), ("features", out.pooler_output[0])):
        got = np.load(os.path.join(work, f"check.kvlab.{name}.npy"))
        ref = ref.numpy()
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        rows.append((name, got.shape, float(np.abs(got - ref).max()), float(np.abs(ref).max())))
    return rows


def best_of(repeats, body):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - t)
    return best


def torch_stages(model, size, repeats):
    """Seconds per tile of each stage of the tower, best of `repeats`: layer 0's modules run on
    one tile's activations, times the layer count (all layers have the same shapes)."""
    vm = model.model.vision_model
    layer = vm.encoder.layers[0]
    att = layer.self_attn
    n_layers = len(vm.encoder.layers)
    heads, d = att.num_heads, att.embed_dim
    pv = pixels(1, size)
    torch.manual_seed(0)
    x = torch.randn(1, (size // vm.config.patch_size) ** 2, d)
    n = x.shape[1]
    h = layer.mlp.fc1(x).detach()
    q = torch.randn(1, heads, n, d // heads)
    out = {}
    with torch.no_grad():
        out["patch embedding (conv)"] = best_of(repeats, lambda: vm.embeddings.patch_embedding(pv))
        out["layernorm (2 per layer + post)"] = (2 * n_layers + 1) * best_of(repeats, lambda: layer.layer_norm1(x))
        out["qkv linear"] = n_layers * best_of(
            repeats, lambda: (att.q_proj(x), att.k_proj(x), att.v_proj(x)))
        out["attention"] = n_layers * best_of(
            repeats, lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, scale=att.scale))
        out["out linear"] = n_layers * best_of(repeats, lambda: att.out_proj(x))
        out["fc1 linear"] = n_layers * best_of(repeats, lambda: layer.mlp.fc1(x))
        out["gelu_tanh"] = n_layers * best_of(repeats, lambda: layer.mlp.activation_fn(h))
        out["fc2 linear"] = n_layers * best_of(repeats, lambda: layer.mlp.fc2(h))
        xs = torch.randn(1, n, d)
        out["connector shuffle+linear"] = best_of(repeats, lambda: model.model.connector(xs))
        out["whole tower (1 tile)"] = best_of(repeats, lambda: vm(pixel_values=pv))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=4, help="tiles per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/kvlab-bench"))
    ap.add_argument("--model", default=None, help="default bench/out/vision-model (-bf16 with --bf16)")
    ap.add_argument("--bf16", action="store_true",
                    help="weights stored as bfloat16 (kvlab keeps them so; transformers upcasts to fp32)")
    ap.add_argument("--prefill-kernel", default="auto",
                    help="kvlab's product kernel for 16-bit weights: auto (kvlab's default: bf16 "
                         "where the CPU has avx512_bf16, else sgemm), sgemm (the float32 reference), bf16")
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa, eager)")
    ap.add_argument("--blas-core", default=None, help="OPENBLAS_CORETYPE for kvlab (default: as detected)")
    ap.add_argument("--stages", action="store_true", help="also time each stage of the tower in both")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/out/vision.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    f32_folder = os.path.join(ROOT, "bench/out/vision-model")
    if args.model is None:
        args.model = f32_folder + ("-bf16" if args.bf16 else "")
    if args.bf16:
        build_model(f32_folder)
        build_bf16(f32_folder, args.model)
    else:
        build_model(args.model)
    model = Idefics3ForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn).eval()
    size = model.config.vision_config.image_size
    env = dict(os.environ)
    if args.blas_core:
        env["OPENBLAS_CORETYPE"] = args.blas_core
    kv = Kvlab(args.binary, ["--vision-serve", args.model, "--prefill-kernel", args.prefill_kernel],
               args.threads, env, ROOT)
    core = kv.ready["blas_core"]
    patches = kv.ready["patches_per_tile"]
    tokens = kv.ready["tokens_per_tile"]
    work = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(work, exist_ok=True)
    checks = check(kv, model, size, work)  # also a first warm-up of both
    pv = pixels(args.tiles, size)
    # warm-up both
    torch_encode(model, pv)
    kv.ask(f"encode {args.tiles}")
    results = {"kvlab": [], "transformers": []}  # seconds per tile
    loads = []
    for r in range(args.repeats):
        # kvlab first on even repeats, transformers first on odd ones
        for engine in (["kvlab", "transformers"] if r % 2 == 0 else ["transformers", "kvlab"]):
            loads.append(os.getloadavg()[0])
            if engine == "kvlab":
                row = kv.ask(f"encode {args.tiles}")
                assert row["tokens"] == args.tiles * tokens
                results["kvlab"].append(row["seconds"] / args.tiles)
            else:
                secs, out = torch_encode(model, pv)
                assert out.pooler_output[0].shape[0] == args.tiles * tokens
                results["transformers"].append(secs / args.tiles)
        print(f"repeat {r + 1}/{args.repeats} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    stages = None
    if args.stages:
        # alternating rounds too, best of 3 per stage
        kv_best, torch_best, extra = {}, {}, {}
        for r in range(3):
            loads.append(os.getloadavg()[0])
            reply = kv.ask("stages 1")
            for row in reply["stages"]:
                old = kv_best.get(row["stage"])
                if old is None or row["seconds_per_tile"] < old["seconds_per_tile"]:
                    kv_best[row["stage"]] = row
            extra = {k: v for k, v in reply.items() if k.endswith("_diff")}
            for k, v in torch_stages(model, size, 1).items():
                torch_best[k] = min(v, torch_best.get(k, v))
        stages = (list(kv_best.values()), torch_best, extra)
    kv.close()

    torch_blas = "mkldnn" if torch.backends.mkldnn.is_available() else "native"
    capability = torch.backends.cpu.get_cpu_capability()
    vc = model.config.vision_config
    lines = [f"Idefics3 vision encoder, SigLIP-base/patch16-{size} sized (hidden {vc.hidden_size}, MLP "
             f"{vc.intermediate_size}, {vc.num_hidden_layers} layers, {vc.num_attention_heads} heads, "
             f"{patches} patches per tile) + pixel-shuffle connector (scale {model.config.scale_factor}: "
             f"{tokens} tokens per tile), random weights "
             f"{'stored as bf16 (kvlab keeps them 16-bit, prefill kernel ' + kv.ready['prefill_kernel'] + '; transformers upcasts)' if args.bf16 else 'fp32'}"
             f", fp32 activations, {args.threads} threads, {args.tiles} tiles "
             f"per measurement, {args.repeats} repeats. kvlab: one tile per encode call, OpenBLAS core "
             f"**{core}**; torch {torch.__version__} ({torch_blas}, CPU capability {capability}): all tiles "
             f"in one get_image_features call, attn_implementation {args.attn}. "
             f"1-min load average during the run: min {min(loads):.1f}, "
             f"median {statistics.median(loads):.1f}, max {max(loads):.1f} ({os.cpu_count()} CPUs).", "",
             "Seconds per tile as min / median; rates from the median (tiles/s is images/s for "
             "unsplit images). The ratio is a speed ratio, kvlab / transformers: > 1 means kvlab is faster.",
             "",
             "| engine | kernel | s/tile min / median | tiles/s | tokens/s | patches/s | speed ratio (median) "
             "| speed ratio (min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    a, b = results["kvlab"], results["transformers"]
    for engine, v, kernel in (("kvlab", a, f"OpenBLAS {core}"), ("transformers", b, f"torch {capability}")):
        med = statistics.median(v)
        ratio = (statistics.median(b) / med, min(b) / min(v)) if engine == "kvlab" else (1.0, 1.0)
        lines.append(f"| {engine} | {kernel} | {min(v):.3f} / {med:.3f} | {1 / med:.2f} | "
                     f"{tokens / med:.0f} | {patches / med:.0f} | {ratio[0]:.2f}x | {ratio[1]:.2f}x |")
    lines += ["", "Numerical check, one identical tile through both (max |kvlab - transformers|, and "
                  "relative to the largest |value| of transformers' output):", "",
              "| output | shape | max abs diff | max abs value | relative |", "| --- | --- | --- | --- | --- |"]
    for name, shape, diff, scale in checks:
        label = "tower (post-LayerNorm)" if name == "vision" else "connector features"
        lines.append(f"| {label} | {shape[0]}x{shape[1]} | {diff:.2e} | {scale:.2f} | {diff / scale:.2e} |")
    if stages:
        kv_stages, torch_st, extra = stages
        whole = torch_st["whole tower (1 tile)"]
        lines += ["", "Per-stage seconds per tile (best of 3 alternating rounds; kvlab: the kernels its tower "
                      "calls, in its order, on these shapes with random weights; transformers: layer 0's "
                      "modules on one tile times the layer count). Time ratio: > 1 means kvlab's stage is "
                      "slower.", "",
                  "| stage | kvlab s/tile | share | kvlab GFLOP/s | transformers s/tile | time ratio kvlab / transformers |",
                  "| --- | --- | --- | --- | --- | --- |"]
        names = {"patch linear": "patch embedding (conv)"}
        total = sum(r["seconds_per_tile"] for r in kv_stages if not r["what_if"])
        for row in kv_stages:
            name = row["stage"]
            t = row["seconds_per_tile"]
            peer = torch_st.get(names.get(name, name))
            gf = f"{row['gflops']:.1f}" if "gflops" in row else ""
            share = "" if row["what_if"] else f"{100 * t / total:.0f}%"
            lines.append(f"| {name} | {t:.4f} | {share} | {gf} | "
                         + (f"{peer:.4f} | {t / peer:.2f}x |" if peer else " | |"))
        lines.append(f"| sum of stages (what-ifs left out) | {total:.4f} | 100% | | {whole:.4f} "
                     f"(whole tower, 1 tile, measured) | {total / whole:.2f}x |")
        lines += ["", "What-if rows are prototypes run in kvlab-bench only (not what kvlab's tower runs). "
                      + ", ".join(f"{k}: {v:.2e}" for k, v in extra.items()) + "."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

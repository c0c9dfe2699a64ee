#!/usr/bin/env python3
"""Soak: does anything kvlab holds grow with the frames fed or the commands run?

Three measurements, each a fresh `kvlab -c` (or stdin) process, peak RSS (VmHWM, from
getrusage of the child) compared between a short and a long run:

  * frames folder: `budget 64 tokens; prefill mode=capped; load M; feed frames DIR max=N`,
    N = 1,000 and 10,000 (the folder: copies of small PNGs under distinct names, written once in
    bench/out/soak-frames/);
  * synthetic: `... feed synthetic needle-video frames=1000 seed=K` once, then 10 times (a clip
    is at most 4,096 frames), K = 1, 2, ...;
  * a recorded session: `record start s.kvl` then C commands on stdin (tokenize, feed text,
    cache, mem, echo in turn), C = 100 and 1,000.

Target: the long run's VmHWM within 5% of the short run's. Prints one line per run and a table.

    python3 bench/soak.py                   # everything (long: 10,000 frames through the model)
    python3 bench/soak.py --frames 200 2000 # smaller counts
    python3 bench/soak.py --only session
    python3 bench/soak.py --binary .build/before/kvlab   # another build, same runs (kept under
                                                         # .build/ so that `load` finds weights/)
    python3 bench/soak.py --model Tests/KVEngineTests/Fixtures/vlm/idefics3/model   # tiny model
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KVLAB = os.path.join(ROOT, ".build", "release", "kvlab")
OUT = os.path.join(ROOT, "bench", "out")
FIXTURE_PNGS = [
    os.path.join(ROOT, "Tests", "KVModelsTests", "Fixtures", "images", n)
    for n in ("rgb_61x45.png", "gray_33x47.png", "rgba16_21x15.png")
]
SETUP = "budget 64 tokens; prefill mode=capped; load"
# The embedded model (weights/kvlab-shapes) with room for 10,000 frames' positions (its config
# says 2,048; RoPE itself has no limit): a copy with max_position_embeddings raised.
MODEL = os.path.join(OUT, "soak-model")
MODEL_SOURCE = os.path.join(ROOT, "weights", "kvlab-shapes")


def soak_model():
    import json
    if not os.path.isdir(MODEL):
        shutil.copytree(MODEL_SOURCE, MODEL)
        path = os.path.join(MODEL, "config.json")
        with open(path) as f:
            config = json.load(f)
        config["text_config"]["max_position_embeddings"] = 1 << 21
        with open(path, "w") as f:
            json.dump(config, f)
    return MODEL


def run(args, stdin=None):
    """Runs kvlab; returns (seconds, this child's peak RSS in KiB, status, last stderr line)."""
    import tempfile
    with tempfile.TemporaryFile() as i, tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        i.write((stdin or "").encode())
        i.seek(0)
        start = time.time()
        p = subprocess.Popen([KVLAB] + args, stdin=i, stdout=o, stderr=e, cwd=OUT,
                             env=dict(os.environ, KVLAB_HISTORY=""))
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - start
        e.seek(0)
        tail = e.read().decode(errors="replace").strip().splitlines()[-1:]
    return seconds, usage.ru_maxrss, p.returncode, tail


def frames_folder(n):
    folder = os.path.join(OUT, "soak-frames")
    have = len(os.listdir(folder)) if os.path.isdir(folder) else 0
    if have < n:
        os.makedirs(folder, exist_ok=True)
        for i in range(have, n):
            shutil.copyfile(FIXTURE_PNGS[i % len(FIXTURE_PNGS)], os.path.join(folder, f"f{i:06d}.png"))
    return folder


def session_commands(count):
    # One feed in ten commands: 1,000 commands stay inside the embedded model's 2,048 positions.
    cycle = [
        'feed text "one more sentence"',
        'tokenize "the quick brown fox"',
        "cache",
        "mem",
        "echo soak",
        'tokenize "jumps over the lazy dog"',
        "budget",
        "policy",
        "echo again",
        "mem unit=KiB",
    ]
    lines = ["record start s.kvl append=on"] + [cycle[i % len(cycle)] for i in range(count)]
    return "\n".join(lines) + "\nrecord stop\n"


def main():
    global KVLAB
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs=2, default=[1000, 10000])
    ap.add_argument("--commands", type=int, nargs=2, default=[100, 1000])
    ap.add_argument("--only", choices=["folder", "synthetic", "session"], action="append")
    ap.add_argument("--binary", default=KVLAB, help="the kvlab to measure (e.g. an older build)")
    ap.add_argument("--model", help="a model folder to copy (its position limit raised) instead of "
                    "the embedded model: the tiny fixture runs a frame ~3x faster")
    a = ap.parse_args()
    KVLAB = os.path.abspath(a.binary)
    if a.model:
        global MODEL, MODEL_SOURCE
        MODEL_SOURCE = os.path.abspath(a.model)
        MODEL = os.path.join(OUT, "soak-model-" + os.path.basename(MODEL_SOURCE.rstrip("/")))
    os.makedirs(OUT, exist_ok=True)
    only = set(a.only or ["folder", "synthetic", "session"])
    rows = []

    def measure(name, runs):
        peaks = []
        for label, args, stdin in runs:
            s, peak, rc, tail = run(args, stdin)
            print(f"{name} {label}: {s:.1f} s, VmHWM {peak / 1024:.1f} MiB, exit {rc} {tail}", flush=True)
            peaks.append(peak)
        growth = (peaks[1] - peaks[0]) / peaks[0] * 100
        rows.append((name, runs[0][0], runs[1][0], peaks[0] / 1024, peaks[1] / 1024, growth))

    if "session" in only:
        if os.path.exists(os.path.join(OUT, "s.kvl")):
            os.remove(os.path.join(OUT, "s.kvl"))
        measure("recorded session", [
            (f"{c} commands", [], f"{SETUP}\n" + session_commands(c)) for c in a.commands])
    if "folder" in only:
        folder = frames_folder(max(a.frames))
        measure("frames folder", [
            (f"{n} frames", ["-c", f"{SETUP} {soak_model()}; feed frames {folder} max={n}"], None)
            for n in a.frames])
    if "synthetic" in only:
        def clips(k):
            return "; ".join(f"feed synthetic needle-video frames=1000 seed={s}" for s in range(1, k + 1))
        measure("synthetic needle-video", [
            (f"{k * 1000} frames", ["-c", f"{SETUP} {soak_model()}; {clips(k)}"], None)
            for k in (a.frames[0] // 1000 or 1, a.frames[1] // 1000)])

    print("\n| run | short | long | VmHWM short (MiB) | VmHWM long (MiB) | growth |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, s, l, p0, p1, g in rows:
        print(f"| {name} | {s} | {l} | {p0:.1f} | {p1:.1f} | {g:+.1f}% |")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The accuracy benchmark of kvlab's embedded model, on held-out seeds.

    bench/accuracy.py                 every experiment, 200 questions per task (docs/accuracy.md tables, plot)
    bench/accuracy.py --count 50      the same on fewer seeds (--needle-count N: the needle tasks on N)
    bench/accuracy.py --ci            the CI subset: checks bench/accuracy-ci.json (a few minutes)
    bench/accuracy.py --ci --update   re-records bench/accuracy-ci.json

kvlab-bench --accuracy (bench/Sources/kvlab-bench/AccuracyBench.swift) answers every sample under
every setting of an experiment and prints one JSON line per answer; this script runs it per
experiment (raw lines kept in bench/out/accuracy/EXPERIMENT.jsonl), then writes the markdown
tables (bench/accuracy.md, one section per experiment, kept when others are re-run; pasted into
docs/accuracy.md) and the plot docs/accuracy-vs-budget.png.

Experiments (seeds 0..count-1 of each task: the training script never sees seeds < 1,000,000):
  control     full cache and the blank-image control only, on --count questions for every task
              (the needle tasks too: --needle-count does not apply)
  main        full cache, the blank-image control (every image flat gray: the question alone,
              near chance if the model reads the pixels), then each policy x mode at
              5/10/25/50% of the sample's visual tokens
  blocks      SnapKV capped at 10%: block = the tile/frame, or 16, 64, 256 tokens
  bulk        SnapKV sequential and capped at 10%: the first M tokens in one forward or not
  schedule    SnapKV capped: static budget vs a pyramid schedule (slope 0.5)
  resolution  needle tasks: a lower-resolution input (fewer tiles / frames) vs the full input
              compressed by SnapKV capped to the same token count
  proxy       SnapKV capped at each budget, scoring fed blocks with their own last queries
              (proxy=block), the chat template, or the sample's question known in advance
A budget is the prompt's text tokens (question included; text is protected) plus the share of
the visual tokens, so "10%" means the cache may keep a tenth of what the image or clip put in.
SnapKV runs with an 8-query observation window (kernel 5): its default window of 32 is more than
a single-tile task's whole budget.
Stdlib only (matplotlib for the plot, if installed): CI needs neither torch nor matplotlib.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench/out/accuracy")
CI_FILE = os.path.join(ROOT, "bench/accuracy-ci.json")
TASKS = ["needle-image", "needle-video", "count", "attribute"]
EXPERIMENTS = ["control", "main", "blocks", "bulk", "schedule", "resolution", "proxy"]
# The CI subset: full cache and one policy at one budget, on the first CI_COUNT seeds per task.
CI_COUNT = 24
CI_ARGS = ["--fractions", "0.25", "--policies", "snapkv", "--modes", "capped"]
# The CI check's tolerance: at most this many answers per (task, setting) may differ from the
# recorded ones (a different BLAS kernel or CPU may round a near-tie the other way).
CI_TOLERANCE = 1


def bench_binary() -> str:
    out = subprocess.run(["swift", "build", "-c", "release", "-Xswiftc", "-enable-testing", "--show-bin-path"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(out, "kvlab-bench")


def run(model: str, experiment: str, count: int, extra: list[str], threads: int,
        needle_count: int | None = None, saved_as: str | None = None) -> list[dict]:
    """Every task on `count` seeds, or with `needle_count` the two needle tasks on that many.
    The answers are kept in OUT/`saved_as` (default: the experiment's name).jsonl."""
    groups = [(TASKS, count)] if needle_count is None else [(TASKS[:2], needle_count), (TASKS[2:], count)]
    rows = []
    for tasks, n in groups:
        cmd = [bench_binary(), "--accuracy", model, "--experiment", experiment, "--count", str(n),
               "--tasks", ",".join(tasks), "--threads", str(threads)] + extra
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"accuracy.py: kvlab-bench failed: {proc.stderr.strip()}")
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{saved_as or experiment}.jsonl"), "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    return rows


def by_task(r: dict) -> str:
    return r["task"]


def by_kind(r: dict) -> str:
    return f"{r['task']}: {r['question_kind']}"


def accuracy(rows: list[dict], column=by_task) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(task -- or `column` of the row --, setting) -> (right, total, errors), settings in
    first-seen order. A sample the setting could not run (kvlab refused the budget for it)
    counts as wrong and as an error."""
    acc: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        a = acc.setdefault((column(r), r["setting"]), [0, 0, 0])
        a[0] += int(r["correct"])
        a[1] += 1
        a[2] += int(r.get("error") is not None)
    return {k: (v[0], v[1], v[2]) for k, v in acc.items()}


def share(a: tuple[int, int, int]) -> float:
    return 100 * a[0] / a[1]


def table(rows: list[dict], title: str, column=by_task) -> str:
    """Settings down, tasks across in TASKS order (or the distinct values of `column`, sorted)."""
    acc = accuracy(rows, column)
    tasks = [t for t in TASKS if any(k[0] == t for k in acc)] if column is by_task else sorted({k[0] for k in acc})
    settings = list(dict.fromkeys(k[1] for k in acc))
    n = {t: max(v[1] for k, v in acc.items() if k[0] == t) for t in tasks}
    lines = [f"**{title}** (accuracy in %, n = held-out questions per column)", "",
             "| setting | " + " | ".join(f"{t} (n={n[t]})" for t in tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    for s in settings:
        cells, shares = [], []
        for t in tasks:
            if (t, s) in acc:
                right, total, errors = acc[(t, s)]
                shares.append(right / total)
                cells.append(f"{100 * right / total:.1f}" + (f" ({errors} refused)" if errors else ""))
            else:
                cells.append("")
        mean = f"{100 * sum(shares) / len(shares):.1f}" if shares else ""
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("accuracy.py: matplotlib not installed, no plot", file=sys.stderr)
        return
    acc = accuracy(rows)
    tasks = [t for t in TASKS if any(k[0] == t for k in acc)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), sharey=True)
    curves = defaultdict(dict)  # (policy, mode) -> {(task, fraction): acc}
    for r in rows:
        if r["fraction"] is not None:
            curves[(r["policy"], r["mode"])][(r["task"], r["fraction"])] = None
    for ax, t in zip(axes if len(tasks) > 1 else [axes], tasks):
        for (p, m), points in sorted(curves.items()):
            fracs = sorted({f for (tt, f) in points if tt == t})
            ys = [share(acc[(t, f"{p} {m} {round(f * 100)}%")]) for f in fracs]
            ax.plot([100 * f for f in fracs], ys, marker="o", label=f"{p} {m}",
                    linestyle="-" if p == "snapkv" else "--")
        if (t, "full") in acc:
            ax.axhline(share(acc[(t, "full")]), color="black", linewidth=1, label="full cache")
        if (t, "blank image") in acc:
            ax.axhline(share(acc[(t, "blank image")]), color="gray", linewidth=1, linestyle=":",
                       label="blank image (control)")
        ax.set_title(f"{t} (n={acc[(t, 'full')][1]})" if (t, "full") in acc else t)
        ax.set_xscale("log")
        ax.set_xticks([5, 10, 25, 50], ["5", "10", "25", "50"])
        ax.minorticks_off()
        ax.set_xlabel("budget (% of visual tokens)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    (axes[0] if len(tasks) > 1 else axes).set_ylabel("accuracy (%)")
    (axes[-1] if len(tasks) > 1 else axes).legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def ci(model: str, update: bool, threads: int) -> int:
    # Saved apart: the CI subset must not replace a full run's answers that --tables-only reads.
    rows = run(model, "main", CI_COUNT, CI_ARGS, threads, saved_as="ci")
    got = {f"{r['task']} | {r['setting']} | {r['seed']}": r["correct"] for r in rows}
    if update:
        acc = accuracy(rows)
        with open(CI_FILE, "w") as f:
            json.dump(dict(model=model, count=CI_COUNT, args=CI_ARGS, tolerance_answers=CI_TOLERANCE,
                           accuracy={f"{t} | {s}": f"{r}/{n}" for (t, s), (r, n, _) in acc.items()},
                           answers=got), f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {CI_FILE}")
        print(table(rows, "CI subset"))
        return 0
    want = json.load(open(CI_FILE))["answers"]
    diffs = defaultdict(list)
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            task, setting, seed = key.split(" | ")
            diffs[(task, setting)].append(f"seed {seed}: recorded {want.get(key)}, now {got.get(key)}")
    print(table(rows, "CI subset"))
    bad = {k: v for k, v in diffs.items() if len(v) > CI_TOLERANCE}
    for (task, setting), v in diffs.items():
        print(f"{task} / {setting}: {len(v)} answer(s) differ ({'; '.join(v)})"
              + (" -- over the tolerance" if (task, setting) in bad else " -- within the tolerance"))
    if bad:
        print(f"accuracy.py --ci: FAILED: more than {CI_TOLERANCE} answer(s) changed in {len(bad)} (task, setting) pair(s)")
        return 1
    print(f"accuracy.py --ci: ok ({len(got)} answers, tolerance {CI_TOLERANCE} per task and setting)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="weights/kvlab-shapes")
    ap.add_argument("--count", type=int, default=200, help="held-out questions per task")
    ap.add_argument("--needle-count", type=int, default=None,
                    help="held-out questions for the two needle tasks, if not --count (they cost ~50x a tile's)")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed0", type=int, default=0,
                    help="first seed: keep the seeds a setting was chosen on apart from those reported")
    ap.add_argument("--ci", action="store_true", help="run the CI subset and check it against bench/accuracy-ci.json")
    ap.add_argument("--update", action="store_true", help="with --ci: re-record bench/accuracy-ci.json")
    ap.add_argument("--tables-only", action="store_true", help="rebuild the tables and plot from bench/out/accuracy")
    a = ap.parse_args()
    if a.ci:
        return ci(a.model, a.update, a.threads)
    sections = {}
    for e in a.experiments.split(","):
        path = os.path.join(OUT, f"{e}.jsonl")
        if a.tables_only:
            rows = [json.loads(line) for line in open(path)]
        elif e == "control":
            # main's first two settings without its grid: cheap enough for --count needles.
            rows = run(a.model, "main", a.count, ["--policies", "", "--seed0", str(a.seed0)],
                       a.threads, saved_as=e)
        else:
            rows = run(a.model, e, a.count, ["--seed0", str(a.seed0)], a.threads, a.needle_count)
        parts = [table(rows, e)]
        # The needles by question kind: what a setting costs the look-up by a word (colour,
        # shape) and the place of what was found (where, when) separately.
        needles = [r for r in rows if r["task"].startswith("needle")]
        if needles:
            parts.append(table(needles, f"{e}, the needle questions by kind", column=by_kind))
        sections[e] = "\n".join(parts)
        if e == "main":
            plot(rows, os.path.join(ROOT, "docs/accuracy-vs-budget.png"))
    write_report(sections)
    print("\n".join(sections.values()))
    return 0


def write_report(sections: dict[str, str]) -> None:
    """bench/accuracy.md holds one section per experiment, in EXPERIMENTS order: those just run
    replace theirs and the others are kept, since experiments are run apart (with different
    --count) and each run must not drop the tables of the others."""
    path = os.path.join(ROOT, "bench/accuracy.md")
    parts = re.split(r"^<!-- experiment: (\S+) -->\n", open(path).read() if os.path.exists(path) else "", flags=re.M)
    merged = {**dict(zip(parts[1::2], parts[2::2])), **{e: s + "\n" for e, s in sections.items()}}
    with open(path, "w") as f:
        f.write("".join(f"<!-- experiment: {e} -->\n{merged[e]}" for e in EXPERIMENTS if e in merged))


if __name__ == "__main__":
    sys.exit(main())

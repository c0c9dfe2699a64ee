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
  oracle      the upper bound: capped at 5/10/25%, SnapKV (proxy=block), KeyDiff, and the oracle
              (the visual tokens covering the task's known target first, KeyDiff fills the rest),
              with a 95% Wilson interval per cell; `--policies oracle` adds it to main as well
  bound       capped at 5/10/25%: SnapKV told the sample's question (proxy=question), alone and
              as the oracle's fill (the target's tokens first, then what the question prefers)
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
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy_report import (OUT, PLOT, ROOT, EXPERIMENTS, accuracy, bench_binary,  # noqa: E402
                             experiment_args, save_rows, sections_for, table, task_groups, plot,
                             write_report)

CI_FILE = os.path.join(ROOT, "bench/accuracy-ci.json")
# The CI subset: full cache and one policy at one budget, on the first CI_COUNT seeds per task.
CI_COUNT = 24
CI_ARGS = ["--fractions", "0.25", "--policies", "snapkv", "--modes", "capped"]
# The CI check's tolerance: at most this many answers per (task, setting) may differ from the
# recorded ones (a different BLAS kernel or CPU may round a near-tie the other way).
CI_TOLERANCE = 1


def run(model: str, experiment: str, count: int, extra: list[str], threads: int,
        needle_count: int | None = None, saved_as: str | None = None, out: str = OUT) -> list[dict]:
    """Every task on `count` seeds, or with `needle_count` the two needle tasks on that many.
    The answers are kept in `out`/`saved_as` (default: the experiment's name).jsonl."""
    groups = task_groups(experiment, count, needle_count)
    rows = []
    for tasks, n in groups:
        cmd = [bench_binary(), "--accuracy", model, "--experiment", experiment, "--count", str(n),
               "--tasks", ",".join(tasks), "--threads", str(threads)] + extra
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"accuracy.py: kvlab-bench failed: {proc.stderr.strip()}")
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    save_rows(rows, saved_as or experiment, out)
    return rows


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
        else:
            # control: main's first two settings without its grid, cheap enough for --count needles.
            experiment, extra = experiment_args(e)
            rows = run(a.model, experiment, a.count, extra + ["--seed0", str(a.seed0)], a.threads,
                       None if e == "control" else a.needle_count, saved_as=e)
        sections[e] = sections_for(e, rows)
        if e == "main":
            plot(rows, PLOT)
    write_report(sections)
    print("\n".join(sections.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

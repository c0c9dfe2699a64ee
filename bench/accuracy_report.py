"""What bench/accuracy.py (one process) and bench/sweep.py (Ray) share: the experiments' grid as
kvlab-bench arguments, the binary, and the merge of the answers into bench/accuracy.md's tables
and docs/accuracy-vs-budget.png. Stdlib only (matplotlib for the plot, if installed).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench/out/accuracy")
REPORT = os.path.join(ROOT, "bench/accuracy.md")
PLOT = os.path.join(ROOT, "docs/accuracy-vs-budget.png")
TASKS = ["needle-image", "needle-video", "count", "attribute"]
NEEDLES = TASKS[:2]
EXPERIMENTS = ["control", "main", "blocks", "bulk", "schedule", "resolution", "proxy", "oracle", "bound", "structure"]
# The oracle experiment's budgets: where the policies lose accuracy (50% is near the full cache).
ORACLE_FRACTIONS = "0.05,0.1,0.25"


def bench_binary() -> str:
    out = subprocess.run(["swift", "build", "-c", "release", "-Xswiftc", "-enable-testing", "--show-bin-path"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(out, "kvlab-bench")


def experiment_args(experiment: str) -> tuple[str, list[str]]:
    """The kvlab-bench experiment and extra arguments (--seed0 aside) an experiment of accuracy.py
    runs: control is main's first two settings (full cache, blank image) without its grid."""
    if experiment == "control":
        return "main", ["--policies", ""]
    if experiment in ("oracle", "bound", "structure"):
        return experiment, ["--fractions", ORACLE_FRACTIONS]
    return experiment, []


def task_groups(experiment: str, count: int, needle_count: int | None) -> list[tuple[list[str], int]]:
    """(tasks, seeds per task) in the order accuracy.py runs them: every task on `count`, or with
    `needle_count` (not for control) the needle tasks on that many, then the others on `count`."""
    if needle_count is None or experiment == "control":
        return [(TASKS, count)]
    return [(NEEDLES, needle_count), (TASKS[2:], count)]


def save_rows(rows: list[dict], name: str, out: str = OUT) -> None:
    """The raw answers, one JSON line each, as accuracy.py --tables-only reads them back."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)


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


def wilson(right: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of right/n, in %."""
    if n == 0:
        return (0.0, 100.0)
    p = right / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


# The columns of the budgets-down tables: setting label prefix -> column name, per experiment.
BOUND_COLUMNS = {
    "oracle": {"snapkv": "SnapKV", "keydiff": "KeyDiff", "oracle": "oracle"},
    "bound": {"question": "SnapKV told the question", "oracle+question": "oracle, SnapKV told the question fills"},
    "structure": {"gridpool+question": "grid pool, SnapKV told the question", "gridpool keydiff": "grid pool, KeyDiff",
                  "floors+question": "floors, SnapKV told the question", "floors keydiff": "floors, KeyDiff",
                  "infinipot": "InfiniPot-V", "infinipot+question": "InfiniPot-V, SnapKV told the question fills"},
}


def oracle_table(rows: list[dict], experiment: str = "oracle") -> str:
    """The oracle next to the policies it bounds, from the same run: budgets down, per task the
    accuracy of each with its 95% Wilson interval, and the full cache on top."""
    acc = accuracy(rows)
    tasks = [t for t in TASKS if any(k[0] == t for k in acc)]
    fracs = sorted({r["fraction"] for r in rows if r["fraction"] is not None})
    names = BOUND_COLUMNS[experiment]
    policies = [p for p in names if any(k[1].startswith(f"{p} capped ") for k in acc)]

    def cell(t: str, s: str) -> str:
        if (t, s) not in acc:
            return ""
        right, n, errors = acc[(t, s)]
        return interval_cell(right, n) + (f" ({errors} refused)" if errors else "")

    lines = [f"**{experiment}: accuracy in % [95% Wilson interval], capped prefill, n per task in the header**", "",
             "| task | budget | " + " | ".join(names[p] for p in policies) + " |",
             "|---|---|" + "---:|" * len(policies)]
    for t in tasks:
        n = acc[(t, "full")][1] if (t, "full") in acc else max(v[1] for k, v in acc.items() if k[0] == t)
        if (t, "full") in acc:
            lines.append(f"| {t} (n={n}) | full cache | " + " | ".join([cell(t, "full")] * len(policies)) + " |")
        for f in fracs:
            pct = f"{round(f * 100)}%"
            lines.append(f"| {t} (n={n}) | {pct} | "
                         + " | ".join(cell(t, f"{p} capped {pct}") for p in policies) + " |")
    return "\n".join(lines) + "\n"


def distance_table(rows: list[dict], bound_rows: list[dict], fraction: float = 0.1) -> str:
    """The structure experiment at one budget: each policy's accuracy [95% Wilson interval] and
    its distance in points to the full cache and to the bound (the oracle told the question), with
    SnapKV told the question beside them, both from the bound experiment on the same seeds (the
    runs are deterministic, so a seed's answer there is its answer here)."""
    pct = f"{round(fraction * 100)}%"
    seeds = {(r["task"], r["seed"]) for r in rows}
    theirs = [r for r in bound_rows if (r["task"], r["seed"]) in seeds]
    acc, ref = accuracy(rows), accuracy(theirs)
    tasks = [t for t in TASKS if any(k[0] == t for k in acc)]
    names = {"question": "SnapKV told the question (bound run)", **BOUND_COLUMNS["structure"]}
    lines = [f"**structure at {pct}: accuracy in % [95% Wilson interval]; points to the full cache / to the bound**", "",
             "| task | full cache | bound | " + " | ".join(names.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for t in tasks:
        full, bound = acc.get((t, "full")), ref.get((t, f"oracle+question capped {pct}"))
        if full is None or bound is None:
            continue
        n = full[1]

        def cell(a):
            if a is None:
                return ""
            return (f"{interval_cell(a[0], a[1])}; {share(a) - share(full):+.1f} / {share(a) - share(bound):+.1f}"
                    + (f" ({a[2]} refused)" if a[2] else ""))
        cells = [cell(ref.get((t, f"question capped {pct}")))]
        cells += [cell(acc.get((t, f"{p} capped {pct}"))) for p in BOUND_COLUMNS["structure"]]
        lines.append(f"| {t} (n={n}) | {share(full):.1f} | {interval_cell(bound[0], bound[1])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def interval_cell(right: int, n: int) -> str:
    """right/n in % with its 95% Wilson interval, as every table prints a cell."""
    lo, hi = wilson(right, n)
    return f"{100 * right / n:.1f} [{lo:.0f}–{hi:.0f}]"


def table(rows: list[dict], title: str, column=by_task) -> str:
    """Settings down, tasks across in TASKS order (or the distinct values of `column`, sorted);
    each cell with its 95% Wilson interval, the mean over tasks without one."""
    acc = accuracy(rows, column)
    tasks = [t for t in TASKS if any(k[0] == t for k in acc)] if column is by_task else sorted({k[0] for k in acc})
    settings = list(dict.fromkeys(k[1] for k in acc))
    n = {t: max(v[1] for k, v in acc.items() if k[0] == t) for t in tasks}
    lines = [f"**{title}** (accuracy in % [95% Wilson interval], n = held-out questions per column)", "",
             "| setting | " + " | ".join(f"{t} (n={n[t]})" for t in tasks) + " | mean |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    for s in settings:
        cells, shares = [], []
        for t in tasks:
            if (t, s) in acc:
                right, total, errors = acc[(t, s)]
                shares.append(right / total)
                cells.append(interval_cell(right, total) + (f" ({errors} refused)" if errors else ""))
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
        print("matplotlib not installed, no plot", file=sys.stderr)
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


def sections_for(experiment: str, rows: list[dict]) -> str:
    """An experiment's section of bench/accuracy.md: its table, then the needle questions by kind
    (what a setting costs the look-up by a word -- colour, shape -- and the place of what was
    found -- where, when -- separately)."""
    parts = [table(rows, experiment)]
    if experiment in BOUND_COLUMNS:
        parts.append(oracle_table(rows, experiment))
    bound = os.path.join(OUT, "bound.jsonl")
    if experiment == "structure" and os.path.exists(bound):
        parts.append(distance_table(rows, [json.loads(line) for line in open(bound)]))
    needles = [r for r in rows if r["task"].startswith("needle")]
    if needles:
        parts.append(table(needles, f"{experiment}, the needle questions by kind", column=by_kind))
    return "\n".join(parts)


def write_report(sections: dict[str, str], path: str = REPORT) -> None:
    """bench/accuracy.md holds one section per experiment, in EXPERIMENTS order: those just run
    replace theirs and the others are kept, since experiments are run apart (with different
    --count) and each run must not drop the tables of the others."""
    parts = re.split(r"^<!-- experiment: (\S+) -->\n", open(path).read() if os.path.exists(path) else "", flags=re.M)
    merged = {**dict(zip(parts[1::2], parts[2::2])), **{e: s + "\n" for e, s in sections.items()}}
    with open(path, "w") as f:
        f.write("".join(f"<!-- experiment: {e} -->\n{merged[e]}" for e in EXPERIMENTS if e in merged))

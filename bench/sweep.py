#!/usr/bin/env python3
"""bench/accuracy.py's experiments as a sweep on Ray: every (experiment, task, shard of seeds) is
a Ray task that runs kvlab-bench --accuracy on its shard and returns the answers' JSON lines.

    .venv-sweep/bin/python bench/sweep.py --experiments main --count 200 --needle-count 48
    .venv-sweep/bin/python bench/sweep.py ... --address auto        a running Ray cluster
    .venv-sweep/bin/python bench/sweep.py ... --ship                binary, libraries and model
                                                                    travel in the runtime env
    .venv-sweep/bin/python bench/sweep.py --jobs jobs.jsonl         any kvlab/kvlab-bench commands

Local by default: ray.init() on this machine with --workers workers (default: the cores), each
running kvlab-bench with --threads threads (default 1). Resumable: every finished shard is
appended to --out (default bench/out/sweep)/EXPERIMENT.jsonl with its answers, keyed (task,
setting, seed); a rerun with the same grid runs only the seeds not yet there. A Ray worker that
dies is retried (--retries times, as is a kvlab-bench that fails); a shard that still fails is
listed at the end and the exit status is 1, the finished shards kept. When every shard is in,
the answers are merged in accuracy.py's order and written as it writes them (bench/out/accuracy/
EXPERIMENT.jsonl, the sections of bench/accuracy.md, docs/accuracy-vs-budget.png), unless
--no-report. docs/sweeps.md has the cluster set-up and the measured times.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy_report import (EXPERIMENTS, OUT, PLOT, REPORT, ROOT, TASKS, bench_binary,  # noqa: E402
                             experiment_args, plot, save_rows, sections_for, task_groups,
                             write_report)

SWEEP_OUT = os.path.join(ROOT, "bench/out/sweep")


def fail(msg: str) -> None:
    sys.exit(f"sweep.py: {msg}")


@dataclass(frozen=True)
class Job:
    """One Ray task: a command line, and what its output must hold to count as complete."""
    store: str              # the store file's name (an experiment, or "jobs")
    sig: str                # what must match for a stored result to be reused (the grid's arguments)
    argv: tuple[str, ...]   # argv[0] is "kvlab-bench" or "kvlab", resolved where it runs
    label: str
    task: str = ""
    seed0: int = 0
    count: int = 0          # > 0: an accuracy shard, whose answers must cover seed0..seed0+count-1


def _die_with_parent() -> None:
    # The command dies with the Ray worker that started it (Linux): a killed worker leaves no
    # orphan still computing the shard beside its retry.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_job(job: Job, bin_dir: str, model: str, cwd: str | None) -> tuple[list[dict], list[str]]:
    """Runs on a Ray worker: the job's command in `cwd` (None: the runtime env's working
    directory); its JSON lines and its other output lines back (raises if it failed)."""
    env = None
    if not os.path.isabs(bin_dir):  # shipped: relative to the runtime env's working directory
        bin_dir, model = os.path.abspath(bin_dir), os.path.abspath(model)
        lib = os.path.join(os.path.dirname(bin_dir), "lib")
        env = dict(os.environ, LD_LIBRARY_PATH=lib + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
    argv = [os.path.join(bin_dir, job.argv[0])] + [a.replace("{model}", model) for a in job.argv[1:]]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{job.argv[0]} exited with {how}" + (f": {last}" if last else ""))
    lines = proc.stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    if job.count:
        want = set(range(job.seed0, job.seed0 + job.count))
        got = {r["seed"] for r in rows if r.get("task") == job.task}
        if got != want or len(rows) % job.count:
            raise RuntimeError(f"incomplete output: seeds {sorted(want - got)} missing")
    return rows, [line for line in lines if not line.startswith("{")]


# ---------------------------------------------------------------- the grid and the store


def accuracy_jobs(a, done) -> tuple[list[Job], dict]:
    """The shards still to run of each experiment, and each experiment's plan (its signature and
    its (task, seeds) in accuracy.py's order) for the merge."""
    jobs, plans = [], {}
    extra = shlex.split(a.bench_args)
    for e in a.experiments:
        bench_exp, args = experiment_args(e)
        args = args + extra
        sig = json.dumps(dict(experiment=bench_exp, args=args, model=a.model_hash, binary=a.binary_hash))
        order = []
        for tasks, n in task_groups(e, a.count, a.needle_count):
            for t in [t for t in TASKS if t in tasks and t in a.tasks]:
                seeds = range(a.seed0, a.seed0 + n)
                order.append((t, seeds))
                todo = [s for s in seeds if (t, s) not in done.get((e, sig), {})]
                # Contiguous runs of the seeds to do, cut into shards of at most --shard seeds.
                runs = []
                for s in todo:
                    if runs and runs[-1][1] == s and runs[-1][1] - runs[-1][0] < a.shard:
                        runs[-1][1] = s + 1
                    else:
                        runs.append([s, s + 1])
                for s0, s1 in runs:
                    argv = ("kvlab-bench", "--accuracy", "{model}", "--experiment", bench_exp,
                            "--tasks", t, "--seed0", str(s0), "--count", str(s1 - s0),
                            "--threads", str(a.threads), *args)
                    jobs.append(Job(e, sig, argv, f"{e} {t} seeds {s0}-{s1 - 1}", t, s0, s1 - s0))
        plans[e] = (sig, order)
    return jobs, plans


def file_hash(*paths: str) -> str:
    """sha256 (first 16 hex digits) of the files under `paths`, names and contents: answers
    stored under another model or binary are not reused."""
    h = hashlib.sha256()
    for top in paths:
        files = [top] if os.path.isfile(top) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)
        for f in files:
            h.update(os.path.relpath(f, top).encode() + b"\0")
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:16]


def load_store(out: str, names) -> dict:
    """(store name, sig) -> {(task, seed): [rows]} (accuracy shards) or {key: rows} (jobs), from
    the finished shards in out/NAME.jsonl; a line cut short by a crash is ignored."""
    done: dict = {}
    for name in names:
        path = os.path.join(out, f"{name}.jsonl")
        if not os.path.exists(path):
            continue
        for line in open(path):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            slot = done.setdefault((name, rec["sig"]), {})
            if rec.get("count"):
                for s in range(rec["seed0"], rec["seed0"] + rec["count"]):
                    slot[(rec["task"], s)] = [r for r in rec["rows"] if r["seed"] == s]
            else:
                slot[rec["key"]] = rec["rows"]
    return done


def append_store(out: str, job: Job, rows: list[dict], text: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    rec = dict(sig=job.sig, label=job.label, rows=rows)
    if job.count:
        rec.update(task=job.task, seed0=job.seed0, count=job.count)
    else:
        rec.update(key=job.label, text=text)
    with open(os.path.join(out, f"{job.store}.jsonl"), "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def merged(done: dict, e: str, plan) -> list[dict]:
    """An experiment's answers in the order one kvlab-bench process per task group gives them."""
    sig, order = plan
    slot = done.get((e, sig), {})
    return [r for t, seeds in order for s in seeds for r in slot[(t, s)]]


def read_jobs(path: str, done: dict) -> list[Job]:
    """--jobs: one JSON object a line, {"key": ..., "argv": ["kvlab-bench" | "kvlab", ...]};
    "{model}" in an argument is the --model folder where the job runs, which runs in the
    repository's root (with --ship: in the shipped folder, which holds only bin/, lib/, model/)."""
    jobs, keys = [], set()
    for n, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
            key, argv = str(spec["key"]), [str(x) for x in spec["argv"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            fail(f"{path}:{n}: not a {{\"key\": ..., \"argv\": [...]}} line")
        if not argv or argv[0] not in ("kvlab", "kvlab-bench"):
            fail(f"{path}:{n}: argv must start with kvlab or kvlab-bench")
        if key in keys:
            fail(f"{path}:{n}: key {key!r} appears twice")
        keys.add(key)
        sig = json.dumps(argv)
        if key not in done.get(("jobs", sig), {}):
            jobs.append(Job("jobs", sig, tuple(argv), key))
    return jobs


# ---------------------------------------------------------------- Ray


def ship(bin_dir: str, model: str) -> tuple[dict, str, str]:
    """A runtime environment holding the binaries, the shared libraries they load (all but the C
    library's own) and the model folder, for nodes that do not see this machine's files."""
    stage = tempfile.mkdtemp(prefix="kvlab-sweep-")
    os.makedirs(os.path.join(stage, "bin"))
    os.makedirs(os.path.join(stage, "lib"))
    libc = ("libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux", "linux-vdso")
    for name in ("kvlab-bench", "kvlab"):
        exe = os.path.join(bin_dir, name)
        if not os.path.exists(exe):
            continue
        shutil.copy2(exe, os.path.join(stage, "bin", name))
        for line in subprocess.run(["ldd", exe], capture_output=True, text=True).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].split() and not parts[0].strip().startswith(libc):
                shutil.copy2(parts[1].split()[0], os.path.join(stage, "lib", parts[0].strip()))
    shutil.copytree(model, os.path.join(stage, "model"))
    return {"working_dir": stage}, "bin", "model"


class Progress:
    """One line on stderr: shards and answers done, elapsed, and a rough time left."""

    def __init__(self, total: int):
        self.total, self.done, self.failed, self.rows, self.t0 = total, 0, 0, 0, time.time()
        self.tty = sys.stderr.isatty()

    def update(self, rows: int = 0, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        self.rows += rows
        el = time.time() - self.t0
        left = el / self.done * (self.total - self.done)
        width = 30
        fill = width * self.done // max(self.total, 1)
        line = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} shards"
                + (f" ({self.failed} failed)" if self.failed else "")
                + f", {self.rows} answers, {el:.0f} s, ~{left:.0f} s left")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def one_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    text = str(cause if cause is not None else err).strip()
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1] if cause is not None and lines else (lines[0] if lines else type(err).__name__)


def sweep(jobs: list[Job], a, bin_dir: str) -> list[tuple[Job, str]]:
    """Runs the jobs on Ray, appending each finished one to the store; returns the failures."""
    try:
        import ray
    except ImportError:
        fail("the ray package is not installed (scripts/setup.sh puts it in .venv-sweep: "
             "run .venv-sweep/bin/python bench/sweep.py)")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    runtime_env, rbin, rmodel = (ship(bin_dir, a.model) if a.ship else (None, bin_dir, os.path.abspath(a.model)))
    if a.address:
        try:
            ray.init(address=a.address, runtime_env=runtime_env, log_to_driver=False)
        except ConnectionError as err:
            # Ray 2.60's `ray start --head` asks for its auth token (~/.ray/auth_token) while a
            # driver defaults to no auth: the refusal reads as an unreachable cluster.
            hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                    "; if the head was started with token auth, run with RAY_AUTH_MODE=token "
                    "and its token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)")
            fail(f"--address {a.address}: {err}{hint}")
    else:
        # "local": always a new Ray on this machine, never one another sweep or `ray start` left.
        ray.init(address="local", num_cpus=a.workers * a.threads, include_dashboard=False,
                 runtime_env=runtime_env,
                 object_store_memory=128 << 20, log_to_driver=False)
    try:
        remote = ray.remote(run_job).options(num_cpus=a.threads, max_retries=a.retries,
                                             retry_exceptions=True)
        cwd = None if a.ship else ROOT
        pending = {remote.remote(j, rbin, rmodel, cwd): j for j in jobs}
        print(f"sweep.py: {len(jobs)} shard(s) on {ray.cluster_resources().get('CPU', 0):.0f} CPU(s), "
              f"{a.threads} thread(s) each", file=sys.stderr, flush=True)
        bar, failures = Progress(len(jobs)), []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                rows, text = ray.get(ready[0])
            except Exception as err:  # after --retries: reported, never dropped
                failures.append((job, one_line(err)))
                bar.update(failed=True)
                continue
            append_store(a.out, job, rows, text)
            bar.update(len(rows))
        bar.close()
        return failures
    finally:
        ray.shutdown()
        if a.ship:
            shutil.rmtree(runtime_env["working_dir"], ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "weights/kvlab-shapes"))
    ap.add_argument("--experiments", default="main", help=f"comma-separated, of {','.join(EXPERIMENTS)}")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--count", type=int, default=200, help="held-out questions per task")
    ap.add_argument("--needle-count", type=int, default=None, help="the needle tasks' questions, if not --count")
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--bench-args", default="",
                    help="more kvlab-bench arguments for every shard, e.g. \"--fractions 0.25 --policies snapkv\"")
    ap.add_argument("--shard", type=int, default=4, help="seeds per Ray task (at most)")
    ap.add_argument("--threads", type=int, default=1, help="kvlab-bench threads (and Ray CPUs) per task")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="local Ray: tasks at once")
    ap.add_argument("--address", default=None, help="a Ray cluster's address (auto, or ray://HOST:10001)")
    ap.add_argument("--ship", action="store_true",
                    help="send the binaries, their libraries and the model in Ray's runtime env")
    ap.add_argument("--bin", default=None, help="folder of kvlab-bench and kvlab (default: swift build's)")
    ap.add_argument("--retries", type=int, default=2, help="reruns of a shard whose worker died or that failed")
    ap.add_argument("--out", default=SWEEP_OUT, help="the store of finished shards (resume from it)")
    ap.add_argument("--jobs", default=None, help="a JSON-lines file of commands to run instead of the grid")
    ap.add_argument("--no-report", action="store_true",
                    help="leave bench/out/accuracy, bench/accuracy.md and the plot alone")
    ap.add_argument("--report-to", default=None,
                    help="write the merged answers (EXPERIMENT.jsonl), accuracy.md and the plot here instead")
    a = ap.parse_args()
    a.experiments = [e for e in a.experiments.split(",") if e]
    a.tasks = [t for t in a.tasks.split(",") if t]
    for e in a.experiments:
        if e not in EXPERIMENTS:
            fail(f"unknown experiment {e!r} (of {', '.join(EXPERIMENTS)})")
    for t in a.tasks:
        if t not in TASKS:
            fail(f"unknown task {t!r} (of {', '.join(TASKS)})")
    if min(a.shard, a.threads, a.workers) < 1 or a.retries < 0:
        fail("--shard, --threads and --workers must be at least 1, --retries at least 0")
    if not os.path.isdir(a.model):
        fail(f"no model folder at {a.model}")
    bin_dir = os.path.abspath(a.bin) if a.bin else os.path.dirname(bench_binary())
    if not os.path.exists(os.path.join(bin_dir, "kvlab-bench")):
        fail(f"no kvlab-bench in {bin_dir} (swift build -c release -Xswiftc -enable-testing --product kvlab-bench)")
    a.out = os.path.abspath(a.out)
    a.model_hash = file_hash(a.model)
    a.binary_hash = file_hash(os.path.join(bin_dir, "kvlab-bench"))

    if a.jobs:
        done = load_store(a.out, ["jobs"])
        jobs = read_jobs(a.jobs, done)
        plans = {}
    else:
        done = load_store(a.out, a.experiments)
        jobs, plans = accuracy_jobs(a, done)
    stored = sum(len(v) for v in done.values())
    print(f"sweep.py: {len(jobs)} shard(s) to run; {stored} {'job' if a.jobs else '(task, seed)'}"
          f"(s) already in {a.out}", file=sys.stderr, flush=True)
    t0 = time.time()
    failures = sweep(jobs, a, bin_dir) if jobs else []
    print(f"sweep.py: {len(jobs) - len(failures)} shard(s) run in {time.time() - t0:.1f} s",
          file=sys.stderr)
    if failures:
        for job, why in failures:
            print(f"sweep.py: FAILED after {a.retries} retries: {job.label}: {why}", file=sys.stderr)
        print(f"sweep.py: {len(failures)} shard(s) failed; the others are kept in {a.out}: "
              "rerun the same command to run only what is missing", file=sys.stderr)
        return 1
    if a.jobs:
        return 0
    done = load_store(a.out, a.experiments)
    if a.no_report:
        return 0
    to = os.path.abspath(a.report_to) if a.report_to else None
    sections = {}
    for e, plan in plans.items():
        rows = merged(done, e, plan)
        save_rows(rows, e, to or OUT)
        sections[e] = sections_for(e, rows)
        if e == "main":
            plot(rows, os.path.join(to, "accuracy-vs-budget.png") if to else PLOT)
    write_report(sections, os.path.join(to, "accuracy.md") if to else REPORT)
    print("\n".join(sections.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

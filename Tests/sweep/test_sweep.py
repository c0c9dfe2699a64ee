#!/usr/bin/env python3
"""bench/sweep.py on a local Ray with 2 workers, against one kvlab-bench process (what
bench/accuracy.py runs), answer for answer:

  1. a small grid (main: full, blank image, SnapKV capped 25%; count and attribute, 12 seeds
     each, shards of 3): the merged answers and the table equal the sequential run's;
  2. with --ship, a Ray worker killed (SIGKILL) while its kvlab-bench runs a shard: the shard is
     retried and the result is still complete and equal;
  3. every attempt at one shard killed: the run exits 1 naming that shard, the other shards are
     kept, and a rerun runs only the missing shard and completes the result;
  4. --jobs: kvlab-bench command lines from a file, stored under their keys (equal to the
     sequential run's answers) and skipped on a rerun.

Usage: .venv-sweep/bin/python Tests/sweep/test_sweep.py [BIN_DIR]   (BIN_DIR holds kvlab-bench;
default: swift build's release folder). Ends with 'N passed, N failed'.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from accuracy_report import bench_binary, sections_for  # noqa: E402

MODEL = os.path.join(ROOT, "weights/kvlab-shapes")
GRID = "--fractions 0.25 --policies snapkv --modes capped"
TASKS = "count,attribute"


def sequential(bin_dir: str, count: int) -> list[dict]:
    cmd = [os.path.join(bin_dir, "kvlab-bench"), "--accuracy", MODEL, "--experiment", "main",
           "--tasks", TASKS, "--seed0", "0", "--count", str(count), "--threads", "1"] + GRID.split()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def sweep_cmd(bin_dir: str, out: str, report: str, count: int, shard: int, *more: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "bench/sweep.py"), "--bin", bin_dir, "--model", MODEL,
            "--experiments", "main", "--tasks", TASKS, "--count", str(count), "--shard", str(shard),
            "--workers", "2", "--threads", "1", "--bench-args", GRID, "--out", out,
            "--report-to", report, *more]


def check_equal(report: str, want: list[dict]) -> None:
    got = [json.loads(line) for line in open(os.path.join(report, "main.jsonl"))]
    assert len(got) == len(want), f"{len(got)} answers merged, {len(want)} in the sequential run"
    for g, w in zip(got, want):
        assert g == w, f"differs: sweep {g} vs sequential {w}"
    table = open(os.path.join(report, "accuracy.md")).read()
    assert sections_for("main", want) in table, "the merged table differs from the sequential run's"


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process under `pid`."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            procs[int(d)] = (ppid, cmd)
    under, frontier = {}, {pid}
    while frontier:
        nxt = {p for p, (pp, _) in procs.items() if pp in frontier and p not in under}
        under.update({p: procs[p] for p in nxt})
        frontier = nxt
    return under


class Killer(threading.Thread):
    """Kills (SIGKILL) the Ray worker running kvlab-bench on the shard starting at `seed0`,
    each time one appears, at most `times` times."""

    def __init__(self, driver: subprocess.Popen, seed0: int, times: int):
        super().__init__(daemon=True)
        self.driver, self.seed0, self.times, self.killed = driver, seed0, times, []

    def run(self) -> None:
        seen = set()
        while self.driver.poll() is None and len(self.killed) < self.times:
            for pid, (ppid, cmd) in descendants(self.driver.pid).items():
                if "kvlab-bench" in cmd and f"--seed0 {self.seed0} " in cmd and pid not in seen:
                    seen.add(pid)
                    worker = descendants(self.driver.pid).get(ppid, (0, ""))[1]
                    assert "kvlab-bench" not in worker and worker, f"parent of kvlab-bench: {worker!r}"
                    os.kill(ppid, signal.SIGKILL)
                    self.killed.append((ppid, worker.split()[0] if worker else ""))
            time.sleep(0.02)


def run_sweep(cmd: list[str], seed0: int | None = None, kills: int = 0):
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = Killer(driver, seed0, kills) if kills else None
    if killer:
        killer.start()
    out, err = driver.communicate(timeout=300)
    if killer:
        killer.join()
    return driver.returncode, out, err, (killer.killed if killer else [])


def test_equal_to_sequential(bin_dir: str, want: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, report = os.path.join(tmp, "store"), os.path.join(tmp, "report")
        rc, _, err, _ = run_sweep(sweep_cmd(bin_dir, out, report, 12, 3))
        assert rc == 0, f"sweep failed: {err[-2000:]}"
        assert "8 shard(s) to run" in err, err[-2000:]
        check_equal(report, want)
        # A rerun finds everything in the store and runs nothing.
        rc, _, err, _ = run_sweep(sweep_cmd(bin_dir, out, report, 12, 3))
        assert rc == 0 and "0 shard(s) to run" in err, err[-2000:]
        check_equal(report, want)


def test_worker_killed_mid_shard(bin_dir: str, want: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, report = os.path.join(tmp, "store"), os.path.join(tmp, "report")
        rc, _, err, killed = run_sweep(sweep_cmd(bin_dir, out, report, 12, 6, "--ship", "--retries", "2"),
                                       seed0=6, kills=1)
        assert len(killed) == 1, f"no worker was killed: {err[-2000:]}"
        assert rc == 0, f"sweep failed after a worker was killed: {err[-2000:]}"
        check_equal(report, want)


def test_failing_shard_reported_then_resumed(bin_dir: str, want: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, report = os.path.join(tmp, "store"), os.path.join(tmp, "report")
        rc, _, err, killed = run_sweep(sweep_cmd(bin_dir, out, report, 12, 6, "--retries", "1"),
                                       seed0=6, kills=4)
        # Both tasks' shards at seed 6 run, and each attempt is killed: 2 shards x 2 attempts.
        assert len(killed) == 4, f"{len(killed)} kill(s): {err[-2000:]}"
        assert rc == 1, f"exit {rc} with a shard failing every attempt: {err[-2000:]}"
        for task in ("count", "attribute"):
            assert f"FAILED after 1 retries: main {task} seeds 6-11" in err, err[-2000:]
        assert not os.path.exists(os.path.join(report, "main.jsonl")), "a partial result was merged"
        rc, _, err, _ = run_sweep(sweep_cmd(bin_dir, out, report, 12, 6))
        assert rc == 0 and "2 shard(s) to run; 12 (task, seed)(s) already" in err, err[-2000:]
        check_equal(report, want)


def test_jobs_file(bin_dir: str, want: list[dict]) -> None:
    """--jobs: any kvlab-bench/kvlab command lines, keyed, stored and skipped on a rerun."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {"count 0-2": ("count", 0, 3), "attribute 5-8": ("attribute", 5, 4)}
        path = os.path.join(tmp, "jobs.jsonl")
        with open(path, "w") as f:
            for key, (task, s0, n) in jobs.items():
                argv = ["kvlab-bench", "--accuracy", "{model}", "--experiment", "main", "--tasks", task,
                        "--seed0", str(s0), "--count", str(n), "--threads", "1"] + GRID.split()
                f.write(json.dumps(dict(key=key, argv=argv)) + "\n")
        cmd = [sys.executable, os.path.join(ROOT, "bench/sweep.py"), "--bin", bin_dir, "--model", MODEL,
               "--workers", "2", "--jobs", path, "--out", os.path.join(tmp, "store")]
        for run, to_run in ((1, 2), (2, 0)):
            rc, _, err, _ = run_sweep(cmd)
            assert rc == 0 and f"{to_run} shard(s) to run" in err, f"run {run}: {err[-2000:]}"
        stored = [json.loads(line) for line in open(os.path.join(tmp, "store", "jobs.jsonl"))]
        assert sorted(r["key"] for r in stored) == sorted(jobs), stored
        for r in stored:
            task, s0, n = jobs[r["key"]]
            assert r["rows"] == [w for w in want if w["task"] == task and s0 <= w["seed"] < s0 + n], r["key"]


def main() -> int:
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(bench_binary())
    want = sequential(bin_dir, 12)
    passed = failed = 0
    for test in (test_equal_to_sequential, test_worker_killed_mid_shard,
                 test_failing_shard_reported_then_resumed, test_jobs_file):
        t0 = time.time()
        try:
            test(bin_dir, want)
            passed += 1
            print(f"ok   {test.__name__} ({time.time() - t0:.0f} s)", flush=True)
        except AssertionError as e:
            failed += 1
            print(f"FAIL {test.__name__}: {e}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

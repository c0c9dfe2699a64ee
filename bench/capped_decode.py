#!/usr/bin/env python3
"""Decode under a capped budget of M tokens against decode at a context of M tokens.

A capped cache that holds M entries should decode about as fast as a full cache holding M
tokens: eviction per generated token must cost less than the attention it saves. Three kvlab
sessions (a fresh `kvlab -c` each, SmolLM2-135M Q4_1 from scripts/setup.sh, --threads T),
alternated round by round so that load on a shared machine hits them alike:

  full M     feed text of about M tokens (the long text's first characters), full cache
  capped     budget M tokens, SnapKV window 8, prefill mode=capped, the long text (LONG tokens)
  capped/1   the same with evict_every=1 (evict at every generated token)

then `generate max=D temp=0 --timing` and the decode rate it prints. The text is docs/design.md
(quotes removed), repeated to the length asked. Prints min / median tok/s per session, the
ratios capped / full, the contexts fed and the load average before and after.

    swift build -c release --product kvlab && python3 bench/capped_decode.py
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")


def text(chars: int) -> str:
    src = open(os.path.join(ROOT, "docs/design.md"), encoding="utf-8").read()
    src = re.sub(r'["\\`]', "", src)
    src = re.sub(r"\s+", " ", src)
    out = src
    while len(out) < chars:
        out += " " + src
    return out[:chars]


def run(binary: str, threads: int, commands: list[str]) -> tuple[float, int]:
    """Runs one session; returns (decode tok/s, context fed)."""
    p = subprocess.run([binary, "--threads", str(threads), "-c", "; ".join(commands)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"capped_decode.py: kvlab failed: {p.stderr.strip() or p.stdout[-400:]}")
    rate = re.search(r"decode \d+ tokens ~[\d.]+ s \(~([\d.]+) tok/s\)", p.stdout)
    fed = re.findall(r"\(context (\d+)\)", p.stdout)
    if not rate or not fed:
        sys.exit(f"capped_decode.py: no decode rate in kvlab's output:\n{p.stdout[-600:]}")
    return float(rate.group(1)), int(fed[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release/kvlab"))
    ap.add_argument("--budget", type=int, default=512, help="M, the budget in tokens")
    ap.add_argument("--long-chars", type=int, default=14000, help="characters of the long text")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()

    long_text = text(a.long_chars)
    # About 3.4 characters a token on this text for SmolLM2's tokenizer; the context actually
    # fed is printed, so the comparison states what it compared.
    short_text = text(int(a.budget * 3.4) - 40)
    gen = f"generate max={a.decode} temp=0 --timing"
    load = f"load {MODEL}"
    sessions = {
        f"full {a.budget}": [load, f'feed text "{short_text}"', gen],
        "capped": [load, f"budget {a.budget} tokens", "policy snapkv window=8",
                   "prefill mode=capped", f'feed text "{long_text}"', gen],
        "capped/1": [load, f"budget {a.budget} tokens", "policy snapkv window=8",
                     "prefill mode=capped evict_every=1", f'feed text "{long_text}"', gen],
    }
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    contexts: dict[str, int] = {}
    for r in range(a.rounds):
        for name, cmds in sessions.items():
            rate, fed = run(a.bin, a.threads, cmds)
            rates[name].append(rate)
            contexts[name] = fed
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()),
              flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = statistics.median(rates[f"full {a.budget}"])
    print(f"\n| session | context fed | decode tok/s min | median | median / full {a.budget} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, v in rates.items():
        print(f"| {name} | {contexts[name]} | {min(v):.1f} | {statistics.median(v):.1f} | "
              f"{statistics.median(v) / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

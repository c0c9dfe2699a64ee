"""bench/memory_vs_frames.py's report (markdown tables and findings) and plot, from its runs."""
from __future__ import annotations

import os
import statistics

import memory_model as mm
from memory_model import MiB


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
    L.append(f"Model: {mm.MODEL_DESC}: {mm.KV_BYTES_PER_TOKEN} B of K/V per token, "
             f"{mm.TOKENS_PER_FRAME} tokens per frame. Budget {args.budget} tokens "
             f"({args.budget * mm.KV_BYTES_PER_TOKEN / MiB:.2f} MiB), policy {args.policy}, block=frame; "
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
                     f"{r['kv_peak_mib'] * MiB / mm.KV_BYTES_PER_TOKEN:.0f} tokens per layer and KV head "
                     f"(budget {args.budget}; a block=frame block is {mm.TOKENS_PER_FRAME} visual tokens and the frame's text tokens).")
    if "kvlab full" in verdict:
        d = {n: kv[("full", n)] for n in frames if ("full", n) in kv}
        L.append(f"- full: peak RSS grows {verdict['kvlab full']:.2f}x from {lo} to {hi} frames, "
                 f"{slope([(n, d[n]['rss_peak_mib']) for n in sorted(d)]):.2f} MiB/frame "
                 f"(K/V alone: {mm.TOKENS_PER_FRAME} tokens x {mm.KV_BYTES_PER_TOKEN} B = "
                 f"{mm.TOKENS_PER_FRAME * mm.KV_BYTES_PER_TOKEN / MiB:.2f} MiB/frame); "
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
        ax.set_xlabel(f"frames ({mm.TOKENS_PER_FRAME} tokens each)")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("process peak RSS during prefill (MiB)")
    ax1.set_title("peak RSS (VmHWM)")
    ax2.set_ylabel("KV high-water mark (MiB)")
    ax2.set_title(f"KV peak, budget {args.budget} tokens")
    ax2.axhline(args.budget * mm.KV_BYTES_PER_TOKEN / MiB, color="k", lw=0.8, ls=":")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

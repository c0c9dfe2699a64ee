#!/usr/bin/env python3
"""Generates Tests/KVCacheTests/Fixtures/policies/structure.json: the scores of kvlab's `gridpool`
policy (SnapKV's window attention, KeyDiff or K-norm, max- or average-pooled over each tile's /
frame's patch grid) and the survivors of its `floors` policy, computed here in numpy from the
definitions, on small random Q/K/V with a tiled image (the last tile its thumbnail) and a clip.
StructurePolicyTests reproduces them with the Swift policies. numpy only:

    python3 scripts/gen_structure_fixtures.py
"""

import json
import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "KVCacheTests", "Fixtures", "policies",
                   "structure.json")
HEADS, KV_HEADS, HEAD_DIM, WINDOW = 4, 2, 8, 4


def origins():
    """(modality, input, image, tile, row, col, frame): text, a 3-tile image of 4x4 patches with
    marker tokens around its tiles (the last tile the thumbnail), a clip of 3 frames of 3x3
    patches (no tile), then the question's text (the window)."""
    o = [("text", 0, -1, -1, -1, -1, -1)] * 5
    for t in range(3):
        o.append(("image", 1, 0, -1, -1, -1, -1))  # a marker: image, but no patch
        o += [("image", 1, 0, t, r, c, -1) for r in range(4) for c in range(4)]
    for f in range(3):
        o += [("video", 2, 1, -1, r, c, f) for r in range(3) for c in range(3)]
    o += [("text", 3, -1, -1, -1, -1, -1)] * 6
    return o


def f32(a):
    return np.asarray(a, dtype=np.float32)


def short(xs):
    """float32 values in their shortest round-tripping form (parsed back bit-exactly)."""
    return [float(str(np.float32(x))) for x in np.asarray(xs).reshape(-1)]


def snapkv(q, k, window):
    """Mean attention of the last `window` queries (causal softmax over every token), averaged
    over the query heads of each KV head: [kv_heads, n]. Window columns are left as computed."""
    n = k.shape[0]
    group = HEADS // KV_HEADS
    out = np.zeros((KV_HEADS, n))
    for g in range(KV_HEADS):
        for h in range(g * group, (g + 1) * group):
            qh = q[n - window:, h * HEAD_DIM:(h + 1) * HEAD_DIM].astype(np.float64)
            kh = k[:, g * HEAD_DIM:(g + 1) * HEAD_DIM].astype(np.float64)
            logits = qh @ kh.T / math.sqrt(HEAD_DIM)
            for r in range(window):
                pos = n - window + r
                logits[r, pos + 1:] = -np.inf
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            out[g] += p.mean(axis=0)
        out[g] /= group
    return out


def keydiff(k):
    out = np.zeros((KV_HEADS, k.shape[0]))
    for g in range(KV_HEADS):
        kh = k[:, g * HEAD_DIM:(g + 1) * HEAD_DIM].astype(np.float64)
        norms = np.linalg.norm(kh, axis=1)
        anchor = (kh / np.maximum(norms, 1e-12)[:, None]).mean(axis=0)
        out[g] = -(kh @ anchor) / (np.maximum(norms, 1e-8) * max(np.linalg.norm(anchor), 1e-8))
    return out


def knorm(k):
    return np.stack([-np.linalg.norm(k[:, g * HEAD_DIM:(g + 1) * HEAD_DIM].astype(np.float64), axis=1)
                     for g in range(KV_HEADS)])


def unit(o):
    """A patch's unit (input, image, frame, tile), or None for text and markers."""
    return None if o[4] < 0 else (o[1], o[2], o[6], o[3])


def pool(scores, orig, kernel, how, eligible):
    """2-D pooling over each unit's grid among the eligible patches; the others unchanged."""
    cell = {(unit(o), o[4], o[5]): i for i, o in enumerate(orig) if eligible[i] and unit(o)}
    r = kernel // 2
    out = scores.copy()
    for i, o in enumerate(orig):
        if not eligible[i] or unit(o) is None:
            continue
        vals = [scores[cell[(unit(o), o[4] + dr, o[5] + dc)]]
                for dr in range(-r, r + 1) for dc in range(-r, r + 1)
                if (unit(o), o[4] + dr, o[5] + dc) in cell]
        out[i] = max(vals) if how == "max" else sum(vals) / len(vals)
    return out


def by_score(s):
    """kvlab's Ranking.byScore: highest first, ties to the later index."""
    return sorted(range(len(s)), key=lambda i: (-s[i], -i))


def floors_kept(scores, orig, mandatory, budget, floor, thumbnail):
    """The floors policy's survivors: mandatory, then each unit's best floor*(slots/units)
    (the image's last tile: x2 or whole), then by score."""
    slots = budget - sum(mandatory)
    free = [i for i in range(len(orig)) if not mandatory[i]]
    sizes = {}
    for i in free:
        if unit(orig[i]):
            sizes[unit(orig[i])] = sizes.get(unit(orig[i]), 0) + 1
    share = floor * slots / len(sizes)
    tiles = {}
    for u in sizes:
        if u[2] < 0:
            tiles.setdefault((u[0], u[1]), []).append(u[3])
    quota, whole = {}, None
    for u, n in sizes.items():
        thumb = u[2] < 0 and len(tiles[(u[0], u[1])]) > 1 and u[3] == max(tiles[(u[0], u[1])])
        if thumb and thumbnail == "whole":
            quota[u], whole = n, u
        elif thumb and thumbnail == "double":
            quota[u] = min(n, math.floor(2 * share))
        else:
            quota[u] = min(n, math.floor(share))
    order = by_score(scores)
    taken, first = {}, []
    for i in order:
        u = unit(orig[i])
        if mandatory[i] or u is None or taken.get(u, 0) >= quota[u]:
            continue
        taken[u] = taken.get(u, 0) + 1
        first.append(i)
    pref = [i for i in first if unit(orig[i]) == whole] + [i for i in first if unit(orig[i]) != whole] \
        + [i for i in order if i not in first]
    keep = set(i for i in range(len(orig)) if mandatory[i])
    for i in pref:
        if len(keep) >= budget:
            break
        keep.add(i)
    return sorted(keep)


def main():
    rng = np.random.default_rng(7)
    orig = origins()
    n = len(orig)
    q = f32(rng.normal(size=(n, HEADS * HEAD_DIM)))
    k = f32(rng.normal(size=(n, KV_HEADS * HEAD_DIM)) * rng.uniform(0.5, 2.0, size=(n, 1)))
    v = f32(rng.normal(size=(n, KV_HEADS * HEAD_DIM)))
    window = [i >= n - WINDOW for i in range(n)]
    bases = {"snapkv": snapkv(q, k, WINDOW), "keydiff": keydiff(k), "knorm": knorm(k)}
    pooled = []
    for base, raw in bases.items():
        eligible = [not w for w in window] if base == "snapkv" else [True] * n
        for kernel, how in ((3, "max"), (3, "avg"), (5, "max"), (1, "max")):
            pooled.append(dict(base=base, kernel=kernel, pooling=how,
                               scores=[[float(f"{x:.9g}") for x in pool(raw[g], orig, kernel, how, eligible)]
                                       for g in range(KV_HEADS)],
                               compared=[i for i in range(n) if eligible[i]]))
    floors = []
    for base in ("snapkv", "knorm"):
        mandatory = window if base == "snapkv" else [False] * n
        for budget, floor, kernel, thumbnail in ((30, 0.5, 1, "same"), (30, 1.0, 3, "double"),
                                                 (22, 0.5, 1, "whole"), (40, 0.25, 3, "same")):
            kept = []
            for g in range(KV_HEADS):
                s = pool(bases[base][g], orig, kernel, "max", [not m for m in mandatory])
                kept.append(floors_kept(s, orig, mandatory, budget, floor, thumbnail))
            floors.append(dict(base=base, budget=budget, floor=floor, kernel=kernel,
                               thumbnail=thumbnail, kept=kept))
    fields = ("modality", "input", "image", "tile", "row", "col", "frame")
    with open(OUT, "w") as f:
        json.dump(dict(heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, window=WINDOW,
                       origins=[dict(zip(fields, o)) for o in orig],
                       queries=short(q), keys=short(k), values=short(v), pooled=pooled, floors=floors), f)
        f.write("\n")
    print(f"wrote {OUT}: {n} tokens, {len(pooled)} pooled score sets, {len(floors)} floor selections")


if __name__ == "__main__":
    main()

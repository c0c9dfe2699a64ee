#!/usr/bin/env bash
# Regenerates the figures of docs/ (docs/*.png) with kvlab's own PNG views:
#   docs/mem-plot.png   SmolLM2-135M, ~5,400 tokens of text under a 512-token capped budget,
#                       blocks of 256: memory per prefill block (`mem plot`)
#   docs/cache-map.png  the tiny Idefics3 fixture, a 10-tile image and the 64-frame clip under a
#                       96-token InfiniPot-V budget: what the cache retains (`cache map`)
# Usage: scripts/make_figures.sh   (after scripts/setup.sh and a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(swift build -c release --show-bin-path)/kvlab"
text=$(printf 'The keeper counted the boats in the harbour and wrote the number down. %.0s' $(seq 1 380))
"$bin" -c "budget 512 tokens; policy snapkv; prefill mode=capped block=256; load models/SmolLM2-135M-Instruct.Q4_1.gguf; feed text \"$text\"; mem plot out=docs/mem-plot.png"
vlm=Tests/KVEngineTests/Fixtures/vlm
"$bin" -c "policy infinipot; budget 96 tokens; prefill mode=capped block=frame; load $vlm/idefics3/model; feed image $vlm/images/img_70x40.png; feed frames $vlm/images/clip64 max=32; feed text \"what moved?\"; cache map out=docs/cache-map.png"

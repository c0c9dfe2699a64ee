#!/usr/bin/env python3
"""The tiny InternVL and Qwen2.5-VL fixtures in the other tensor layouts their checkpoints come in,
each shown by transformers 5.24.0 to be the same model as the folder it was renamed from.

transformers 5.24 keeps these models' weights under one set of names (the module tree:
`model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.*` for
InternVL; `model.visual.*`, `model.language_model.*`, `lm_head.*` for Qwen2.5-VL) but
`save_pretrained` writes the legacy names its conversion mapping turns back (InternVL: the "llava"
renames, `language_model.model.*`, `language_model.lm_head.*`, `vision_tower.*`,
`multi_modal_projector.*`; Qwen2.5-VL: `model.*`, `visual.*`), which is what the fixtures of
scripts/gen_internvl_fixtures.py and scripts/gen_vlm_fixtures.py hold. The published checkpoints
differ by family:

  InternVL `-hf` (OpenGVLab/InternVL3_5-1B-HF and the other -hf conversions): the module-tree
  names, `model.` prefix and a top-level `lm_head.weight`. Written here as
  internvl_qwen3_published/model (from internvl_qwen3/model, the Qwen3 shape InternVL3.5 has).

  Qwen2.5-VL (Qwen/Qwen2.5-VL-*-Instruct): the legacy names, exactly what save_pretrained writes;
  checkpoints re-saved by transformers 4.52-4.57 carry the module-tree names instead. Written
  here as qwen2_5_vl_module_names/model (from qwen2_5_vl/model).

Each new folder is the source folder with model.safetensors renamed (the other files copied).
Checks: every tensor name changes, the two folders load in transformers to bit-identical state
dicts, and on the source's image-only cases the two give bit-identical logits (within 1e-4 of the
goldens, which came from the model as built, not reloaded). The Swift side (VisionParityTests) runs every case of the source fixture on the renamed
folder against the same goldens.

Run with the reference venv from the repository root, after the two generators:

    .venv-ref/bin/python scripts/gen_layout_fixtures.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import AutoModelForImageTextToText

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VLM = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "vlm")

# (source fixture, new fixture, [(regex on a saved name, replacement)]): first match wins.
LAYOUTS = [
    ("internvl_qwen3", "internvl_qwen3_published", [
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^language_model\.model\.", "model.language_model."),
        (r"^vision_tower\.", "model.vision_tower."),
        (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    ]),
    ("qwen2_5_vl", "qwen2_5_vl_module_names", [
        (r"^lm_head\.", "lm_head."),
        (r"^model\.", "model.language_model."),
        (r"^visual\.", "model.visual."),
    ]),
]


def rename(name: str, rules: list) -> str:
    for pattern, replacement in rules:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name, count=1)
    sys.exit(f"no rule renames {name}")


def write(source: str, target: str, rules: list) -> None:
    src = os.path.join(VLM, source, "model")
    dst = os.path.join(VLM, target, "model")
    if os.path.isdir(os.path.dirname(dst)):
        shutil.rmtree(os.path.dirname(dst))
    os.makedirs(dst)
    for f in sorted(os.listdir(src)):
        if f != "model.safetensors":
            shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
    with safe_open(os.path.join(src, "model.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {rename(k, rules): f.get_tensor(k) for k in f.keys()}
        old = set(f.keys())
    assert not old & set(tensors), f"{target}: names left as they were: {sorted(old & set(tensors))}"
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata=meta)

    a = AutoModelForImageTextToText.from_pretrained(src).eval()
    b = AutoModelForImageTextToText.from_pretrained(dst).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{target}: state dict keys differ"
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{target}: {k} differs after loading"
    with open(os.path.join(VLM, source, "cases.json")) as f:
        cases = json.load(f)["cases"]
    checked, worst = 0, 0.0
    for case in cases:
        if "video_frames" in case:  # the clip's pixels are laid out differently per family
            continue
        inputs = dict(input_ids=torch.tensor([case["input_ids"]]),
                      pixel_values=torch.from_numpy(np.load(os.path.join(VLM, source, case["files"]["pixel_values"]))))
        if "image_grid_thw" in case:
            inputs["image_grid_thw"] = torch.tensor(case["image_grid_thw"])
            inputs["mm_token_type_ids"] = torch.tensor([case["mm_token_type_ids"]])
        golden = torch.from_numpy(np.load(os.path.join(VLM, source, case["files"]["logits"])))
        with torch.no_grad():
            mine, theirs = b(**inputs).logits[0], a(**inputs).logits[0]
        assert torch.equal(mine, theirs), f"{target}/{case['name']}: logits differ from {source}'s"
        # The goldens came from the model as built (eager attention), not reloaded: within float noise.
        far = float((mine - golden).abs().max())
        assert far < 1e-4, f"{target}/{case['name']}: {far} from the golden"
        worst = max(worst, far)
        checked += 1
    assert checked > 0
    print(f"{target}: {len(tensors)} tensors renamed; state dict identical to {source}'s; "
          f"{checked} cases' logits bit-identical to {source}'s reloaded, {worst:.2e} from the goldens")


def main() -> int:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    for source, target, rules in LAYOUTS:
        write(source, target, rules)
    return 0


if __name__ == "__main__":
    sys.exit(main())

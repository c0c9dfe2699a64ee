#!/usr/bin/env python3
"""Golden outputs of the embedded default model (weights/kvlab-shapes) from Hugging Face
transformers, for VisionParityTests.testEmbeddedModelMatchesTransformers.

Run with the reference venv from the repository root after exporting new weights (seconds):

    .venv-ref/bin/python scripts/gen_default_model_parity.py

Writes Tests/KVEngineTests/Fixtures/kvlab-shapes/: the case images (made by `kvlab synthetic
write`, so the pixels are the benchmark's), cases.json and per case the logits of every prompt
position, pixel_values, vision and connector outputs (float32 .npy), in the layout of
scripts/gen_vlm_fixtures.py, whose helpers this reuses; and the tokenizer's ids for a few answer
texts (`tokenization`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import Idefics3ForConditionalGeneration, Idefics3Processor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_vlm_fixtures as G  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "weights", "kvlab-shapes")
OUT = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "kvlab-shapes")
KVLAB = os.environ.get("KVLAB", os.path.join(ROOT, ".build", "release", "kvlab"))

# (case name, synthetic task, seed, size, processor kwargs, longest edge): one unsplit tile as
# kvlab feeds count/attribute, and a 128-px needle image split into 2x2 tiles + the global image
# (the processor's longest edge lowered to 128, as `resolution` in the benchmark does; the
# 512-px one is 1,193 positions of logits, the same code at 13x the fixture size).
CASES = [
    ("attribute_tile", "attribute", 3, None, {"do_image_splitting": False}, None),
    ("needle_split", "needle-image", 5, 128, {}, 128),
]

TOKENIZATION = [
    "Assistant: top-left<end_of_utterance>",
    "Assistant: bottom-right<end_of_utterance>\nUser: where is the star?",
    " top-right bottom-left middle end beginning red squares",
    "top-left",
    "x top-leftx",
]


def main() -> int:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    model = Idefics3ForConditionalGeneration.from_pretrained(MODEL, attn_implementation="eager").eval()
    proc = Idefics3Processor.from_pretrained(MODEL)
    tok = proc.tokenizer
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "images"))
    fam = dict(family="idefics3")
    cases = []
    for name, task, seed, size, kwargs, edge in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = f"synthetic write {tmp}/d {task} count=1 seed={seed}" + (f" size={size}" if size else "")
            subprocess.run([KVLAB, "-c", cmd], check=True, stdout=subprocess.DEVNULL)
            sample = json.loads(open(f"{tmp}/d/samples.jsonl").readline())
            image = f"images/{name}.png"
            shutil.copy(f"{tmp}/d/{sample['images'][0]}", os.path.join(OUT, image))
        prompt = "<|im_start|>User:<image>" + sample["question"] + "<end_of_utterance>\nAssistant:"
        pil = Image.open(os.path.join(OUT, image)).convert("RGB")
        extra = {"size": {"longest_edge": edge}} if edge else {}
        enc = dict(proc(text=[prompt], images=[pil], return_tensors="pt", **kwargs, **extra))
        ids = enc["input_ids"][0]
        vis = G.vision_outputs(fam, model, enc)
        embeds, logits = G.captured_embeds(model, enc)
        assert torch.equal(embeds[ids == model.config.image_token_id], vis["features"])
        logits_np = logits.numpy().astype(np.float32)
        cont = G.greedy(model, enc, 4)
        files = {"logits": f"{name}.logits.npy", "pixel_values": f"{name}.pixel_values.npy"}
        G.save_npy(os.path.join(OUT, files["logits"]), logits_np)
        G.save_npy(os.path.join(OUT, files["pixel_values"]), enc["pixel_values"])
        for key, v in vis.items():
            files[key] = f"{name}.{key}.npy"
            G.save_npy(os.path.join(OUT, files[key]), v)
        answer = tok.decode(cont).split("<end_of_utterance>")[0].strip()
        cases.append(dict(name=name, task=task, seed=seed, question=sample["question"], answer=sample["answer"],
                          model_answer=answer, prompt=prompt, images=[image], processor_kwargs=kwargs, longest_edge=edge,
                          input_ids=ids.tolist(), seq_len=len(ids), files=files,
                          argmax=logits_np.argmax(axis=1).tolist(), greedy=cont))
        print(f"{name}: {len(ids)} tokens, answer {sample['answer']!r}, model says {answer!r}")
    # The tokenizer alone, on the answers: the regions are added tokens (one id each), matched in
    # the raw text before the byte-level pre-tokenizer, also inside other text.
    tokenization = [dict(text=t, ids=tok(t, add_special_tokens=False)["input_ids"]) for t in TOKENIZATION]
    manifest = dict(transformers=transformers.__version__, torch=torch.__version__, family="idefics3",
                    model=os.path.relpath(MODEL, ROOT), cases=cases, tokenization=tokenization)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        f.write(G.dumps(manifest) + "\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

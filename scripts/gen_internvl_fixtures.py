#!/usr/bin/env python3
"""Tiny random InternVL models (transformers' `internvl` layout, the `-hf` checkpoints) with
transformers 5.24.0 golden outputs, in the format of scripts/gen_vlm_fixtures.py (whose helpers
this reuses), so that VisionParityTests reads them the same way.

Run with the reference venv from the repository root (needs data/images: scripts/fetch_images.sh):

    .venv-ref/bin/python scripts/gen_internvl_fixtures.py

Writes Tests/KVEngineTests/Fixtures/vlm/:

  images/photo_*.png   small crops of scikit-image photographs at odd sizes: RGB (chelsea, coffee),
                       grayscale (camera, mode L) and RGBA (astronaut with an alpha ramp)
  images/clip{32,24}/  4-frame clips cut from a photograph, frames of exactly one tile
  internvl/            InternViT with LayerNorms, q/k/v biases, no QK norm, mean pooling (no final
                       norm), 32-pixel tiles of 4-pixel patches, up to 6 tiles; a Qwen2 decoder
                       (GQA 2)
  internvl_qwen3/      InternViT with RMSNorms, QK norm, no q/k/v biases, a final LayerNorm,
                       24-pixel tiles of 3-pixel patches, up to 4 tiles; a Qwen3 decoder (GQA 5,
                       head_dim 12)
  each: model/ (save_pretrained + processor files + preprocessor_config.json), cases.json and per
  case logits / pixel_values / features (/ pixel_values_videos / video_features) .npy

Images go through transformers' own InternVLProcessor with GotOcr2ImageProcessorPil. The video
processor (InternVLVideoProcessor) has only a torchvision backend and the reference venv has no
torchvision: PyPI's torchvision 0.28.0 for x86-64 (the one for torch 2.13) is the CUDA 13 build,
whose _C.so needs libcudart.so.13, libc10_cuda.so and libtorch_cuda.so, so on torch 2.13.0+cpu
`import torchvision` stops in _meta_registrations ("operator torchvision::nms does not exist");
the CPU build is on PyTorch's own index, which is not reachable here. (Installed with
`pip install --no-deps --target DIR` and that one module replaced by an empty one before the
import, its Python transforms and InternVLVideoProcessor do run on torch's CPU kernels; its
bicubic antialiased resize of a uint8 frame differs from Pillow's by at most 1/255 on 0.2-0.6%
of the samples of the 77x45 photograph at 32 and 24 px.) So a case with a clip runs the
processor's steps here (`expand`): each image's tiles
from the real image processor, `<img>` + image_seq_length·tiles `<IMG_CONTEXT>` + `</img>` per
image and "Frame{i}: <img>…</img>" lines joined by "\\n" per clip (replace_image_token /
replace_video_token), the clip's frames left at their size (they are one tile already, so the
torchvision resize is the identity) and normalised as TorchvisionBackend.rescale_and_normalize
does (mean and std times 1/rescale_factor, float32). For the image-only cases the mirror's ids are
asserted equal to the real processor's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_vlm_fixtures as vlm  # noqa: E402
import transformers  # noqa: E402
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor  # noqa: E402
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil  # noqa: E402

ROOT = vlm.ROOT
OUT = vlm.OUT
PHOTOS = os.path.join(ROOT, "data", "images")

# Modelled on the published template of OpenGVLab/InternVL3-1B-hf.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]


def make_photos() -> None:
    """Crops of the scikit-image photographs, reduced with Pillow's LANCZOS to odd sizes."""
    d = os.path.join(OUT, "images")
    os.makedirs(d, exist_ok=True)

    def crop(name, box, size, mode=None):
        im = Image.open(os.path.join(PHOTOS, name))
        im = im.crop(box).resize(size, Image.LANCZOS)
        return im.convert(mode) if mode else im

    crop("chelsea.png", (40, 20, 400, 230), (77, 45)).save(os.path.join(d, "photo_77x45.png"))
    crop("coffee.png", (100, 0, 400, 400), (39, 53)).save(os.path.join(d, "photo_39x53.png"))
    crop("camera.png", (100, 30, 400, 450), (41, 67)).save(os.path.join(d, "photo_gray_41x67.png"))
    rgba = crop("astronaut.png", (100, 0, 460, 300), (57, 35)).convert("RGBA")
    alpha = np.tile(np.linspace(40, 255, 57).astype(np.uint8), (35, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(os.path.join(d, "photo_rgba_57x35.png"))
    for side in (32, 24):
        os.makedirs(os.path.join(d, f"clip{side}"), exist_ok=True)
        src = Image.open(os.path.join(PHOTOS, "coffee.png"))
        for i in range(4):
            src.crop((150 + 30 * i, 80 + 10 * i, 350 + 30 * i, 280 + 10 * i)).resize(
                (side, side), Image.LANCZOS).save(os.path.join(d, f"clip{side}", f"frame_{i:03d}.png"))


def clip_files(side: int) -> list[str]:
    return [f"images/clip{side}/frame_{i:03d}.png" for i in range(4)]


# The processor refuses a missing video processor while checking its arguments' classes (its
# lookup of video processor classes fails without torchvision); the image-only cross-check needs
# none, so that one check is skipped for it.
_check = transformers.ProcessorMixin.check_argument_for_proper_class


def _check_except_absent_video(self, name, arg):
    return None if name == "video_processor" and arg is None else _check(self, name, arg)


transformers.ProcessorMixin.check_argument_for_proper_class = _check_except_absent_video


def build(base, shape: str) -> dict:
    tok = vlm.family_tokenizer(
        base, SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    if shape == "internvl":
        tile, patch, max_patches, seed = 32, 4, 6, 64
        vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      image_size=[tile, tile], patch_size=[patch, patch], norm_type="layer_norm",
                      use_qk_norm=False, attention_bias=True, use_mean_pooling=True, hidden_act="gelu",
                      layer_norm_eps=1e-6)
        text = dict(model_type="qwen2", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    else:
        tile, patch, max_patches, seed = 24, 3, 4, 62
        vision = dict(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                      image_size=[tile, tile], patch_size=[patch, patch], norm_type="rms_norm",
                      use_qk_norm=True, attention_bias=False, use_mean_pooling=False, hidden_act="gelu",
                      layer_norm_eps=1e-5)
        text = dict(model_type="qwen3", hidden_size=40, intermediate_size=80, num_hidden_layers=2,
                    num_attention_heads=5, num_key_value_heads=1, head_dim=12, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    seq = (tile // patch // 2) ** 2
    text.update(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    ip = GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, min_patches=1, max_patches=max_patches)
    proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=None, image_seq_length=seq,
                             chat_template=INTERNVL_TEMPLATE)
    cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=ids["<IMG_CONTEXT>"],
                         image_seq_length=seq, downsample_ratio=0.5, projector_hidden_act="gelu",
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         tie_word_embeddings=False, attn_implementation="eager")
    q = "What is in this image?"
    cases = [
        dict(name="one_image", images=["images/photo_77x45.png"], messages=vlm.user(vlm.IMG, q)),
        dict(name="gray_and_rgba", images=["images/photo_gray_41x67.png", "images/photo_rgba_57x35.png"],
             messages=vlm.user(vlm.IMG, vlm.IMG, "Compare the two images.")),
        dict(name="image_and_clip", images=["images/photo_39x53.png"], video=clip_files(tile),
             messages=vlm.user(vlm.IMG, vlm.VID, "Describe the image and the video.")),
    ]
    return dict(family="internvl", dir=shape, cls=InternVLForConditionalGeneration, config=cfg, tokenizer=tok,
                image_processor=ip, processor=proc, cases=cases, seed=seed, tile=tile, seq=seq)


def expand(fam: dict, prompt: str, images: list, frames: list | None) -> dict:
    """InternVLProcessor's steps for a prompt with images and at most one clip (module docstring)."""
    ip, tok, seq = fam["image_processor"], fam["tokenizer"], fam["seq"]
    out = {}
    tiles = []
    if images:
        enc = ip(images=images, crop_to_patches=True, return_tensors="pt")
        counts = enc["num_patches"].tolist() if hasattr(enc["num_patches"], "tolist") else enc["num_patches"]
        out["pixel_values"] = enc["pixel_values"]
        starts = np.cumsum([0] + counts)
        tiles = [enc["pixel_values"][starts[i]:starts[i + 1]] for i in range(len(counts))]
    if frames:
        v = torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in frames])).permute(0, 3, 1, 2)
        assert v.shape[2:] == (fam["tile"], fam["tile"]), "clip frames must be one tile (no resize)"
        mean = torch.tensor(OPENAI_CLIP_MEAN) * (1.0 / ip.rescale_factor)
        std = torch.tensor(OPENAI_CLIP_STD) * (1.0 / ip.rescale_factor)
        out["pixel_values_videos"] = (v.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    pieces, order, i = [], [], 0
    for part in prompt.replace("<video>", "\0<video>\0").replace("<IMG_CONTEXT>", "\0<IMG_CONTEXT>\0").split("\0"):
        if part == "<IMG_CONTEXT>":
            pieces.append("<img>" + "<IMG_CONTEXT>" * seq * len(tiles[i]) + "</img>")
            order.append(tiles[i])
            i += 1
        elif part == "<video>":
            pieces.append("\n".join(f"Frame{k + 1}: <img>" + "<IMG_CONTEXT>" * seq + "</img>"
                                    for k in range(len(frames))))
            order.append(out["pixel_values_videos"])
        else:
            pieces.append(part)
    enc = tok(["".join(pieces)], return_tensors="pt")
    out.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    out["model_pixel_values"] = torch.cat(order, 0) if order else None
    return out


def features(model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        r = model.model.get_image_features(pixel_values=pixels, vision_feature_layer=-1,
                                           vision_feature_select_strategy="default", return_dict=True)
    return r.pooler_output.reshape(-1, r.pooler_output.shape[-1])


def run(fam: dict) -> None:
    """Writes the family's folder and cases; seeds are tried in turn until every case's top-2 gaps
    are wide enough (returns False when none of them is)."""
    first = fam["seed"]
    for attempt in range(12):
        fam["seed"] = first + 1000 * attempt
        if run_seed(fam):
            return True
        print(f"{fam['dir']}: seed {fam['seed']} rejected")
    return False


def run_seed(fam: dict) -> bool:
    out_dir = os.path.join(OUT, fam["dir"])
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(fam["seed"])
    model = fam["cls"](fam["config"]).eval()
    # gen_vlm_fixtures.randomize refuses 1-D parameters it does not know: the layer scales are
    # set aside while it runs, then drawn around 1 (the init's 0.1 would hide the blocks).
    layers = list(model.model.vision_tower.encoder.layer)
    scales = [(layer, k, layer._parameters.pop(k)) for layer in layers for k in ("lambda_1", "lambda_2")]
    vlm.randomize(model, fam["seed"])
    g = torch.Generator().manual_seed(fam["seed"] + 1)
    with torch.no_grad():
        for layer, k, p in scales:
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            layer.register_parameter(k, p)
        # Logits three times as spread, so that over prompts of 100-300 positions the top two
        # stay apart by MIN_GAP (argmax is compared at every position).
        model.lm_head.weight.mul_(3)
    folder = os.path.join(out_dir, "model")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    # What InternVLProcessor.save_pretrained writes, less the (absent) video processor.
    fam["tokenizer"].save_pretrained(folder)
    with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(INTERNVL_TEMPLATE)
    with open(os.path.join(folder, "processor_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"image_processor": fam["image_processor"].to_dict(), "image_seq_length": fam["seq"],
                            "processor_class": "InternVLProcessor"}, indent=2, sort_keys=True) + "\n")
    fam["image_processor"].save_pretrained(folder)
    tok = fam["tokenizer"]
    image_id = model.config.image_token_id
    cases_json = []
    for case in fam["cases"]:
        prompt = tok.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True,
                                         chat_template=INTERNVL_TEMPLATE)
        images = [vlm.load_image(f) for f in case["images"]]
        frames = [vlm.load_image(f) for f in case["video"]] if "video" in case else None
        enc = expand(fam, prompt, images, frames)
        if frames is None:  # the mirror against transformers' own processor
            real = fam["processor"](text=[prompt], images=images, return_tensors="pt")
            assert real["input_ids"].tolist() == enc["input_ids"].tolist(), "mirror ids differ"
            assert torch.equal(real["pixel_values"], enc["pixel_values"]), "mirror pixels differ"
        ids = enc["input_ids"][0]
        inputs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                      pixel_values=enc["model_pixel_values"])
        with torch.no_grad():
            logits = model(**inputs).logits[0].numpy().astype(np.float32)
        feats = {k: features(model, enc[p]) for k, p in (("features", "pixel_values"),
                                                        ("video_features", "pixel_values_videos")) if p in enc}
        assert sum(len(f) for f in feats.values()) == int((ids == image_id).sum())
        top2 = np.sort(logits, axis=1)[:, -2:]
        gap_all = float((top2[:, 1] - top2[:, 0]).min())
        cont = vlm.greedy(model, inputs, vlm.GREEDY)
        cont2, gap = vlm.greedy_by_recompute(model, inputs, vlm.GREEDY)
        assert cont == cont2, (cont, cont2)
        if image_id in cont or min(gap, gap_all) < vlm.MIN_GAP:
            print(f"{fam['dir']}/{case['name']}: gap {min(gap, gap_all):.2e} / {cont}")
            return False
        prefix = os.path.join(out_dir, case["name"])
        files = {"logits": f"{case['name']}.logits.npy"}
        vlm.save_npy(prefix + ".logits.npy", logits)
        for key in ("pixel_values", "pixel_values_videos"):
            if key in enc:
                vlm.save_npy(f"{prefix}.{key}.npy", enc[key])
                files[key] = f"{case['name']}.{key}.npy"
        for key, v in feats.items():
            vlm.save_npy(f"{prefix}.{key}.npy", v)
            files[key] = f"{case['name']}.{key}.npy"
        entry = dict(name=case["name"], messages=case["messages"], prompt=prompt, images=case["images"],
                     input_ids=ids.tolist(), seq_len=len(ids), files=files,
                     num_image_tokens=int((ids == image_id).sum()),
                     argmax=logits.argmax(axis=1).tolist(), greedy=cont, min_top2_gap=gap_all,
                     min_top2_gap_greedy=gap)
        if "video" in case:
            entry["video_frames"] = case["video"]
        if "pixel_values" in enc:
            entry["pixel_values_shape"] = list(enc["pixel_values"].shape)
        cases_json.append(entry)
        print(f"{fam['dir']}/{case['name']}: {len(ids)} tokens, "
              f"{entry.get('pixel_values_shape', [0])[0]} image tiles, gap {min(gap, gap_all):.3f}, greedy {cont}")
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
    manifest = dict(transformers=transformers.__version__, torch=torch.__version__, family="internvl",
                    architecture="InternVLForConditionalGeneration", model_dir="model", tensors=names,
                    vocab_size=len(tok), cases=cases_json)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        f.write(vlm.dumps(manifest) + "\n")
    return True


def main() -> int:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    make_photos()
    base = vlm.train_base_tokenizer()
    for shape in sys.argv[1:] or ["internvl", "internvl_qwen3"]:
        if not run(build(base, shape)):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

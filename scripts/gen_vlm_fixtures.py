#!/usr/bin/env python3
"""Tiny random vision-language models (Idefics3 / LLaVA / Qwen2-VL / Qwen2.5-VL) with transformers golden
outputs.

Run with the reference venv (docs/correctness.md), from the repository root (about a minute on 2 cores):

    .venv-ref/bin/python scripts/gen_vlm_fixtures.py [FOLDER ...]

FOLDER names the fixture folders to (re)write (idefics3, llava, llava_saved_layout, qwen2_vl, qwen2_5_vl,
qwen2_5_vl_wide); all of them by default. llava_saved_layout is a smaller LLaVA left in the layout
transformers 5.24 saves a model built from a config in (`vision_tower.embeddings.*`, no
`vision_model.`), where the llava folder is renamed to the published layout.

Writes Tests/KVEngineTests/Fixtures/vlm/:

  images/*.png, images/clip/frame_00N.png
                       small deterministic RGB test images ("photo-like": smooth structure plus
                       noise) and a 4-frame clip; the processors are fed exactly these files,
                       opened with PIL.
  <family>/model/      a Hugging Face folder as transformers 5.24.0 writes it: config.json,
                       generation_config.json, model.safetensors (fp32, model.save_pretrained's
                       tensor names; LLaVA's CLIP tower renamed to the published
                       `vision_tower.vision_model.*`, see PUBLISHED_PREFIXES), tokenizer.json,
                       tokenizer_config.json, chat_template.jinja and processor_config.json
                       (processor.save_pretrained: the v5 layout, sub-processors nested), plus
                       preprocessor_config.json (image_processor.save_pretrained: the classic file
                       that published checkpoints carry).
  <family>/<case>.*.npy
                       float32 little-endian, C order:
                         logits          [seq][vocab], every position of the prompt
                         pixel_values    exactly the processor's pixel_values
                         features        [image tokens][text hidden]: connector / projector /
                                         merger output, the rows scattered over the image tokens
                         vision          the vision encoder's output before the connector (not
                                         written for qwen2_5_vl, whose blocks' output is in window
                                         order; its merger output is)
                                         (idefics3: post_layernorm last_hidden_state [tiles][16][32];
                                         llava: hidden_states[vision_feature_layer], CLS kept,
                                         [images][17][32]; qwen2_vl: the blocks' output before the
                                         merger, [patches][32])
                         pixel_values_videos / video_features / video_vision: the same for video
  <family>/cases.json  per case: prompt (the exact string given to the processor, rendered from
                       `messages` with the folder's chat template), images, processor kwargs,
                       input_ids, the other processor outputs, argmax per position, an 8-token
                       greedy continuation (model.generate, do_sample=False, EOS disabled so it
                       always has 8 tokens; checked against greedy by full recomputation), the
                       smallest top-1/top-2 logit gap (>= MIN_GAP everywhere: seeds are picked so),
                       and for qwen2_vl / qwen2_5_vl the M-RoPE position ids (3 x seq) and rope_deltas
                       of model.model.get_rope_index (qwen2_5_vl: with the processor's
                       second_per_grid_ts, and the clip's video_fps when the case gives one), and
                       where they differ from greedy, greedy_rope_deltas: the 8 tokens a bare forward
                       with a cache decodes (at rope_deltas, past the prompt's largest position, where
                       generate continues from its last).

Qwen2.5-VL: two shapes (build_qwen2_5_vl: qwen2_5_vl and qwen2_5_vl_wide) with windows that split the
test images, full-attention blocks other than 0 alone, and clips at transformers' default frame rate
(frames given as a list: VideoMetadata.sampled_fps falls back to 24), at 3 fps and at 0.5 fps
(video_metadata with fps), which spaces the clip's temporal positions by tokens_per_second *
temporal_patch_size / fps; at 0.5 fps they pass the closing text's, where generate (which continues
from the prompt's last position) and a bare forward with a cache (rope_deltas: past the largest)
part.

Checks on the way: the connector rows equal the decoder's input embeddings at the placeholder
tokens; tokenizer.json alone re-encodes the expanded prompt to the same ids; the saved folder,
reloaded with from_pretrained (model and processor), reproduces ids, pixels and logits bit for bit.

Models: llama-style text decoders (hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128), vision
towers with hidden 32, every parameter drawn at random (norm weights around 1, non-zero biases,
random class / position embeddings) so that every term of the forward matters. Eager attention.

One byte-level BPE (ByteLevel pre-tokenizer, add_prefix_space false; ByteLevel decoder; no
post-processing beyond an empty TemplateProcessing: no BOS) is trained here on a small built-in
English corpus; each family adds its special tokens as special added tokens.

Qwen2-VL / Qwen2.5-VL video: transformers' Qwen2VLVideoProcessor (and with it Qwen2VLProcessor and
Qwen2_5_VLProcessor) needs torchvision,
and PyPI has no CPU torchvision for x86-64, so the reference venv has none. Without torchvision this
script runs the Qwen2-VL processor steps itself, mirroring transformers 5.24.0 line by line (see
`Qwen2VLMirror`): the real Qwen2VLImageProcessorPil for images, the video processor's uint8 ->
float32 fused normalisation and patchify (the clip's frames are already a multiple of
patch_size * merge_size and within min/max_pixels, so smart_resize keeps their size and no
torchvision resize is involved; asserted), the processor's placeholder expansion and
mm_token_type_ids. When torchvision imports, the real Qwen2VLProcessor is run as well and every
output (and processor_config.json) must be identical.

Deterministic: fixed seeds; re-running reproduces the same files (checked byte for byte).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer

import transformers
from transformers import (
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.image_utils import PILImageResampling as R
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.utils import is_torchvision_available

from vlm_common import SMOLVLM_TEMPLATE, byte_level_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "vlm")
IMAGES = os.path.join(OUT, "images")
GREEDY = 8
MIN_GAP = 2e-3  # smallest acceptable top-1/top-2 logit gap, any position and the greedy path
                # (argmax is compared everywhere; the Swift logit tolerance is 1e-4)

# ---------------------------------------------------------------------------------------------
# Test images


def photo(rng: np.random.Generator, h: int, w: int, shift: float = 0.0, noise: float = 18.0) -> np.ndarray:
    """scripts/gen_image_fixtures.py's photo(): smooth structure plus noise (shift moves it, for
    the clip's frames)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x = x + shift
    planes = [
        127 + 100 * np.sin(x / 5.0 + c) * np.cos(y / 7.0 - c) + 40 * ((x + 2 * y + 9 * c) % 17 > 8)
        for c in range(3)
    ]
    img = np.stack(planes, -1) + rng.normal(0, noise, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


IMAGE_SIZES = [(70, 40), (40, 70), (45, 61), (33, 33), (90, 20)]  # width x height
CLIP_SIZE, CLIP_FRAMES = (32, 24), 4  # width x height: a multiple of 8 and 256 <= 768 <= 1024 pixels


def make_images() -> None:
    rng = np.random.default_rng(20260601)
    os.makedirs(os.path.join(IMAGES, "clip"), exist_ok=True)
    for w, h in IMAGE_SIZES:
        Image.fromarray(photo(rng, h, w)).save(os.path.join(IMAGES, f"img_{w}x{h}.png"))
    w, h = CLIP_SIZE
    for i in range(CLIP_FRAMES):
        Image.fromarray(photo(rng, h, w, shift=3.0 * i, noise=10.0)).save(
            os.path.join(IMAGES, "clip", f"frame_{i:03d}.png"))


def load_image(rel: str) -> Image.Image:
    im = Image.open(os.path.join(OUT, rel))
    im.load()
    return im


def clip_files() -> list[str]:
    return [f"images/clip/frame_{i:03d}.png" for i in range(CLIP_FRAMES)]


# ---------------------------------------------------------------------------------------------
# Tokenizer

CORPUS = """\
The quick brown fox jumps over the lazy dog. What is this? What is in this image? Describe the
image in one sentence. This is a picture of a cat sitting on a red chair next to the window.
There are two dogs playing in the park, and a man is reading a book under a tall tree.
User: What do you see? Assistant: I see a small house with a green door and white walls.
USER: Describe the photo. ASSISTANT: The photo shows a busy street in the city at night.
You are a helpful assistant. Please answer the question about the image and the video.
Compare the two images. The first image is bright and the second image is dark.
The video shows a ball rolling from the left side to the right side of the table.
A person is holding a cup of coffee. The sky is blue and the sun is shining over the sea.
What color is the car? The car is red. How many people are there? There are three people.
Is there a bird in the picture? Yes, there is a small bird on the branch of the tree.
"""


def train_base_tokenizer() -> Tokenizer:
    lines = [ln for ln in CORPUS.splitlines() if ln]
    return byte_level_bpe(lines * 4, vocab_size=360, min_frequency=2)


def family_tokenizer(base: Tokenizer, specials: list[str], **named) -> PreTrainedTokenizerFast:
    tok = Tokenizer.from_str(base.to_str())
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


# Modelled on the published templates (llava-hf/llava-1.5-7b-hf, Qwen/Qwen2-VL-2B-Instruct; SmolVLM's
# is in vlm_common.py).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def user(*parts) -> list[dict]:
    content = []
    for p in parts:
        content.append({"type": "text", "text": p} if isinstance(p, str) else p)
    return [{"role": "user", "content": content}]


IMG = {"type": "image"}
VID = {"type": "video"}


# ---------------------------------------------------------------------------------------------
# Random weights


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter at random with enough spread that it matters (transformers' init is std 0.02
    with zero biases and unit norms): norm weights 1 + 0.2 N, biases 0.2 N (LayerNorm) / 0.5 N
    (linear, conv), embeddings 0.3 N (tokens) / 0.5 N (position, class), linear and conv
    weights N * 1.5 / sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.LayerNorm,) + tuple(
        type(m) for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    kinds = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            kinds[f"{mname}.{pname}" if mname else pname] = m
    with torch.no_grad():
        for name, p in model.named_parameters():
            m = kinds[name]
            last = name.rsplit(".", 1)[-1]
            if isinstance(m, norms):
                p.copy_((1 + 0.2 * torch.randn(p.shape, generator=g)) if last == "weight"
                        else 0.2 * torch.randn(p.shape, generator=g))
            elif isinstance(m, torch.nn.Embedding):
                std = 0.3 if "embed_tokens" in name else 0.5
                p.copy_(std * torch.randn(p.shape, generator=g))
            elif last == "class_embedding":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif last == "bias":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                assert p.dim() >= 2, name
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))


# ---------------------------------------------------------------------------------------------
# Qwen2-VL processor steps (mirrors transformers 5.24.0; see the module docstring)


class Qwen2VLMirror:
    """Qwen2VLProcessor.__call__ for text + images + one video, without torchvision.

    - images: the real Qwen2VLImageProcessorPil (image_processing_pil_qwen2_vl.py).
    - video: Qwen2VLVideoProcessor (video_processing_qwen2_vl.py) with do_sample_frames False:
      frames stacked (T, H, W, 3) uint8 -> (T, 3, H, W); resize via smart_resize(factor =
      patch_size * merge_size) -- asserted to keep the size; TorchvisionBackend.rescale_and_normalize
      (image_processing_backends.py:329-365): mean and std multiplied by 1 / rescale_factor in
      float32, then (x.float() - mean) / std (torchvision normalize); patchify (lines 275-313):
      pad T to a multiple of temporal_patch_size by repeating the last frame, view (gt, tp, C,
      gh/m, m, p, gw/m, m, p), permute (gt, gh/m, gw/m, m, m, C, tp, p, p).
    - text: ProcessorMixin.get_text_with_replacements (processing_utils.py:891-980): each
      <|image_pad|> / <|video_pad|>, in order, becomes grid_thw.prod() // merge_size**2 copies;
      create_mm_token_type_ids (processing_utils.py:996-1026): 1 for the image pad id, 2 for the
      video pad id, else 0.
    """

    VIDEO_PROCESSOR_DICT = {  # Qwen2VLVideoProcessor(**VIDEO_KWARGS).to_dict(), checked when torchvision imports
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "do_sample_frames": False, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "max_frames": 768, "max_video_tokens": 128000,
        "merge_size": 2, "min_frames": 4, "patch_size": 4, "resample": 3,
        "rescale_factor": 0.00392156862745098, "return_metadata": False,
        "size": {"longest_edge": 1024, "shortest_edge": 256}, "temporal_patch_size": 2,
        "video_processor_type": "Qwen2VLVideoProcessor",
    }

    def __init__(self, image_processor: Qwen2VLImageProcessorPil, tokenizer, chat_template: str,
                 processor_class: str = "Qwen2VLProcessor"):
        self.processor_class = processor_class
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    def video(self, frames: list[Image.Image]) -> dict:
        c = self.VIDEO_PROCESSOR_DICT
        p, m, tp = c["patch_size"], c["merge_size"], c["temporal_patch_size"]
        v = torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in frames])).permute(0, 3, 1, 2)
        t, ch, h, w = v.shape
        assert smart_resize(h, w, factor=p * m, min_pixels=c["size"]["shortest_edge"],
                            max_pixels=c["size"]["longest_edge"]) == (h, w), "clip frames would be resized"
        mean = torch.tensor(c["image_mean"]) * (1.0 / c["rescale_factor"])
        std = torch.tensor(c["image_std"]) * (1.0 / c["rescale_factor"])
        v = (v.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        if pad := -t % tp:
            v = torch.cat([v, v[-1:].expand(pad, -1, -1, -1)], 0)
            t += pad
        gt, gh, gw = t // tp, h // p, w // p
        x = v.view(gt, tp, ch, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return {"pixel_values_videos": x.reshape(gt * gh * gw, ch * tp * p * p),
                "video_grid_thw": torch.tensor([[gt, gh, gw]])}

    def __call__(self, text: str, images: list[Image.Image] | None, videos: list[list[Image.Image]] | None,
                 fps: float | None = None) -> dict:
        out = {}
        if images:
            out.update(self.image_processor(images=images, return_tensors="pt"))
        if videos:
            assert len(videos) == 1
            out.update(self.video(videos[0]))
            if self.processor_class == "Qwen2_5_VLProcessor":
                # Qwen2_5_VLProcessor._process_videos: temporal_patch_size / VideoMetadata.sampled_fps,
                # which is the metadata's fps, or 24 when none is given (a list of frames); BatchFeature
                # makes the list a float32 tensor.
                tp = self.VIDEO_PROCESSOR_DICT["temporal_patch_size"]
                out["second_per_grid_ts"] = torch.tensor([tp / (fps if fps is not None else 24)])
        merge = self.image_processor.merge_size ** 2
        counts = {self.image_token: iter([int(g.prod()) // merge for g in out.get("image_grid_thw", [])]),
                  self.video_token: iter([int(g.prod()) // merge for g in out.get("video_grid_thw", [])])}
        pattern = "|".join(re.escape(t) for t in (self.image_token, self.video_token))
        expanded = re.sub(pattern, lambda mt: mt.group() * next(counts[mt.group()]), text)
        enc = self.tokenizer([expanded], return_tensors="pt")
        ids = enc["input_ids"]
        mm = torch.zeros_like(ids)
        mm[ids == self.image_token_id] = 1
        mm[ids == self.video_token_id] = 2
        return {"input_ids": ids, "attention_mask": enc["attention_mask"], "mm_token_type_ids": mm, **out}

    def processor_dict(self) -> dict:
        """ProcessorMixin.to_dict (processing_utils.py:1095-1150) of Qwen2VLProcessor."""
        return {"image_processor": self.image_processor.to_dict(), "processor_class": self.processor_class,
                "video_processor": dict(self.VIDEO_PROCESSOR_DICT)}

    def save_pretrained(self, folder: str) -> None:
        """What Qwen2VLProcessor.save_pretrained writes: tokenizer files, chat_template.jinja and
        processor_config.json (json.dumps(indent=2, sort_keys=True) + newline)."""
        self.tokenizer._set_processor_class(self.processor_class)
        self.tokenizer.save_pretrained(folder)
        with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(self.chat_template)
        with open(os.path.join(folder, "processor_config.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.processor_dict(), indent=2, sort_keys=True) + "\n")


QWEN_VIDEO_KWARGS = dict(min_pixels=256, max_pixels=1024, patch_size=4, merge_size=2, temporal_patch_size=2)


def real_qwen2vl_processor(image_processor, tokenizer, chat_template, processor_class="Qwen2VLProcessor"):
    """transformers' own Qwen2VLProcessor (or Qwen2_5_VLProcessor), when torchvision imports (see the
    module docstring)."""
    if not is_torchvision_available():
        return None
    try:
        import transformers as tf
        vp = tf.Qwen2VLVideoProcessor(**QWEN_VIDEO_KWARGS)
    except Exception as e:  # noqa: BLE001 - an optional cross-check
        print(f"{processor_class}: torchvision present but the video processor fails ({type(e).__name__}: {e});"
              " mirror only")
        return None
    return getattr(tf, processor_class)(image_processor=image_processor, tokenizer=tokenizer, video_processor=vp,
                                        chat_template=chat_template)


# ---------------------------------------------------------------------------------------------
# Families


def build_idefics3(base: Tokenizer) -> dict:
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<global-img>",
                "<end_of_utterance>"] + rows
    tok = family_tokenizer(base, specials, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                           pad_token="<|im_end|>")
    ip = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 96},
                                   max_image_size={"longest_edge": 32}, resample=R.LANCZOS,
                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=SMOLVLM_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=1024,
                         bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"],
                         pad_token_id=ids["<|im_end|>"], tie_word_embeddings=False),
        scale_factor=2, image_token_id=ids["<image>"], tie_word_embeddings=False,
        pad_token_id=ids["<|im_end|>"], attn_implementation="eager")
    q = "What is in this image?"
    cases = [
        dict(name="one_image_split", images=["images/img_70x40.png"], messages=user(IMG, q), kwargs={}),
        dict(name="two_images", images=["images/img_40x70.png", "images/img_90x20.png"],
             messages=user(IMG, IMG, "Compare the two images."), kwargs={}),
        dict(name="one_image_nosplit", images=["images/img_45x61.png"], messages=user(IMG, q),
             kwargs={"do_image_splitting": False}),
    ]
    return dict(family="idefics3", cls=Idefics3ForConditionalGeneration, config=cfg, tokenizer=tok,
                image_processor=ip, processor=proc, cases=cases, seed=31)


def build_llava(base: Tokenizer, saved_layout: bool = False) -> dict:
    """saved_layout: a smaller LLaVA kept in the layout transformers 5.24 saves a model built from a
    config in (`model.vision_tower.embeddings.*`, no `vision_model.`), one case."""
    tok = family_tokenizer(base, ["<image>"])
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                               resample=R.BICUBIC, do_center_crop=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    image_id = tok.convert_tokens_to_ids("<image>")
    vw, tw = (16, 32) if saved_layout else (32, 64)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=vw, intermediate_size=2 * vw,
                           num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=vw),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=tw, intermediate_size=2 * tw,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=1024,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False),
        image_token_index=image_id, image_seq_length=16, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-2, multimodal_projector_bias=True,
        tie_word_embeddings=False, attn_implementation="eager")
    cases = [
        dict(name="one_image", images=["images/img_70x40.png"], messages=user(IMG, "What is in this image?"),
             kwargs={}),
        dict(name="two_images", images=["images/img_45x61.png", "images/img_33x33.png"],
             messages=user(IMG, IMG, "Compare the two images."), kwargs={}),
    ]
    if saved_layout:
        return dict(family="llava", dir="llava_saved_layout", renames=[], cls=LlavaForConditionalGeneration,
                    config=cfg, tokenizer=tok, image_processor=ip, processor=proc, cases=cases[:1], seed=35)
    return dict(family="llava", cls=LlavaForConditionalGeneration, config=cfg, tokenizer=tok,
                image_processor=ip, processor=proc, cases=cases, seed=32)


def build_qwen2_vl(base: Tokenizer) -> dict:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = family_tokenizer(base, specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    ip = Qwen2VLImageProcessorPil(min_pixels=256, max_pixels=1024, patch_size=4, merge_size=2, temporal_patch_size=2)
    proc = Qwen2VLMirror(ip, tok, QWEN2VL_TEMPLATE)
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3, hidden_act="quick_gelu"),
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                         max_position_embeddings=1024, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, attn_implementation="eager")
    cases = [
        dict(name="one_image", images=["images/img_45x61.png"], messages=user(IMG, "What is in this image?"),
             kwargs={}),
        dict(name="two_images", images=["images/img_70x40.png", "images/img_33x33.png"],
             messages=user(IMG, IMG, "Compare the two images."), kwargs={}),
        dict(name="video", video=clip_files(), messages=user(VID, "What happens in the video?"), kwargs={}),
        dict(name="image_and_video", images=["images/img_90x20.png"], video=clip_files(),
             messages=user(IMG, VID, "Describe the image and the video."), kwargs={}),
    ]
    return dict(family="qwen2_vl", cls=Qwen2VLForConditionalGeneration, config=cfg, tokenizer=tok,
                image_processor=ip, processor=proc, cases=cases, seed=35)


def build_qwen2_5_vl(base: Tokenizer, variant: str) -> dict:
    """Two Qwen2.5-VL shapes, kept small (the fixtures are committed). "small": vision width 16 in
    2 heads of 8, 3 blocks, windows of 2×2 merged units (16 px), full attention in block 1; decoder
    32 wide, 2 layers, 4 heads of 8 over 2 KV heads. "wide": vision width 24 in 3 heads of 8, 3
    blocks, windows of 3×3 units (24 px), full attention in blocks 0 and 2; decoder 48 wide, 1
    layer, 4 heads of 12 over 1 KV head; larger images. The test images' grids (3-6 units a side)
    split into several windows, some cut short."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = family_tokenizer(base, specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    small = variant == "small"
    ip = Qwen2VLImageProcessorPil(min_pixels=256, max_pixels=1024 if small else 2304, patch_size=4, merge_size=2,
                                  temporal_patch_size=2)
    proc = Qwen2VLMirror(ip, tok, QWEN2VL_TEMPLATE, "Qwen2_5_VLProcessor")
    vision = (dict(depth=3, hidden_size=16, intermediate_size=24, num_heads=2, window_size=16, fullatt_block_indexes=[1],
                   tokens_per_second=2)
              if small else
              dict(depth=3, hidden_size=24, intermediate_size=32, num_heads=3, window_size=24,
                   fullatt_block_indexes=[0, 2], tokens_per_second=4))
    text = (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, mrope_section=[1, 1, 2])
            if small else
            dict(hidden_size=48, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=1, mrope_section=[2, 2, 2]))
    cfg = Qwen2_5_VLConfig(
        vision_config=dict(vision, out_hidden_size=text["hidden_size"], patch_size=4, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3, hidden_act="silu"),
        text_config=dict(vocab_size=len(tok), hidden_size=text["hidden_size"],
                         intermediate_size=text["intermediate_size"], num_hidden_layers=text["num_hidden_layers"],
                         num_attention_heads=text["num_attention_heads"],
                         num_key_value_heads=text["num_key_value_heads"], rms_norm_eps=1e-6,
                         max_position_embeddings=1024, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": text["mrope_section"]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         tie_word_embeddings=True),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, attn_implementation="eager")
    if small:
        cases = [
            dict(name="one_image", images=["images/img_45x61.png"], messages=user(IMG, "What is in this image?"),
                 kwargs={}),
            dict(name="two_images", images=["images/img_70x40.png", "images/img_33x33.png"],
                 messages=user(IMG, IMG, "Compare the two images."), kwargs={}),
            # no frame rate given: transformers' 24 fps, temporal positions ⌊t·2·2/24⌋ = 0, 0
            dict(name="video", video=clip_files(), messages=user(VID, "What happens in the video?"), kwargs={}),
            # the clip forward then back (4 temporal patches) at 0.5 fps: positions ⌊t·2·4⌋ = 0, 8,
            # 16, 24 reach past the closing text's, so generate (from the prompt's last position)
            # and rope_deltas (past the largest) continue differently
            dict(name="video_half_fps", video=clip_files() + clip_files()[::-1], video_fps=0.5,
                 messages=user(VID, "Describe the clip."), kwargs={}),
        ]
    else:
        cases = [
            # 3 fps: 2/3 s per temporal patch, 4 tokens per second: positions ⌊t·8/3⌋ = 0, 2
            dict(name="image_and_video_3fps", images=["images/img_45x61.png"], video=clip_files(), video_fps=3.0,
                 messages=user(IMG, VID, "Describe the image and the video."), kwargs={}),
        ]
    return dict(family="qwen2_5_vl", dir="qwen2_5_vl" if small else "qwen2_5_vl_wide",
                cls=Qwen2_5_VLForConditionalGeneration, config=cfg, tokenizer=tok, image_processor=ip,
                processor=proc, cases=cases, seed=52 if small else 53)


# ---------------------------------------------------------------------------------------------
# Running a case


def run_processor(fam: dict, proc, case: dict, prompt: str) -> dict:
    images = [load_image(f) for f in case.get("images", [])]
    if fam["family"] in QWEN_FAMILIES:
        videos = [[load_image(f) for f in case["video"]]] if "video" in case else None
        fps = case.get("video_fps")
        if isinstance(proc, Qwen2VLMirror):
            return proc(prompt, images or None, videos, fps)
        meta = None if fps is None or videos is None else [
            {"total_num_frames": len(videos[0]), "fps": fps, "frames_indices": list(range(len(videos[0])))}]
        return dict(proc(text=[prompt], images=images or None, videos=videos, video_metadata=meta,
                         return_tensors="pt"))
    return dict(proc(text=[prompt], images=images, return_tensors="pt", **case["kwargs"]))


QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def model_inputs(enc: dict) -> dict:
    return {k: v for k, v in enc.items() if k not in ("text_replacement_offsets",)}


def vision_outputs(fam: dict, model, enc: dict) -> dict:
    """The vision encoder's output and the connector's (the rows the model scatters over the
    placeholder tokens), per modality."""
    out = {}
    with torch.no_grad():
        if fam["family"] == "idefics3":
            r = model.model.get_image_features(enc["pixel_values"], enc["pixel_attention_mask"])
            out["vision"] = r.last_hidden_state
            out["features"] = torch.cat(r.pooler_output, 0)
        elif fam["family"] == "llava":
            cfg = model.config
            r = model.model.get_image_features(enc["pixel_values"], vision_feature_layer=cfg.vision_feature_layer,
                                               vision_feature_select_strategy=cfg.vision_feature_select_strategy)
            out["vision"] = r.hidden_states[cfg.vision_feature_layer]
            out["features"] = torch.cat(list(r.pooler_output), 0)
        else:
            if "pixel_values" in enc:
                r = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
                out["vision"] = r.last_hidden_state
                out["features"] = torch.cat(r.pooler_output, 0)
            if "pixel_values_videos" in enc:
                r = model.model.get_video_features(enc["pixel_values_videos"], enc["video_grid_thw"])
                out["video_vision"] = r.last_hidden_state
                out["video_features"] = torch.cat(r.pooler_output, 0)
    return out


def captured_embeds(model, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs_embeds as they enter the text decoder, and the logits, from one forward."""
    lm = model.model.text_model if hasattr(model.model, "text_model") else model.model.language_model
    seen = {}

    def hook(_mod, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    h = lm.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(**model_inputs(enc)).logits[0]
    finally:
        h.remove()
    return seen["embeds"][0], logits


def greedy(model, enc: dict, n: int) -> list[int]:
    """model.generate, greedy, EOS disabled (exactly n tokens)."""
    gc = GenerationConfig(max_new_tokens=n, min_new_tokens=0, do_sample=False, eos_token_id=None,
                          pad_token_id=0, bos_token_id=None)
    with torch.no_grad():
        out = model.generate(**model_inputs(enc), generation_config=gc)
    seq = enc["input_ids"].shape[1]
    return out[0, seq:].tolist()


def greedy_by_recompute(model, enc: dict, n: int) -> tuple[list[int], float]:
    """n greedy tokens by full recomputation (no cache), and the smallest top-2 gap on the way."""
    e = dict(model_inputs(enc))
    toks, gap = [], float("inf")
    with torch.no_grad():
        for _ in range(n):
            last = model(**e).logits[0, -1].double()
            top2 = torch.topk(last, 2).values
            gap = min(gap, float(top2[0] - top2[1]))
            t = int(last.argmax())
            toks.append(t)
            one = torch.tensor([[t]])
            e["input_ids"] = torch.cat([e["input_ids"], one], 1)
            e["attention_mask"] = torch.cat([e["attention_mask"], torch.ones_like(one)], 1)
            if "mm_token_type_ids" in e:
                e["mm_token_type_ids"] = torch.cat([e["mm_token_type_ids"], torch.zeros_like(one)], 1)
    return toks, gap


def greedy_rope_deltas(model, enc: dict, n: int) -> list[int]:
    """n greedy tokens from forwards over a cache given no positions (M-RoPE: each new token at its
    index plus get_rope_index's rope_deltas, so from one past the prompt's largest position). generate() instead continues from the prompt's last position (its position ids
    grow by one a step); the two differ once a slow clip's temporal positions pass the text
    after it."""
    with torch.no_grad():
        out = model(**model_inputs(enc), use_cache=True)
        toks = [int(out.logits[0, -1].argmax())]
        for _ in range(n - 1):
            out = model(input_ids=torch.tensor([[toks[-1]]]), cache=out.cache, use_cache=True)
            toks.append(int(out.logits[0, -1].argmax()))
    return toks


def dumps(obj) -> str:
    """json.dumps(indent=1) with every list of plain numbers on one line."""
    s = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]",
               lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
               json.dumps(obj, indent=1))
    assert json.loads(s) == obj  # (no string was touched)
    return s


def save_npy(path: str, a: torch.Tensor | np.ndarray) -> None:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    np.save(path, np.ascontiguousarray(a, dtype="<f4"))


# ---------------------------------------------------------------------------------------------


# Tensor-name prefixes of the published checkpoints where transformers 5.24 writes others for a model
# built from a config: a LLaVA's CLIP tower saves as `vision_tower.*`, while llava-hf checkpoints (and
# 5.24's own save of a model loaded from one) have `vision_tower.vision_model.*`. Both load the same.
PUBLISHED_PREFIXES = {"llava": [("vision_tower.", "vision_tower.vision_model.")]}


def save_folder(fam: dict, model, folder: str) -> None:
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if renames := fam.get("renames", PUBLISHED_PREFIXES.get(fam["family"])):
        path = os.path.join(folder, "model.safetensors")
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for old, new in renames:
            tensors = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in tensors.items()}
        save_file(tensors, path, metadata=meta)
    fam["processor"].save_pretrained(folder)
    fam["image_processor"].save_pretrained(folder)  # preprocessor_config.json, the classic file


def reload_and_check(fam: dict, folder: str, expected: dict) -> None:
    """from_pretrained on the saved folder (model, and processor or its parts) reproduces every
    case's input_ids, pixel_values and logits bit for bit."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
    assert type(model) is fam["cls"], type(model)
    if fam["family"] in QWEN_FAMILIES and not is_torchvision_available():
        tok = AutoTokenizer.from_pretrained(folder)
        ip = Qwen2VLImageProcessorPil.from_pretrained(folder)
        with open(os.path.join(folder, "chat_template.jinja")) as f:
            proc = Qwen2VLMirror(ip, tok, f.read(), fam["processor"].processor_class)
        with open(os.path.join(folder, "processor_config.json")) as f:
            assert json.load(f)["video_processor"] == Qwen2VLMirror.VIDEO_PROCESSOR_DICT
    elif fam["family"] in QWEN_FAMILIES:  # the video processor has only a torchvision backend
        proc = AutoProcessor.from_pretrained(folder)
        proc.image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    else:
        proc = AutoProcessor.from_pretrained(folder, backend="pil")  # the default is torchvision's when it imports
        assert type(proc.image_processor) is type(fam["image_processor"]), type(proc.image_processor)
    for case in fam["cases"]:
        exp = expected[case["name"]]
        prompt = proc.tokenizer.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True,
                                                    chat_template=proc.chat_template)
        assert prompt == exp["prompt"], (prompt, exp["prompt"])
        enc = run_processor(fam, proc, case, prompt)
        assert enc["input_ids"][0].tolist() == exp["input_ids"]
        for k, v in exp["tensors"].items():
            assert torch.equal(enc[k], v), k
        with torch.no_grad():
            logits = model(**model_inputs(enc)).logits[0]
        assert torch.equal(logits, exp["logits"]), f"{fam['family']}/{case['name']}: reloaded logits differ"


def run_family(fam: dict, summary: list) -> None:
    name = fam["family"]
    out_dir = os.path.join(OUT, fam.get("dir", name))
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(fam["seed"])
    model = fam["cls"](fam["config"]).eval()
    randomize(model, fam["seed"])
    folder = os.path.join(out_dir, "model")
    save_folder(fam, model, folder)

    real = None
    if name in QWEN_FAMILIES:
        real = real_qwen2vl_processor(fam["image_processor"], fam["tokenizer"], QWEN2VL_TEMPLATE,
                                      fam["processor"].processor_class)
        if real is not None:
            with tempfile.TemporaryDirectory() as tmp:
                real.save_pretrained(tmp)
                with open(os.path.join(tmp, "processor_config.json")) as a, \
                        open(os.path.join(folder, "processor_config.json")) as b:
                    assert a.read() == b.read(), "processor_config.json differs from Qwen2VLProcessor's"
            print(f"{name}: torchvision present: the real processor is checked against the mirror")

    tok = fam["tokenizer"]
    raw_tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    cases_json, expected = [], {}
    for case in fam["cases"]:
        prompt = tok.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True,
                                         chat_template=fam["processor"].chat_template)
        enc = run_processor(fam, fam["processor"], case, prompt)
        if real is not None:
            ref = run_processor(fam, real, case, prompt)
            for k in set(enc) | set(ref):
                assert k in enc and k in ref and torch.equal(torch.as_tensor(enc[k]), torch.as_tensor(ref[k])), k
        ids = enc["input_ids"][0]
        # The prompt with its placeholders expanded, as tokenized: tokenizer.json alone (no
        # post-processor, as kvlab's loader) gives the same ids.
        expanded = raw_tok.decode(ids.tolist(), skip_special_tokens=False)
        assert raw_tok.encode(expanded, add_special_tokens=False).ids == ids.tolist()
        vis = vision_outputs(fam, model, enc)
        embeds, logits = captured_embeds(model, enc)
        # the connector rows are exactly what replaced the placeholder tokens
        cfg = model.config
        image_id = cfg.image_token_id
        if "features" in vis:
            assert torch.equal(embeds[ids == image_id], vis["features"]), "image features != scattered rows"
        if "video_features" in vis:
            assert torch.equal(embeds[ids == cfg.video_token_id], vis["video_features"])
        logits_np = logits.numpy().astype(np.float32)
        top2 = np.sort(logits_np, axis=1)[:, -2:]
        gap_all = float((top2[:, 1] - top2[:, 0]).min())
        cont = greedy(model, enc, GREEDY)
        placeholders = {image_id, getattr(cfg, "video_token_id", image_id)}
        if placeholders & set(cont):  # a generated placeholder would be a feature slot on recompute
            sys.exit(f"{name}/{case['name']}: the greedy continuation {cont} holds an image/video "
                     "placeholder token: pick another seed")
        cont2, gap = greedy_by_recompute(model, enc, GREEDY)
        assert cont == cont2, (name, case["name"], cont, cont2)
        if min(gap, gap_all) < MIN_GAP:
            sys.exit(f"{name}/{case['name']}: top-2 gap {min(gap, gap_all):.2e}: pick another seed")

        prefix = os.path.join(out_dir, case["name"])
        files = {"logits": f"{case['name']}.logits.npy"}
        save_npy(prefix + ".logits.npy", logits_np)
        tensors = {}
        for key, fkey in (("pixel_values", "pixel_values"), ("pixel_values_videos", "pixel_values_videos")):
            if key in enc:
                save_npy(f"{prefix}.{fkey}.npy", enc[key])
                files[fkey] = f"{case['name']}.{fkey}.npy"
                tensors[key] = enc[key]
        for key, v in vis.items():
            if name == "qwen2_5_vl" and key in ("vision", "video_vision"):
                continue  # window-ordered tower states; the merger's output is checked (kept small)
            save_npy(f"{prefix}.{key}.npy", v)
            files[key] = f"{case['name']}.{key}.npy"

        entry = dict(name=case["name"], messages=case["messages"], prompt=prompt,
                     images=case.get("images", []), processor_kwargs=case["kwargs"],
                     expanded_prompt=expanded, input_ids=ids.tolist(), seq_len=len(ids), files=files)
        if "video" in case:
            entry["video_frames"] = case["video"]
        if "video_fps" in case:
            entry["video_fps"] = case["video_fps"]
        if "pixel_values" in enc:
            entry["pixel_values_shape"] = list(enc["pixel_values"].shape)
        entry["num_image_tokens"] = int((ids == image_id).sum())
        if name == "idefics3":
            pam = enc["pixel_attention_mask"]
            entry["pixel_attention_mask_shape"] = list(pam.shape)
            entry["pixel_attention_mask_all_true"] = bool(pam.bool().all())
            rc = fam["image_processor"](images=[load_image(f) for f in case["images"]], return_row_col_info=True,
                                        **case["kwargs"])
            entry["rows"], entry["cols"] = rc["rows"][0], rc["cols"][0]
            entry["num_tiles"] = int(enc["pixel_values"].shape[1])
        if name in QWEN_FAMILIES:
            entry["mm_token_type_ids"] = enc["mm_token_type_ids"][0].tolist()
            if "image_grid_thw" in enc:
                entry["image_grid_thw"] = enc["image_grid_thw"].tolist()
            if "pixel_values_videos" in enc:
                entry["pixel_values_videos_shape"] = list(enc["pixel_values_videos"].shape)
                entry["video_grid_thw"] = enc["video_grid_thw"].tolist()
                entry["num_video_tokens"] = int((ids == cfg.video_token_id).sum())
            timed = {"second_per_grid_ts": enc["second_per_grid_ts"]} if "second_per_grid_ts" in enc else {}
            if timed:
                entry["second_per_grid_ts"] = enc["second_per_grid_ts"].tolist()
            pos, deltas = model.model.get_rope_index(enc["input_ids"], enc["mm_token_type_ids"],
                                                     image_grid_thw=enc.get("image_grid_thw"),
                                                     video_grid_thw=enc.get("video_grid_thw"),
                                                     attention_mask=enc["attention_mask"], **timed)
            entry["position_ids"] = pos[:, 0].tolist()
            entry["rope_deltas"] = int(deltas[0, 0])
            by_deltas = greedy_rope_deltas(model, enc, GREEDY)
            if by_deltas != cont:
                entry["greedy_rope_deltas"] = by_deltas
        for k, v in vis.items():
            entry[f"{k}_shape"] = list(v.shape)
        entry.update(argmax=logits_np.argmax(axis=1).tolist(), greedy=cont, min_top2_gap=gap_all,
                     min_top2_gap_greedy=gap, logit_range=[float(logits_np.min()), float(logits_np.max())])
        cases_json.append(entry)
        expected[case["name"]] = dict(prompt=prompt, input_ids=ids.tolist(), tensors=tensors, logits=logits)
        sizes = {k: os.path.getsize(os.path.join(out_dir, f)) for k, f in files.items()}
        summary.append((name, case["name"], len(ids), entry["num_image_tokens"] + entry.get("num_video_tokens", 0),
                        float(np.abs(logits_np).max()), gap, sizes))

    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        tensor_names = sorted(f.keys())
    manifest = dict(transformers=transformers.__version__, torch=torch.__version__, family=name,
                    architecture=fam["cls"].__name__, model_dir="model", tensors=tensor_names,
                    added_tokens={t.content: i for i, t in sorted(tok.added_tokens_decoder.items())},
                    special_tokens={k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token")
                                    if getattr(tok, k) is not None},
                    vocab_size=len(tok), cases=cases_json)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        f.write(dumps(manifest) + "\n")
    reload_and_check(fam, folder, expected)
    print(f"{name}: reloaded from {os.path.relpath(folder, ROOT)}: logits bit-identical")


def main() -> int:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    make_images()
    base = train_base_tokenizer()
    summary = []
    builds = {"idefics3": build_idefics3, "llava": build_llava, "qwen2_vl": build_qwen2_vl,
              "llava_saved_layout": lambda b: build_llava(b, saved_layout=True),
              "qwen2_5_vl": lambda b: build_qwen2_5_vl(b, "small"),
              "qwen2_5_vl_wide": lambda b: build_qwen2_5_vl(b, "wide")}
    # Fixture folders to (re)write: all, or those named on the command line.
    for name in sys.argv[1:] or list(builds):
        run_family(builds[name](base), summary)

    print(f"\n{'family':9} {'case':18} {'seq':>4} {'img':>4} {'max|logit|':>10} {'gap':>7}  file sizes (bytes)")
    for fam, case, seq, nimg, mx, gap, sizes in summary:
        print(f"{fam:9} {case:18} {seq:4d} {nimg:4d} {mx:10.3f} {gap:7.4f}  "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    total, biggest = 0, (0, "")
    for dirpath, _, fnames in os.walk(OUT):
        for fn in fnames:
            p = os.path.join(dirpath, fn)
            total += os.path.getsize(p)
            biggest = max(biggest, (os.path.getsize(p), os.path.relpath(p, OUT)))
    for fam in builds:
        p = os.path.join(OUT, fam, "model", "model.safetensors")
        print(f"{fam}/model/model.safetensors: {os.path.getsize(p)} bytes")
    print(f"total {total} bytes in {os.path.relpath(OUT, ROOT)}; largest file {biggest[1]} ({biggest[0]} bytes)")
    if biggest[0] >= 1_000_000:
        print("a file is over 1 MB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A random-weight InternVL folder (transformers' `internvl` -hf layout) with InternVL3.5-1B's shapes,
written directly as BF16 safetensors + config.json with numpy alone, for bench/memory_vs_frames.py
--family internvl.

InternVL3.5-1B = InternViT-300M + MLP projector + Qwen3-0.6B:
  tower     hidden 1024, 24 layers, 16 heads, MLP 4096, GELU, LayerNorms (eps 1e-6), q/k/v biases, no QK
            norm, layer scales, mean pooling; 448-px tiles of 14-px patches (1024 patches + CLS)
  projector pixel shuffle 0.5 -> LayerNorm(4096) -> Linear(4096, 1024) -> GELU -> Linear(1024, 1024):
            (448 / 14 / 2)^2 = 256 tokens a tile
  decoder   Qwen3: hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim 128, MLP 3072, vocab 151936,
            RMSNorm eps 1e-6, rope theta 1e6, QK norm, tied embeddings
The layer counts can be lowered (tower_layers, decoder_layers) to fit a slow machine; widths stay.
The tokenizer and chat template are the internvl_qwen3 test fixture's (367 ids, inside the vocabulary),
so only the embedding table's first rows are ever read; the table is still the real size, resident.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "vlm", "internvl_qwen3", "model")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
TILE, PATCH = 448, 14
TOKENS_PER_TILE = (TILE // PATCH // 2) ** 2
VISION = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              image_size=[TILE, TILE], patch_size=[PATCH, PATCH], norm_type="layer_norm", use_qk_norm=False,
              attention_bias=True, use_mean_pooling=True, hidden_act="gelu", layer_norm_eps=1e-6,
              layer_scale_init_value=0.1, num_channels=3, use_absolute_position_embeddings=True,
              model_type="internvl_vision")
TEXT = dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
            rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=40960, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True)
SEED = 20260604


def config(tower_layers: int, decoder_layers: int) -> dict:
    with open(os.path.join(FIXTURE, "config.json")) as f:
        fixture = json.load(f)
    ft = fixture["text_config"]
    text = dict(TEXT, num_hidden_layers=decoder_layers, eos_token_id=ft["eos_token_id"],
                pad_token_id=ft["pad_token_id"], bos_token_id=None)
    text["layer_types"] = ["full_attention"] * decoder_layers
    return {"architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl",
            "downsample_ratio": 0.5, "image_seq_length": TOKENS_PER_TILE, "image_token_id": fixture["image_token_id"],
            "projector_hidden_act": "gelu", "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default", "tie_word_embeddings": True, "dtype": "bfloat16",
            "vision_config": dict(VISION, num_hidden_layers=tower_layers), "text_config": text}


def tensor_shapes(cfg: dict) -> dict:
    v, t = cfg["vision_config"], cfg["text_config"]
    d, m, n = v["hidden_size"], v["intermediate_size"], (TILE // PATCH) ** 2
    s = {"vision_tower.embeddings.cls_token": [1, 1, d],
         "vision_tower.embeddings.patch_embeddings.projection.weight": [d, 3, PATCH, PATCH],
         "vision_tower.embeddings.patch_embeddings.projection.bias": [d],
         "vision_tower.embeddings.position_embeddings": [1, n + 1, d]}
    for i in range(v["num_hidden_layers"]):
        p = f"vision_tower.encoder.layer.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "projection_layer"):
            s[p + f"attention.{name}.weight"], s[p + f"attention.{name}.bias"] = [d, d], [d]
        for name in ("lambda_1", "lambda_2", "layernorm_before.weight", "layernorm_before.bias",
                     "layernorm_after.weight", "layernorm_after.bias", "mlp.fc2.bias"):
            s[p + name] = [d]
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"], s[p + "mlp.fc2.weight"] = [m, d], [m], [d, m]
    h, shuffled = t["hidden_size"], d * 4
    s.update({"multi_modal_projector.layer_norm.weight": [shuffled], "multi_modal_projector.layer_norm.bias": [shuffled],
              "multi_modal_projector.linear_1.weight": [h, shuffled], "multi_modal_projector.linear_1.bias": [h],
              "multi_modal_projector.linear_2.weight": [h, h], "multi_modal_projector.linear_2.bias": [h],
              "language_model.model.embed_tokens.weight": [t["vocab_size"], h],
              "language_model.model.norm.weight": [h]})
    q, kv, hd, f = t["num_attention_heads"] * t["head_dim"], t["num_key_value_heads"] * t["head_dim"], t["head_dim"], t["intermediate_size"]
    for i in range(t["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        s.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                  p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
                  p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
                  p + "self_attn.q_norm.weight": [hd], p + "self_attn.k_norm.weight": [hd],
                  p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h], p + "mlp.down_proj.weight": [h, f]})
    return s


def values(name: str, shape: list, rng) -> np.ndarray:
    """Norm weights near 1, layer scales near 0.1, the rest N(0, 0.02) (biases included), as float32."""
    if name.endswith("lambda_1") or name.endswith("lambda_2"):
        return (0.1 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    if len(shape) == 1 and ("norm" in name) and name.endswith(".weight"):
        return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def to_bf16(a: np.ndarray) -> bytes:
    """Round-to-nearest-even float32 -> bfloat16 bytes (little-endian)."""
    u = a.astype(np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


def write(folder: str, tower_layers: int, decoder_layers: int) -> dict:
    """Writes the folder unless its bench_spec.json already matches; returns the config."""
    cfg = config(tower_layers, decoder_layers)
    want = {"config": cfg, "seed": SEED, "writer": 1}
    stamp = os.path.join(folder, "bench_spec.json")
    if os.path.exists(stamp) and os.path.exists(os.path.join(folder, "model.safetensors")):
        with open(stamp) as f:
            if json.load(f) == want:
                return cfg
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    shapes = tensor_shapes(cfg)
    header, offset = {}, 0
    for name in sorted(shapes):
        size = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(SEED)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for name in sorted(shapes):
            f.write(to_bf16(values(name, shapes[name], rng)))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(FIXTURE, name), folder)
    with open(os.path.join(FIXTURE, "preprocessor_config.json")) as f:
        prep = json.load(f)
    prep.update(size={"height": TILE, "width": TILE}, max_patches=12, crop_to_patches=False)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(prep, f, indent=2, sort_keys=True)
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"image_processor": prep, "image_seq_length": TOKENS_PER_TILE, "processor_class": "InternVLProcessor"},
                  f, indent=2, sort_keys=True)
    with open(stamp, "w") as f:
        json.dump(want, f, indent=2, sort_keys=True)
    return cfg


def parameter_count(cfg: dict) -> dict:
    shapes = tensor_shapes(cfg)
    count = lambda prefix: sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith(prefix))
    return {"tower": count("vision_tower."), "projector": count("multi_modal_projector."),
            "decoder": count("language_model.")}

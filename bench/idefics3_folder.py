"""A random Idefics3 model folder with the tokenizer of the Idefics3 test fixture, as the benchmarks
build it (bench/memory_model.py, bench/vision_vs_transformers.py): kvlab loads it like any SmolVLM
folder, and it is rebuilt only when the spec stamped in it changes."""
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "vlm", "idefics3", "model")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def perturb(model, seed):
    """transformers' init leaves biases at 0 and LayerNorms at (1, 0): give them small random
    values so that numerical checks cover every term (linear weights keep their init)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith(".weight") and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))


def build_idefics3_folder(folder, spec, vision, text, scale_factor, seed, tile_edge, image_edge):
    """Writes the folder (fp32 safetensors, the fixture's tokenizer, processor configs for tiles of
    tile_edge px and images resized to a longest edge of image_edge) unless its bench_spec.json
    already equals spec. spec carries the fixture's config.json as "fixture_config" (token ids)."""
    stamp = os.path.join(folder, "bench_spec.json")
    if os.path.exists(stamp) and os.path.exists(os.path.join(folder, "model.safetensors")):
        with open(stamp) as f:
            if json.load(f) == spec:
                return
    # Imported here so that importing memory_model for its constants (bench/memory_report.py)
    # does not load torch.
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    print(f"creating {folder} ...", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    fixture = spec["fixture_config"]
    with open(os.path.join(FIXTURE, "tokenizer.json")) as f:
        added = {t["content"]: t["id"] for t in json.load(f)["added_tokens"]}
    for token in ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"):
        assert token in added, f"fixture tokenizer has no {token}"
    assert added["<image>"] == fixture["image_token_id"], "image_token_id differs from <image>'s id"
    assert text["vocab_size"] >= max(added.values()) + 1
    cfg = Idefics3Config(vision_config=vision, text_config=text, scale_factor=scale_factor,
                         image_token_id=fixture["image_token_id"], tie_word_embeddings=False,
                         pad_token_id=fixture.get("_pad_token_id", fixture.get("pad_token_id")))
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    perturb(model, seed)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(FIXTURE, name), folder)
    with open(os.path.join(FIXTURE, "preprocessor_config.json")) as f:
        prep = json.load(f)
    prep["max_image_size"] = {"longest_edge": tile_edge}
    prep["size"] = {"longest_edge": image_edge}
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(prep, f, indent=2, sort_keys=True)
    tokens = (tile_edge // vision["patch_size"]) ** 2 // scale_factor ** 2
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"image_processor": prep, "image_seq_len": tokens, "processor_class": "Idefics3Processor"},
                  f, indent=2, sort_keys=True)
    with open(stamp, "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True)

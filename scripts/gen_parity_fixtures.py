#!/usr/bin/env python3
"""Golden logits for the SmolLM2 parity test, from Hugging Face transformers (fp32).

Run with the reference venv (docs/correctness.md): .venv-ref/bin/python scripts/gen_parity_fixtures.py
transformers loads the same GGUF and dequantizes it to float32, so both sides run the same
weights. Committed (small): token ids, for every position the argmax, the reference logits at a
fixed set of 512 vocabulary columns plus the top-16 columns, and the 32-token greedy
continuation. Written but not committed (big, git-ignored): the full logits table of every
prompt, which `KVLAB_FULL_PARITY=1 swift test --filter Parity` compares at every column.
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(ROOT, "Tests", "KVEngineTests", "Fixtures", "parity")
FULL = os.path.join(ROOT, "bench", "out", "parity-full")

PROMPTS = {
    "capital": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "story": "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "clockmaker named Elias. Every morning he opened the shutters of his shop, wound the hundred "
    "clocks that lined its walls, and waited for the first customer of the day.",
    "long": (
        "The history of mathematics spans thousands of years. Early civilizations such as the "
        "Babylonians and Egyptians developed arithmetic and geometry for trade, astronomy and "
        "construction. The Greeks introduced deductive proof: Euclid's Elements organized geometry "
        "into axioms and theorems, and Archimedes estimated pi by inscribing polygons in a circle. "
        "In India, mathematicians created the decimal place-value system with zero, which spread "
        "through the Islamic world, where al-Khwarizmi wrote the treatise that gave algebra its "
        "name. During the Renaissance, European mathematicians solved cubic equations, and "
        "Descartes joined algebra and geometry with coordinates. Newton and Leibniz independently "
        "invented calculus in the seventeenth century, opening the way to modern physics. In the "
        "nineteenth century, Gauss, Riemann and Cauchy made analysis rigorous, while Galois and "
        "Abel founded group theory while studying polynomial equations. The twentieth century "
        "brought set theory, Godel's incompleteness theorems, and the birth of computer science "
        "with Turing's abstract machines. Today mathematics underpins cryptography, machine "
        "learning, and the simulation of everything from weather to galaxies. Unicode too: "
        "naïve café, Ελληνικά, 日本語のテキスト, emoji 🚀✨ and tabs\tand  double  spaces. "
        "Students often meet these ideas in a different order: counting, then fractions, then "
        "algebra, and only later the proofs that hold it all together. def fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# 12345 + 67890 = 80235"
    ),
}


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(FULL, exist_ok=True)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(1234)
    columns = np.sort(rng.choice(vocab, size=512, replace=False)).astype(np.int64)
    manifest = {"model": GGUF, "transformers": __import__("transformers").__version__,
                "torch": torch.__version__, "columns": columns.tolist(), "prompts": []}
    for name, text in PROMPTS.items():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=True)
            logits = out.logits[0].float().numpy()
            # Plain argmax for 32 steps (no EOS handling, no logits processors): generate()
            # with min_new_tokens would suppress EOS and so not be greedy.
            past, nxt, continuation = out.past_key_values, int(logits[-1].argmax()), []
            for _ in range(32):
                continuation.append(nxt)
                step = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past, nxt = step.past_key_values, int(step.logits[0, -1].argmax())
        np.save(os.path.join(FULL, f"{name}.npy"), logits.astype(np.float32))
        top = np.argsort(-logits, axis=1, kind="stable")[:, :16]
        np.save(os.path.join(OUT, f"{name}.columns.npy"), np.ascontiguousarray(logits[:, columns], dtype=np.float32))
        np.save(os.path.join(OUT, f"{name}.top.npy"),
                np.ascontiguousarray(np.take_along_axis(logits, top, axis=1), dtype=np.float32))
        manifest["prompts"].append({
            "name": name, "text": text, "ids": ids, "argmax": logits.argmax(axis=1).tolist(),
            "top_ids": top.tolist(), "greedy32": continuation,
        })
        print(f"{name}: {len(ids)} tokens, continuation {tok.decode(continuation)!r}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    print("total tokens", sum(len(p["ids"]) for p in manifest["prompts"]))


if __name__ == "__main__":
    sys.exit(main())

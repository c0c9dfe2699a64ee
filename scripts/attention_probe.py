#!/usr/bin/env python3
"""The diagnostic behind run 5 (scripts/README-training.md): for held-out attribute questions,
where the answer position's attention goes in each decoder layer and what the model answers.

    .venv-ref/bin/python scripts/attention_probe.py .cache-train/run5/ckpt.pt [--n 24]

Per question kind ("what color is the {shape}?" = color, "which shape is {color}?" = shape):
the accuracy, then per layer and head the attention mass on the asked shape's token and on all
shape tokens. Then, per colour question: the answer, the model's, the token the last layer's
first two heads attend to most, and the tile's shapes. A model that attends to the right token
yet names another of the tile's colours has learnt an answer by elimination, not the look-up.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_default_model as T  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--n", type=int, default=24, help="questions of each kind")
    ap.add_argument("--data", default=os.path.join(T.ROOT, ".cache-train/data"))
    a = ap.parse_args()
    tok = T.train_tokenizer()
    proc = T.build_processor(tok)
    model = T.Idefics3ForConditionalGeneration(T.build_config(tok))
    model.load_state_dict(torch.load(a.ckpt, weights_only=False)["model"])
    model.config._attn_implementation = "eager"  # attention weights
    model.model.text_model.config._attn_implementation = "eager"
    model.eval()
    rows = T.heldout("attribute", a.data, 4 * a.n, None)
    image_id = model.config.image_token_id
    for kind in ("color", "shape"):
        of = [r for r in rows if r["kind"] == kind][:a.n]
        b = T.encode(proc, of)
        with torch.no_grad():
            out = model(**T.model_inputs(b), output_attentions=True)
        target = T.focus_masks(of, b["aux_labels"])
        layers = len(out.attentions)
        on_target, on_shapes = torch.zeros(layers, out.attentions[0].shape[1]), torch.zeros(layers, out.attentions[0].shape[1])
        right, lines = 0, []
        for i, s in enumerate(of):
            q = T.answer_position(b["labels"][i])
            pos = (b["input_ids"][i] == image_id).nonzero().squeeze(1)
            shapes = (b["aux_labels"][i].amax(-1) > 0).float()
            said = tok.decode([int(out.logits[i, q].argmax())]).strip()
            right += said == s["answer"]
            for layer in range(layers):
                att = out.attentions[layer][i, :, q, pos]  # heads x image tokens
                on_target[layer] += (att * target[i]).sum(-1) / len(of)
                on_shapes[layer] += (att * shapes).sum(-1) / len(of)
            drawn = {int(tk): f"{T.SHAPE_COLOR[c][1]} {T.SHAPE_COLOR[c][0]}" for tk, c in b["aux_labels"][i].nonzero()}
            last = out.attentions[-1][i, :2, q, pos].mean(0)
            top = int(last.argmax())
            lines.append(f"  {s['question']} {s['answer']} -> {said} | last layer's top token: "
                         f"{drawn.get(top, 'background')} ({float(last[top]):.2f}) | tile: {sorted(drawn.values())}")
        print(f"{kind}: {right}/{len(of)} right")
        for layer in range(layers):
            print(f"  layer {layer}: on the asked token per head {[round(float(x), 2) for x in on_target[layer]]}, "
                  f"on any shape {[round(float(x), 2) for x in on_shapes[layer]]}")
        if kind == "color":
            print("\n".join(lines))


if __name__ == "__main__":
    main()

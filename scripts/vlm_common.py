"""What scripts/gen_vlm_fixtures.py (the tiny test models) and scripts/train_default_model.py (the
embedded model) share: the SmolVLM chat template and the byte-level BPE they train their own
tokenizers with. Imported by both (scripts/ is on sys.path when either runs)."""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Modelled on the published template of HuggingFaceTB/SmolVLM-256M-Instruct.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def byte_level_bpe(lines: list[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """A byte-level BPE trained on `lines` (ByteLevel pre-tokenizer without a prefix space, the
    256 byte symbols always in the alphabet, ByteLevel decoder), as GPT-2 / SmolLM's; no special
    tokens yet (each caller adds its own)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    return tok

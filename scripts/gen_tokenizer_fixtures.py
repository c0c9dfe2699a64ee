#!/usr/bin/env python3
"""Generate the tokenizer fixtures in Tests/KVModelsTests/Fixtures/tokenizer/.

Run from the repository root with the reference venv (docs/design.md, Models):

    .venv-ref/bin/python scripts/gen_tokenizer_fixtures.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]

Outputs (all small; the SmolLM2 vocabulary itself is never committed):

  smollm2_cases.json     ~420 strings with the ids of SmolLM2's reference tokenizer
                         (special tokens parsed and, for strings holding one, not parsed),
                         and the reference decode of those ids.
  tiny_bytelevel.json    a ~320-token ByteLevel BPE trained here (GPT-2 regex inside ByteLevel)
  tiny_split.json        a ~320-token BPE with Split(Qwen2 regex) + ByteLevel(use_regex=false)
                         and an NFC normalizer (the Qwen2 / Qwen2-VL layout)
  tiny_llama3.json       a ~320-token BPE with Split(Llama-3 regex) + ByteLevel(use_regex=false)
  tiny_cases.json        the same strings (plus a few using the tiny added tokens) with the ids of
                         each tiny tokenizer
  tiny_gpt2.gguf         tiny_bytelevel's vocabulary as GGUF metadata (pre "gpt2"; no tensors)
  tiny_falcon.gguf       the same with pre "falcon", which kvlab rejects
  chat_template.json     ChatML renderings of a few conversations with SmolLM2's own
                         `tokenizer.chat_template` (from the GGUF), rendered with jinja2 as
                         transformers does (and checked against its apply_chat_template), and
                         their SmolLM2 ids.

Which reference for SmolLM2, and why
------------------------------------
`transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)` (5.24.0) rebuilds the tokenizer
from the GGUF with a *plain* `ByteLevel(add_prefix_space=False, use_regex=True)` pre-tokenizer: it
drops the `Digits(individual_digits=True)` step that SmolLM2's published tokenizer.json has
(`Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false, trim_offsets=true,
use_regex=true)]`, no normalizer; llama.cpp's `smollm` pre type is the same thing: regexes
["\\p{N}", gpt2]). That difference is visible in the ids (17 of the strings here, e.g. "a  1", "  42  ", "½ ¼ ¾",
"Ⅻ Ⅳ ⅷ": whitespace before a number, and runs of numbers, split differently), so it is NOT a
faithful reference. This script therefore builds a `tokenizers.Tokenizer` from the GGUF's
vocab and merges with SmolLM2's published pre-tokenizer, the ByteLevel decoder, and the 17 GGUF
CONTROL tokens as special added tokens (normalized=false, no strip), exactly as in the published
tokenizer.json. The script prints how many strings the transformers GGUF loader would get wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KVModelsTests", "Fixtures", "tokenizer")

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SMOL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                 "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
                 "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
                 "<jupyter_script>", "<empty_output>"]


# --------------------------------------------------------------------------------------------
# The strings
# --------------------------------------------------------------------------------------------

def hand_strings() -> list[str]:
    s: list[str] = []
    # empty, single characters, plain prose
    s += ["", " ", "a", "A", ".", "\n", "\t", "0", "Hello", "Hello world", "Hello, world!",
          "The quick brown fox jumps over the lazy dog.",
          "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
          "What is the capital of France? The capital of France is Paris.",
          "Once upon a time, in a land far, far away, there lived a small model.",
          "KV-cache compression keeps peak memory flat during prefill.",
          "e.g. i.e. etc. Mr. Mrs. Dr. St. vs. a.m. p.m.",
          "hello\u00a0world", "semi;colon:colon", "it's-a-hyphenated--word---yes"]
    # contractions (also upper case: only the Qwen2/Llama-3 regexes fold case)
    s += ["I'm", "you're", "we've", "they'll", "she'd", "it's", "don't", "can't", "won't",
          "I'M", "YOU'RE", "WE'VE", "THEY'LL", "SHE'D", "IT'S", "DON'T", "Y'all'd've",
          "rock 'n' roll", "'s 't 're 've 'm 'll 'd", "''s", "'''", "’s curly apostrophe’s",
          "O'Neil's dog's toy", "'tis the season", "'S'T'RE'VE", "I'll've'd", "can 't", "the '90s"]
    # digits and numbers
    s += ["1", "12", "123", "1234567890", "3.14159265358979323846", "1,000,000", "1 000 000",
          "-42", "+7", "2024-06-01", "12:34:56", "0x1F2E3D", "0b101010", "1e-10", "6.02e23",
          "$1,234.56", "€99,99", "¥1000", "50%", "100°C", "v1.2.3", "x 12", "a  1", "a 1 b 2",
          "a1b2c3", "abc123def", "tel: +1 (555) 123-4567", "IPv4 192.168.0.1", "99 bottles",
          "1st 2nd 3rd 4th", "3/4 cup", "½ ¼ ¾", "x² + y³ = z⁴", "Ⅻ Ⅳ ⅷ", "①②③",
          "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "１２３４５", "๑๒๓", "𝟘𝟙𝟚 math digits",
          "123456789012345678901234567890123456789012345678901234567890",
          "3" * 64, "pi=3.14 e=2.718", "  42  ", "\t7\t", "1\n2\n3", "1.2.3.4.5.6.7.8.9.10",
          # Unicode 16/17 letters and digits: the regexes (Oniguruma) know Unicode 16, Digits 17
          "!\U00011de0!", "a\U00011de0\U00011de1b", "x\u088f y", "!\U0001ccf0 \U00016d40!",
          " \U00016ff4\U00016ff5", "'s\U00011de5"]
    # whitespace runs
    s += ["  ", "   ", "    ", "\t\t", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\n \n",
          "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a \n b", "a\r\nb",
          "trailing space ", "trailing spaces   ", " leading space", "   leading spaces",
          "  both  ", "tabs\tand\nnewlines\r\nmixed", "line1\n    indented\n\tTabbed\n",
          "\u000b vertical \u000c formfeed", "nbsp\u00a0\u00a0two", "ideographic\u3000space",
          "em\u2003space en\u2002space thin\u2009space", "nel\u0085next", "line\u2028sep\u2029para",
          "zero\u200bwidth", "\ufeffbom at start", "fs\u001cgs\u001drs\u001eus\u001f",
          "end with newline\n", "end with tab\t", "word \t word", " \t \n ", "x \u00a0y",
          "\u00a0\u00a0leading nbsp", "many" + " " * 20 + "spaces", "\n" * 10, " " * 33 + "x",
          "a \t", "a\u3000\u3000b"]
    # Latin accents, NFC and NFD
    s += ["café", "cafe\u0301", "naïve résumé façade", "Ångström", "Zürich Müller straße",
          "Crème brûlée", "São Paulo", "Łódź Kraków", "Ærøskøbing", "İstanbul ılık",
          "e\u0301\u0301\u0301 stacked", "Z\u0351\u0352\u0353algo"]
    # other scripts
    s += ["Привет, мир!", "Съешь же ещё этих мягких французских булок", "Γειά σου Κόσμε",
          "Ελληνικά: αβγδεζηθ", "مرحبا بالعالم", "اللغة العربية ١٢٣", "שלום עולם", "עברית 123",
          "नमस्ते दुनिया", "हिन्दी में लिखा गया पाठ", "বাংলা ভাষা", "தமிழ் மொழி", "ภาษาไทย สวัสดี",
          "你好，世界！", "这是一个测试。", "中文和English混合", "日本語のテキスト", "カタカナとひらがな",
          "東京タワー 333m", "안녕하세요 세계", "한국어 텍스트입니다", "\u1100\u1161\u11a8 jamo",
          "ქართული ენა", "Հայերեն", "አማርኛ", "ᚠᛇᚻ᛫ᛒᛦᚦ", "Tiếng Việt có dấu", "ꯃꯤꯇꯩ",
          "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙", "ℌ𝔢𝔩𝔩𝔬", "ﬁ ﬂ ligatures", "Ｆｕｌｌｗｉｄｔｈ", "ｶﾀｶﾅ halfwidth"]
    # emoji
    s += ["😀", "😀😃😄", "👍", "👍🏽", "👋🏻👋🏼👋🏽👋🏾👋🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🧑‍🤝‍🧑",
          "🏳️‍🌈", "🏴‍☠️", "🇫🇷🇯🇵🇺🇸", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
          "❤️", "❤\ufe0e", "1️⃣2️⃣3️⃣", "#️⃣", "I ❤️ NY", "emoji😀inside", "😀 😀  😀",
          "🤖 robots 🤖 everywhere", "☕️ coffee", "✨✨✨", "🙂🙃", "🫠🫡", "📈 +12%"]
    # symbols / punctuation
    s += ["!!!", "???", "...", "…", "—", "–", "-- -", "!?!?", "«quotes»", "“smart quotes”",
          "‘single’", "(parens) [brackets] {braces} <angles>", "@#$%^&*()_+-=", "~`|\\/",
          "→ ← ↑ ↓ ⇒", "∀x∈ℝ: x²≥0", "∑∫∏√∞", "©®™", "§¶†‡", "½⅓⅔", "♠♣♥♦", "★☆",
          "C++ C# F#", "a+b=c", "x*y/z", "snake_case_name", "kebab-case-name", "camelCaseName",
          "PascalCaseName", "SCREAMING_SNAKE", "__dunder__", "#hashtag @mention", "a.b.c"]
    # code
    s += [
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n\tprint(i)\n",
        "if (x > 0) {\n    y = x * 2;\n} else {\n    y = -x;\n}",
        "func greet(_ name: String) -> String {\n    return \"Hello, \\(name)!\"\n}",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "let xs = [1, 2, 3].map { $0 * 2 }",
        "{\"key\": \"value\", \"n\": 123, \"list\": [1, 2.5, null, true]}",
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "$ ls -la | grep '.swift' > out.txt 2>&1",
        "git commit -m \"fix: handle CRLF\"",
        "x = y if z else w  # comment",
        "    // indented comment\n    let a = 1\n",
        "fn main() {\n    println!(\"{}\", 1 + 1);\n}",
        "print(f\"{x=}\")",
        "lambda x: x**2",
        "arr[i][j] += 1;",
        "a->b->c",
        "std::vector<int> v{1,2,3};",
        "@property\ndef name(self) -> str: ...",
        "import numpy as np\nnp.zeros((3, 4), dtype=np.float32)",
        "/^[a-z0-9_-]{3,16}$/",
        "https://example.com/path?query=1&b=two#frag",
        "user.name+tag@example.co.uk",
        "SGVsbG8gV29ybGQhIFRoaXMgaXMgYmFzZTY0Lg==",
        "0123456789abcdef0123456789abcdef",
        "\tif x:\n\t\treturn\n",
        "    \n    \n",
        "```python\nprint('hi')\n```",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "- item one\n- item two\n  - nested",
        "# Title\n\n## Subtitle\n\nText.",
        "key: value\nlist:\n  - a\n  - b\n",
        "<?xml version=\"1.0\"?>",
        "\\begin{equation} E = mc^2 \\end{equation}",
        "a <= b && c != d || !e",
        "i++; --j; k **= 2;",
        "/* block */ // line",
        "'''docstring'''",
        "\"\"\"triple\"\"\"",
    ]
    # special tokens inline (SmolLM2's), lookalikes, partials
    s += ["<|im_start|>", "<|im_end|>", "<|endoftext|>",
          "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
          "<|im_start|>system\nYou are helpful.<|im_end|>\n",
          "text before<|im_end|>text after", "<|im_start|><|im_end|>", "<|im_start|>" * 3,
          " <|im_start|> spaced ", "\n<|im_end|>\n", "<|im_start", "im_end|>", "<|im_start |>",
          "<<|im_end|>>", "<|<|im_start|>|>", "<|IM_START|>", "<repo_name>kvlab<file_sep>main.swift",
          "<filename>a.py\n<gh_stars>100", "<jupyter_start><jupyter_code>print(1)<jupyter_output>1",
          "<issue_start>bug<issue_comment>fixed<issue_closed>", "<empty_output>", "<reponame><repo_name>",
          "<|endoftext|><|endoftext|>", "end<|endoftext|>", "<|pad|>", "<unk>", "</s>", "<s>",
          "<|im_start|>user\n1+1=?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>"]
    # bytes the SmolLM2 vocabulary lacks (HF BPE drops them: no unk token) and control chars
    s += ["\u0004", "a\u0004b", "!\u0004!", "\u0013\u0014\u0016", "x\u001dy", "\u0000nul",
          "\u0001\u0002\u0003", "\u007fdel", "\U00040000 plane 4", "\U00080000", "\U000f0000 private",
          "\ue000 pua", "\U0010fffd"]
    # long words and long text
    s += ["a" * 1000, "ab" * 300, "supercalifragilisticexpialidocious",
          "pneumonoultramicroscopicsilicovolcanoconiosis",
          "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
          "x" * 257, "😀" * 100, "日本" * 200, "-" * 120, "=" * 80, "_" * 50, "." * 70,
          "antidisestablishmentarianism " * 20,
          ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
           "incididunt ut labore et dolore magna aliqua. ") * 5]
    return s


POOLS = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " " * 6, "\t\n\r",
    ".,;:!?'\"-()[]{}<>/\\@#$%^&*_+=|~`", "éèêëàâäôöûüçñßøåæœ", "абвгдежзийклмнопрстуфхцчшщыэюя",
    "αβγδεζηθικλμνξοπρστυφχψω", "你好世界中文测试字符", "ひらがなカタカナ", "한국어텍스트", "مرحبالعربية",
    "नमस्तेहिन्दी", "😀😃👍🏽❤️🎉🚀🔥✨🤖", "\u200d\ufe0f\u0301\u0308", "\u00a0\u3000\u2003\u0085",
    "½²³٣१１", "'s'll're", "<|im_start|><|im_end|>",
]


def random_strings(n: int, seed: int = 20260611) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55])
        parts = []
        for _ in range(length):
            pool = rng.choice(POOLS)
            if pool.startswith("<|"):
                parts.append(rng.choice(["<|im_start|>", "<|im_end|>", "<|"]))
            elif pool.startswith("'"):
                parts.append(rng.choice(["'s", "'ll", "'re", "'", "'D"]))
            else:
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        out.append("".join(parts))
    return out


def all_strings() -> list[str]:
    seen, out = set(), []
    for t in hand_strings() + random_strings(80):
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# --------------------------------------------------------------------------------------------
# Reference tokenizers
# --------------------------------------------------------------------------------------------

def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def smollm2_reference(gguf_path: str) -> tuple[Tokenizer, dict]:
    r = gguf.GGUFReader(gguf_path)
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.pre") == "smollm"
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    control = [tokens[i] for i, t in enumerate(types) if t == 3]
    assert control == SMOL_SPECIALS, control
    tok.add_special_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False,
                                       normalized=False, special=True) for t in control])
    meta = {"chat_template": field(r, "tokenizer.chat_template"),
            "bos": int(field(r, "tokenizer.ggml.bos_token_id")),
            "eos": int(field(r, "tokenizer.ggml.eos_token_id"))}
    return tok, meta


def cases_for(tok: Tokenizer, strings: list[str], with_no_special: bool) -> list[dict]:
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    out = []
    for text in strings:
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        case = {"text": text, "ids": ids}
        decoded = tok.decode(ids, skip_special_tokens=False)
        if decoded != text:  # only stored where it differs (bytes missing from the vocabulary)
            case["decoded"] = decoded
        skipped = tok.decode(ids, skip_special_tokens=True)
        if skipped != decoded:
            case["decoded_skip_special"] = skipped
        if with_no_special and any(sp in text for sp in specials):
            tok.encode_special_tokens = True
            case["ids_no_special"] = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = False
        out.append(case)
    return out


def train_tiny(kind: str, corpus: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif kind == "split":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif kind == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise ValueError(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|sep|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    # a non-special added token (matched literally, kept by skip-special decode) and a special one
    # that strips the whitespace on its left
    tok.add_tokens([AddedToken("[MASK]", special=False, normalized=False)])
    tok.add_special_tokens([AddedToken("<|tool|>", lstrip=True, special=True, normalized=False)])
    if kind == "llama3":  # Llama 3's tokenizer.json sets ignore_merges: a word in the vocabulary is one token
        j = json.loads(tok.to_str())
        j["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(j))
    return tok


def write_tiny_gguf(tok: Tokenizer, path: str, pre: str) -> None:
    """A GGUF holding only tokenizer metadata (no tensors), from a tiny tokenizer."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    added = {a["id"]: a for a in j["added_tokens"]}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens = [""] * n
    types = [1] * n
    for t, i in vocab.items():
        tokens[i] = t
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = 3 if a["special"] else 4  # CONTROL / USER_DEFINED
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]])
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


TINY_EXTRA = ["[MASK]", "a [MASK] b", "x<|sep|>y", "hello   <|tool|>  call", "<|tool|>",
              "\n\t<|tool|>", "[MASK][MASK]", "<|endoftext|> then more", "no tool <|tool|",
              "café <|sep|> cafe\u0301"]


def chat_cases(meta: dict, smol: Tokenizer) -> dict:
    import jinja2  # rendered exactly like transformers' apply_chat_template does

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    template = env.from_string(meta["chat_template"])
    convs = [
        ("user_only", [{"role": "user", "content": "What is the capital of France?"}], True),
        ("user_only_no_prompt", [{"role": "user", "content": "Hi"}], False),
        ("with_system", [{"role": "system", "content": "You are a terse assistant."},
                         {"role": "user", "content": "Name three colors."}], True),
        ("multi_turn", [{"role": "user", "content": "Hello!"},
                        {"role": "assistant", "content": "Hi! How can I help?"},
                        {"role": "user", "content": "Tell me a joke about caches 🤖\nPlease."}], True),
        ("system_multi_turn", [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "2+2?"},
                               {"role": "assistant", "content": "4"}], False),
        ("empty", [], True),
    ]
    hf = None
    try:  # cross-check with transformers' own renderer where it is installed
        from transformers import PreTrainedTokenizerFast
        hf = PreTrainedTokenizerFast(tokenizer_object=smol)
    except ImportError:
        pass
    out = {"template": meta["chat_template"], "bos": meta["bos"], "eos": meta["eos"], "cases": []}
    for name, messages, gen in convs:
        rendered = template.render(messages=messages, add_generation_prompt=gen,
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
        if hf is not None and messages:
            via_hf = hf.apply_chat_template(messages, chat_template=meta["chat_template"], tokenize=False,
                                            add_generation_prompt=gen)
            assert via_hf == rendered, (name, via_hf, rendered)
        out["cases"].append({"name": name, "messages": messages, "add_generation_prompt": gen,
                             "rendered": rendered,
                             "ids": smol.encode(rendered, add_special_tokens=False).ids})
    return out


def check_transformers_gguf(gguf_path: str, strings: list[str], smol: Tokenizer) -> None:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return
    t = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                      gguf_file=os.path.basename(gguf_path))
    pre = json.loads(t.backend_tokenizer.to_str())["pre_tokenizer"]
    bad = [s for s in strings if t(s, add_special_tokens=False).input_ids
           != smol.encode(s, add_special_tokens=False).ids]
    print(f"transformers GGUF loader pre_tokenizer: {json.dumps(pre)}")
    print(f"  differs from SmolLM2's published tokenizer on {len(bad)}/{len(strings)} strings, e.g. {bad[:5]}")


def dump(name: str, obj) -> None:
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--skip-transformers-check", action="store_true")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    strings = all_strings()
    assert len(strings) >= 320, len(strings)
    smol, meta = smollm2_reference(args.gguf)
    dump("smollm2_cases.json", {
        "reference": "tokenizers.Tokenizer from the GGUF vocab/merges + SmolLM2's published "
                     "pre_tokenizer Sequence[Digits(individual_digits), ByteLevel(use_regex)]",
        "vocab_size": smol.get_vocab_size(with_added_tokens=True),
        "cases": cases_for(smol, strings, with_no_special=True)})

    corpus = [s for s in strings if "<|" not in s] * 3 + hand_strings()
    tiny_cases = {}
    for kind in ("bytelevel", "split", "llama3"):
        tok = train_tiny(kind, corpus)
        tok.save(os.path.join(OUT, f"tiny_{kind}.json"), pretty=False)
        print(f"wrote tiny_{kind}.json ({os.path.getsize(os.path.join(OUT, f'tiny_{kind}.json'))} bytes, "
              f"vocab {tok.get_vocab_size()})")
        tiny_cases[kind] = cases_for(tok, strings + TINY_EXTRA, with_no_special=True)
        if kind == "bytelevel":
            # the same vocabulary as a GGUF: pre "gpt2" is ByteLevel's regex, so the ids are the same
            # (except where <|tool|>'s lstrip, which GGUF cannot express, matters); and pre "falcon",
            # which kvlab does not support
            write_tiny_gguf(tok, os.path.join(OUT, "tiny_gpt2.gguf"), "gpt2")
            write_tiny_gguf(tok, os.path.join(OUT, "tiny_falcon.gguf"), "falcon")
    dump("tiny_cases.json", tiny_cases)
    dump("chat_template.json", chat_cases(meta, smol))

    if not args.skip_transformers_check:
        check_transformers_gguf(args.gguf, strings, smol)


if __name__ == "__main__":
    sys.exit(main())

"""The embedded folder tokenizes as the GGUF it came from says, checked against an independent reference.

The reference below uses neither transformers nor tokenizers: it reads the vocabulary and merges from the GGUF's
own ``tokenizer.ggml.*`` fields, splits text as llama.cpp does for ``tokenizer.ggml.pre = smollm``
(``src/llama-vocab.cpp``: ``\\p{N}`` first, then GPT-2's regex; ``src/unicode.cpp``), maps bytes as GPT-2's
``bytes_to_unicode`` and applies BPE merges by rank, in plain Python.
"""
from __future__ import annotations

import json
from functools import lru_cache

import pytest
import regex
from gguf import GGUFReader
from transformers import AutoTokenizer

from alpaca_nb import model as model_mod
from alpaca_nb.data import load_davinci_user_oriented, load_seed_tasks, load_user_oriented_tasks

GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGIT = regex.compile(r"\p{N}")


def _bytes_to_unicode() -> dict[int, str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


class GGUFReferenceTokenizer:
    """llama.cpp's ``smollm`` BPE, rebuilt from the GGUF's fields alone."""

    def __init__(self, gguf_path):
        fields = GGUFReader(str(gguf_path)).fields
        assert fields["tokenizer.ggml.model"].contents() == "gpt2"
        self.pre = fields["tokenizer.ggml.pre"].contents()
        tokens = fields["tokenizer.ggml.tokens"].contents()
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(fields["tokenizer.ggml.merges"].contents())}
        self.byte_map = _bytes_to_unicode()
        self._bpe = lru_cache(maxsize=None)(self._bpe_word)

    def _pieces(self, text: str) -> list[str]:
        # llama.cpp applies the regexes in turn, keeping both matches and the text between them
        pieces = [text]
        if self.pre == "smollm":
            pieces = [p for piece in pieces for p in _split_keep(DIGIT, piece)]
        return [p for piece in pieces for p in GPT2_SPLIT.findall(piece)]

    def _bpe_word(self, word: str) -> tuple[str, ...]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in self._pieces(text):
            word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[t] for t in self._bpe(word))
        return out


def _split_keep(pattern: regex.Pattern, text: str) -> list[str]:
    out, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > last:
            out.append(text[last:m.start()])
        out.append(m.group())
        last = m.end()
    if last < len(text):
        out.append(text[last:])
    return out


@pytest.fixture(scope="module")
def reference():
    return GGUFReferenceTokenizer(model_mod.embedded_gguf_path())


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


def _texts() -> list[str]:
    examples = load_seed_tasks() + load_user_oriented_tasks() + load_davinci_user_oriented()
    return [t for ex in examples for t in (ex.instruction, ex.input, ex.output) if t]


def test_the_embedded_gguf_declares_smollm(reference):
    assert reference.pre == "smollm"


def test_embedded_tokenizer_matches_the_gguf_reference_on_seed_and_eval_texts(tokenizer, reference):
    texts = _texts()
    assert len(texts) > 900
    with_digit_after_blank_line = [t for t in texts if regex.search(r"\n\n\d", t)]
    assert len(with_digit_after_blank_line) >= 10  # the cases the bug broke are well represented
    assert sum(bool(regex.search(r"\d", t)) for t in texts) > 100
    mismatched = [t for t in texts if tokenizer.encode(t, add_special_tokens=False) != reference.encode(t)]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} texts differ, e.g. {mismatched[0][:120]!r}"


def test_a_blank_line_before_a_number_is_one_token_and_digits_are_split(tokenizer, reference):
    text = "Steps:\n\n1. Mix 250 g of flour."
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))
    assert tokens[:4] == ["Steps", ":", "ĊĊ", "1"]
    assert ["Ġ", "2", "5", "0"] == tokens[tokens.index("ĠMix") + 1:tokens.index("ĠMix") + 5]
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)


def test_a_cached_folder_from_an_older_conversion_is_rebuilt(tmp_path, monkeypatch):
    calls = []

    def fake_convert(src, out_dir):
        calls.append(out_dir)
        (out_dir / model_mod.CONVERSION_MARKER).write_text(json.dumps({"version": model_mod.CONVERSION_VERSION}))
        return out_dir

    monkeypatch.setenv("ALPACA_NB_CACHE", str(tmp_path))
    folder = tmp_path / "models" / model_mod.MODEL_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a folder converted before the marker existed
    monkeypatch.setattr(model_mod, "convert_gguf", fake_convert)
    assert model_mod.default_model_dir() == folder and calls == [folder]
    assert model_mod.default_model_dir() == folder and calls == [folder]  # current marker: reused

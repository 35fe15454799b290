"""Lesson 07: read an exported GGUF back with an independent reader, and check it against its source.

The reader is transformers' own GGUF loader (``from_pretrained(..., gguf_file=...)``): its own tensor-name map,
its own undoing of the q/k permutation, its own hyper-parameter keys and its own tokenizer builder, sharing
nothing with :mod:`alpaca_nb.export_gguf` but the file. It dequantises every tensor to float32, so a GGUF loaded
this way runs like any Hugging Face model (no memory saved: that is llama.cpp's job). If its tokens and logits
match the source folder's on the same prompts, names, permutation, hyper-parameters and tokenizer are right.

Tolerances (:data:`TOLERANCES`) bound the largest absolute difference of any logit over the prompts; they were
set from measurements on the embedded SmolLM2-135M (README, "Lesson 07"), with headroom.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .answers import LocalModel, generate_tokens, load_local_model
from .errors import AlpacaNbError
from .sft import format_prompt

# The first 8 instructions of stanford_alpaca's inference.py (the authors' own smoke test of a trained model).
VERIFY_INSTRUCTIONS = (
    "Tell me about alpacas.",
    "Tell me about the president of Mexico in 2019.",
    "Tell me about the king of France in 2019.",
    "List all Canadian provinces in alphabetical order.",
    "Write a Python program that prints the first 10 Fibonacci numbers.",
    "Write a program that prints the numbers from 1 to 100. But for multiples of three print 'Fizz' instead of "
    "the number and for the multiples of five print 'Buzz'. For numbers which are multiples of both three and "
    "five print 'FizzBuzz'.",
    "Tell me five words that rhyme with 'shock'.",
    "Translate the sentence 'I have no mouth but I must scream' into Spanish.",
)
# Largest |logit(GGUF) - logit(source)| accepted, per export type (SmolLM2's logits span about +-30). Measured on
# the embedded model, 8 prompts: f16 0.050 (mean 0.004), q8_0 2.29 (mean 0.14, top-1 agreement 99.5 %).
TOLERANCES = {"f16": 0.1, "q8_0": 3.0}
MIN_TOP1_AGREEMENT = 0.98  # share of positions where both models predict the same next token
FILE_TYPES = {1: "f16", 7: "q8_0"}  # general.file_type (llama.cpp's LlamaFileType)


def gguf_quant(path: str | Path) -> str | None:
    """The export type of a GGUF file (``"f16"``, ``"q8_0"``) from its ``general.file_type``, else ``None``."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    return FILE_TYPES.get(int(field.contents())) if field is not None else None


def load_gguf_model(path: str | Path) -> LocalModel:
    """A GGUF file as a :class:`LocalModel` (weights dequantised to float32, tokenizer built from the file),
    ready for :func:`alpaca_nb.answers.ask` and :func:`alpaca_nb.answers.generate`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise AlpacaNbError(f"GGUF file {path} does not exist; export one with `alpaca-nb export`")
    folder, kwargs = str(path.parent), {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left", **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LocalModel(model.eval(), tokenizer, path.name, str(path))


def compare_logits(source: LocalModel, other: LocalModel, prompts: Sequence[str]) -> dict[str, Any]:
    """Both models on each prompt, one at a time (no padding): whether both tokenizers give the same ids,
    the largest and mean absolute logit difference, and how often the top-1 next token agrees."""
    import torch

    same_ids, worst, total, count, agree, positions = True, 0.0, 0.0, 0, 0, 0
    for prompt in prompts:
        ids_a = source.tokenizer(prompt, return_tensors="pt")["input_ids"]
        ids_b = other.tokenizer(prompt, return_tensors="pt")["input_ids"]
        same_ids = same_ids and ids_a.tolist() == ids_b.tolist()
        with torch.no_grad():
            a = source.model(input_ids=ids_a.to(source.model.device)).logits.float().cpu()[0]
            b = other.model(input_ids=ids_a.to(other.model.device)).logits.float().cpu()[0]
        diff = (a - b).abs()
        worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.numel()
        agree, positions = agree + int((a.argmax(-1) == b.argmax(-1)).sum()), positions + a.shape[0]
    return {"same_token_ids": same_ids, "max_abs_logit_diff": worst, "mean_abs_logit_diff": total / count,
            "top1_agreement": agree / positions}


def verify_gguf(source: str | Path | LocalModel | None, gguf: str | Path | LocalModel, n_prompts: int = 8,
                max_new_tokens: int = 32, tolerance: float | None = None) -> dict[str, Any]:
    """Check ``gguf`` (a file, or that file loaded by :func:`load_gguf_model`) against ``source`` (a folder,
    adapter folder, loaded model, or ``None``: embedded) on
    the first ``n_prompts`` of :data:`VERIFY_INSTRUCTIONS` in Alpaca's prompt: same token ids, logits within
    ``tolerance`` (default: :data:`TOLERANCES` of the file's type) with the same top-1 next token at
    :data:`MIN_TOP1_AGREEMENT` of the positions, and how many greedy answers of ``max_new_tokens`` are identical
    token for token. ``passed`` requires all of it, for ``f16`` every greedy answer identical too (8-bit rounding
    flips near-ties, after which a greedy answer goes its own way, so q8_0 only reports them)."""
    exported = gguf if isinstance(gguf, LocalModel) else load_gguf_model(gguf)
    quant = gguf_quant(exported.path)
    tolerance = tolerance if tolerance is not None else TOLERANCES.get(quant or "", TOLERANCES["q8_0"])
    src = source if isinstance(source, LocalModel) else load_local_model(source)
    prompts = [format_prompt(i) for i in VERIFY_INSTRUCTIONS[:n_prompts]]
    result = compare_logits(src, exported, prompts)
    kwargs = dict(batch_size=len(prompts), max_new_tokens=max_new_tokens, progress=False)
    greedy_a, greedy_b = generate_tokens(src, prompts, **kwargs), generate_tokens(exported, prompts, **kwargs)
    identical = sum(a == b for a, b in zip(greedy_a, greedy_b))
    within = result["max_abs_logit_diff"] <= tolerance and result["top1_agreement"] >= MIN_TOP1_AGREEMENT
    passed = result["same_token_ids"] and within and (quant != "f16" or identical == len(prompts))
    return {"gguf": exported.path, "quant": quant, "prompts": len(prompts), **result, "tolerance": tolerance,
            "logits_within_tolerance": within, "greedy_identical": identical, "greedy_compared": len(prompts),
            "max_new_tokens": max_new_tokens, "passed": passed,
            "example": {"instruction": VERIFY_INSTRUCTIONS[0],
                        "source": src.tokenizer.decode(greedy_a[0], skip_special_tokens=True).strip(),
                        "gguf": exported.tokenizer.decode(greedy_b[0], skip_special_tokens=True).strip()}}

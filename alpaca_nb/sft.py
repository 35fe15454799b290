"""Lesson 04, data side: Alpaca's prompt templates and supervised examples with the prompt masked out.

This reproduces ``train.py`` of stanford_alpaca: each record becomes ``prompt + output + EOS``; the loss
is computed only on ``output + EOS`` (labels are ``-100`` over the prompt). A tokenizer without a pad token
gets one, and the new embedding rows start at the mean of the old ones (``smart_tokenizer_and_embedding_resize``).

Two deliberate differences, both about exactness and speed rather than the recipe:

- prompt and target are tokenised separately and concatenated, so the mask covers exactly the prompt tokens
  (the original masked ``len(tokenize(prompt))`` tokens of ``tokenize(prompt + target)``, which can be off by
  one where a token straddles the boundary);
- examples are batched by length (the Trainer's ``group_by_length`` sampler, see :mod:`alpaca_nb.train`)
  instead of at random, so almost no compute goes to padding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .data import Example, load_alpaca_records
from .errors import AlpacaNbError

IGNORE_INDEX = -100
DEFAULT_PAD_TOKEN = "[PAD]"

# Verbatim from stanford_alpaca/train.py (PROMPT_DICT).
PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:"
    ),
}


def format_prompt(instruction: str, input: str = "") -> str:
    """Alpaca's prompt for one task: the template with an input when ``input`` is non-empty, else the other."""
    if input:
        return PROMPT_DICT["prompt_input"].format(instruction=instruction, input=input)
    return PROMPT_DICT["prompt_no_input"].format(instruction=instruction)


def _fields(record: Example | Mapping[str, Any], index: int) -> tuple[str, str, str]:
    """(instruction, input, output) of a record; a missing instruction or output names the record's index."""
    if isinstance(record, Example):
        return record.instruction, record.input, record.output
    if not isinstance(record, Mapping):
        raise AlpacaNbError(f"record {index} is a {type(record).__name__}, expected an object with "
                            "'instruction', 'input' and 'output'")
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str) or (key == "instruction" and not record[key].strip()):
            raise AlpacaNbError(f"record {index}: missing or empty '{key}' (every record needs 'instruction' "
                                "and 'output'; 'input' may be empty)")
    return record["instruction"], record.get("input") or "", record["output"]


def add_pad_token(tokenizer, model=None) -> int:
    """Give ``tokenizer`` a pad token if it has none; resize ``model``'s embeddings to match.

    New input and output embedding rows are set to the mean of the existing rows, as Alpaca's
    ``smart_tokenizer_and_embedding_resize``. Returns the number of tokens added (0 or 1).
    """
    if tokenizer.pad_token is not None:
        return 0
    added = tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
    if model is not None and added:
        import torch

        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
                if emb is not None:  # tied weights are set twice to the same mean
                    emb.weight[-added:] = emb.weight[:-added].mean(dim=0, keepdim=True)
    return added


def preprocess(records: Sequence[Example | Mapping[str, Any]], tokenizer, max_length: int = 512) -> list[dict]:
    """Tokenise Alpaca records into ``{"input_ids", "labels"}`` (lists of ints), one per usable record.

    ``input_ids`` = prompt tokens + output tokens + EOS, truncated to ``max_length``; ``labels`` equal
    ``input_ids`` except ``-100`` over exactly the prompt tokens. A record whose prompt alone fills
    ``max_length`` has nothing left to learn from and is dropped. The tokenizer must have an EOS token.
    """
    if not records:
        raise AlpacaNbError("no training records: give at least one {instruction, input, output} record")
    if tokenizer.eos_token_id is None:
        raise AlpacaNbError("the tokenizer has no EOS token; Alpaca's target is output + EOS")
    fields = [_fields(r, i) for i, r in enumerate(records)]
    prompts = tokenizer([format_prompt(ins, inp) for ins, inp, _ in fields])["input_ids"]
    targets = tokenizer([out for _, _, out in fields], add_special_tokens=False)["input_ids"]
    examples = []
    for prompt, target in zip(prompts, targets):
        ids = (prompt + target + [tokenizer.eos_token_id])[:max_length]
        if len(prompt) >= len(ids):
            continue
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]})
    if not examples:
        raise AlpacaNbError(f"every prompt is at least max_length={max_length} tokens long; raise max_length")
    return examples


def load_records(paths: Iterable[str | Path]) -> list[Example]:
    """All records of one or more Alpaca-format ``.json``/``.jsonl`` files, in order."""
    records: list[Example] = []
    for path in paths:
        if not Path(path).is_file():
            raise AlpacaNbError(f"{path}: training data file not found")
        records += load_alpaca_records(path)
    if not records:
        raise AlpacaNbError("no training data: give at least one Alpaca-format file with --data")
    return records


def label_mask_table(example: Mapping[str, list[int]], tokenizer) -> list[dict[str, Any]]:
    """One row per token of a preprocessed example: position, token text, and whether the loss trains on it."""
    return [{"position": i, "token": tokenizer.decode([t]), "trained": label != IGNORE_INDEX}
            for i, (t, label) in enumerate(zip(example["input_ids"], example["labels"]))]

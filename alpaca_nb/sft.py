"""Lesson 04, data side: Alpaca's prompt templates and supervised examples with the prompt masked out.

This reproduces ``train.py`` of stanford_alpaca (tatsu-lab/stanford_alpaca @ c8ea92b, ``preprocess``): each
record becomes ``prompt + output`` tokenised as one text, then EOS; the loss is computed only on
``output + EOS`` (labels are ``-100`` over the prompt). A tokenizer without a pad token gets one, and the new
embedding rows start at the mean of the old ones (``smart_tokenizer_and_embedding_resize``).
``template="alpaca-lora"`` and ``train_on_inputs=True`` reproduce tloen/alpaca-lora's ``finetune.py`` instead
(its ``templates/alpaca.json``, and the loss on every token, prompt included).

Where the prompt ends in the token sequence is found exactly, from the tokenizer's character offsets (the
original counted the tokens of the prompt tokenised alone, which can be off by one); see :func:`preprocess`.
Batching by length instead of at random is a named option (``batching="grouped"``, :mod:`alpaca_nb.train`).
ShareGPT conversations (Vicuna's data) may stand beside Alpaca records: :mod:`alpaca_nb.conversations`
renders and masks them, and :func:`preprocess` takes both kinds in one list.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .conversations import IGNORE_INDEX, Conversation, ConversationCounts, conversation_examples, load_training_file
from .data import Example
from .errors import AlpacaNbError

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


# Verbatim from tloen/alpaca-lora @ 8d58d37, templates/alpaca.json: the response header ends with a newline.
ALPACA_LORA_TEMPLATE = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}
TEMPLATES = {"stanford": PROMPT_DICT, "alpaca-lora": ALPACA_LORA_TEMPLATE}


def format_prompt(instruction: str, input: str = "", template: str = "stanford") -> str:
    """Alpaca's prompt for one task: ``template``'s text with an input when ``input`` is non-empty, else the
    other. ``template`` is ``"stanford"`` (stanford_alpaca) or ``"alpaca-lora"`` (tloen/alpaca-lora)."""
    if template not in TEMPLATES:
        raise AlpacaNbError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if input:
        return TEMPLATES[template]["prompt_input"].format(instruction=instruction, input=input)
    return TEMPLATES[template]["prompt_no_input"].format(instruction=instruction)


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


class SFTExamples(list):
    """Preprocessed examples (a list of ``{"input_ids", "labels"}``) with counts of what preprocessing did:
    ``truncated_examples`` (kept examples whose EOS ``max_length`` cut off: they never learn to stop),
    ``dropped_examples`` (prompt alone fills ``max_length``), and which rule placed the prompt/response
    boundary: ``boundary_by_offsets`` / ``boundary_by_prefix`` (see :func:`prompt_token_count`). Conversations
    add ``conversation_examples`` (examples made from them) and ``split_conversations`` (conversations split
    into several at turn boundaries); their truncated and dropped turn pairs count in the first two."""

    truncated_examples = dropped_examples = boundary_by_offsets = boundary_by_prefix = 0
    conversation_examples = split_conversations = 0


def prompt_token_count(tokenizer, prompt: str, full_ids: Sequence[int],
                       offsets: Sequence[tuple[int, int]] | None) -> tuple[int, str]:
    """How many leading tokens of ``full_ids`` (``prompt + output`` tokenised as one text) are the prompt,
    and the rule that decided: ``"offsets"`` or ``"prefix"``.

    ``"offsets"``: the prompt is every token before the first one whose character span starts at or after
    ``len(prompt)`` (special tokens such as BOS span (0, 0) and count as prompt). It applies when no token
    straddles the boundary (starts before it and ends after it) and the tokenizer gives offsets (fast ones).
    ``"prefix"`` otherwise: the token count of the prompt tokenised alone, as stanford_alpaca's
    ``_tokenize_fn`` does (a straddling token then counts as prompt when it is the prompt's last token).
    """
    end = len(prompt)
    if offsets is not None:
        n = next((i for i, (start, _) in enumerate(offsets) if start >= end), len(offsets))
        if all(stop <= end for _, stop in offsets[:n]):
            assert n == len(offsets) or offsets[n][0] >= end  # nothing before n reaches into the response
            return n, "offsets"
    return min(len(tokenizer(prompt)["input_ids"]), len(full_ids)), "prefix"


def preprocess(records: Sequence[Example | Conversation | Mapping[str, Any]], tokenizer, max_length: int = 512,
               template: str = "stanford", train_on_inputs: bool = False, conversation_template: str = "auto",
               truncate_long_turns: bool = False) -> SFTExamples:
    """Tokenise Alpaca records into ``{"input_ids", "labels"}`` (lists of ints), one per usable record.

    ``input_ids`` = ``prompt + output`` tokenised as one text (as stanford_alpaca: a SentencePiece tokenizer
    gives the response's first word no extra leading-space token), + EOS, truncated to ``max_length``.
    ``labels`` equal ``input_ids``, except ``-100`` over the prompt tokens unless ``train_on_inputs``
    (alpaca-lora's default). A record whose prompt alone fills ``max_length`` has nothing left to learn from
    and is dropped (kept when ``train_on_inputs``). The tokenizer must have an EOS token. Counts of truncated
    and dropped examples and of the boundary rule used are attributes of the returned :class:`SFTExamples`.

    A :class:`~alpaca_nb.conversations.Conversation` among ``records`` becomes one or more examples in its
    place (:func:`alpaca_nb.conversations.conversation_examples` with ``conversation_template`` and
    ``truncate_long_turns``): the loss on the assistant turns only, or on every token with ``train_on_inputs``.
    """
    if not records:
        raise AlpacaNbError("no training records: give at least one {instruction, input, output} record")
    if tokenizer.eos_token_id is None:
        raise AlpacaNbError("the tokenizer has no EOS token; Alpaca's target is output + EOS")
    examples, counts = SFTExamples(), ConversationCounts()
    alpaca = iter(_alpaca_examples([(i, r) for i, r in enumerate(records) if not isinstance(r, Conversation)],
                                   tokenizer, max_length, template, train_on_inputs, examples))
    for record in records:
        if not isinstance(record, Conversation):
            examples += [ex for ex in [next(alpaca)] if ex is not None]
            continue
        pieces = conversation_examples(record, tokenizer, max_length, conversation_template, truncate_long_turns,
                                       counts)
        examples += [p | {"labels": list(p["input_ids"])} for p in pieces] if train_on_inputs else pieces
    examples.conversation_examples, examples.split_conversations = counts.examples, counts.split
    examples.truncated_examples += counts.truncated
    examples.dropped_examples += counts.dropped
    if not examples:
        raise AlpacaNbError(f"every prompt (or conversation turn pair) is at least max_length={max_length} tokens "
                            "long; raise max_length")
    return examples


def _alpaca_examples(indexed: Sequence[tuple[int, Example | Mapping[str, Any]]], tokenizer, max_length: int,
                     template: str, train_on_inputs: bool, examples: SFTExamples) -> list[dict | None]:
    """:func:`preprocess` of the Alpaca records (with their indices in the whole list, for errors): one example
    per record, ``None`` for a dropped one; counts go to ``examples``'s attributes."""
    if not indexed:
        return []
    fields = [_fields(r, i) for i, r in indexed]
    prompts = [format_prompt(ins, inp, template) for ins, inp, _ in fields]
    texts = [prompt + out for prompt, (_, _, out) in zip(prompts, fields)]
    fast = getattr(tokenizer, "is_fast", False)
    encoded = tokenizer(texts, return_offsets_mapping=fast)
    out: list[dict | None] = []
    for i, (prompt, full) in enumerate(zip(prompts, encoded["input_ids"])):
        n_prompt, rule = prompt_token_count(tokenizer, prompt, full, encoded["offset_mapping"][i] if fast else None)
        ids = (list(full) + [tokenizer.eos_token_id])[:max_length]
        if n_prompt >= len(ids) and not train_on_inputs:
            examples.dropped_examples += 1
            out.append(None)
            continue
        examples.truncated_examples += len(full) + 1 > max_length
        setattr(examples, f"boundary_by_{rule}", getattr(examples, f"boundary_by_{rule}") + 1)
        labels = list(ids) if train_on_inputs else [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def split_validation(records: Sequence[Example], val_size: int, seed: int = 42) -> tuple[list, list]:
    """(train, validation) records: ``val_size`` records drawn at random (fixed by ``seed``) are held out, as
    alpaca-lora's ``train_test_split(test_size=val_set_size, shuffle=True, seed=42)``; 0 holds out none."""
    if val_size <= 0:
        return list(records), []
    if val_size >= len(records):
        raise AlpacaNbError(f"--val-size {val_size} leaves no training records (there are {len(records)}); "
                            "lower it, or pass --val-size 0")
    held = set(random.Random(seed).sample(range(len(records)), val_size))
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def load_records(paths: Iterable[str | Path]) -> list[Example | Conversation]:
    """All records of one or more ``.json``/``.jsonl`` files, in order: Alpaca records, and ShareGPT
    conversations beside them (see :func:`alpaca_nb.conversations.load_training_file`)."""
    records: list[Example | Conversation] = []
    for path in paths:
        if not Path(path).is_file():
            raise AlpacaNbError(f"{path}: training data file not found")
        records += load_training_file(path)
    if not records:
        raise AlpacaNbError("no training data: give at least one Alpaca-format or ShareGPT file with --data")
    return records


def label_mask_table(example: Mapping[str, list[int]], tokenizer) -> list[dict[str, Any]]:
    """One row per token of a preprocessed example: position, token text, and whether the loss trains on it."""
    return [{"position": i, "token": tokenizer.decode([t]), "trained": label != IGNORE_INDEX}
            for i, (t, label) in enumerate(zip(example["input_ids"], example["labels"]))]

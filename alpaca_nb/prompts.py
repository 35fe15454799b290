"""Alpaca's instruction-generation prompt, and the parsing and filters applied to each response.

Reproduces tatsu-lab/stanford_alpaca @ f13496211289def0ff88ae673389ae14a818b4b3: ``prompt.txt`` and, in
``generate_instruction.py``, ``encode_prompt`` and ``post_process_gpt3_response``. The header keeps
``prompt.txt``'s opening paragraph and closing line word for word, and its nine requirements in their order
with their content (the task types are exactly its "open-ended generation, classification, editing"),
reworded. Then come the example tasks as a numbered ``###`` list that the model continues. A response is
split on ``###`` into items; each item must carry ``N. Instruction:``, ``N. Input:`` and ``N. Output:``,
and then passes Alpaca's filters. Every discard is counted under a reason (see :data:`DISCARD_REASONS`).

Every deliberate difference from those files (the README's "What differs from the originals" sums them up):

1. Numbering: ``prompt.txt`` numbers its requirements 1 2 3 2 3 4 5 6 7 (a typo); ours run 1 to 9.
2. Wording: each requirement is reworded with the same content, and ``prompt.txt``'s typos are gone.
3. Item numbers: Alpaca splits an item on exactly the expected number followed by whitespace
   (``{idx}\\.\\s+(Instruction|Input|Output):``); we accept any number, spaces around the dot optional. This
   only changes anything for weak teachers that lose count.
4. Restated first number: Alpaca always prepends ``"N. Instruction:"`` to the response; we do so only when
   the response does not already start with a numbered instruction, so a chat model's reply that restates
   it parses too (Alpaca would discard that item as malformed).
5. Field order: Alpaca only checks that an item splits into seven parts; we also require the order
   Instruction, Input, Output (Alpaca would keep a swapped item with its fields mixed up).
6. Example whitespace: :func:`encode_prompt` strips each example's input and output (no effect on the 175
   seed tasks, none of which has surrounding whitespace).
7. Discards are counted by reason, with a few examples (Alpaca drops them silently); what is kept is the same.

Request settings (stop sequences, token limits) live in :mod:`alpaca_nb.generate_config`.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

NUM_TASKS = 20

PROMPT_HEADER = f"""\
You are asked to come up with a set of {NUM_TASKS} diverse task instructions. These task instructions \
will be given to a GPT model and we will evaluate the GPT model for completing the instructions.

Here are the requirements:
1. Try not to repeat the verb for each instruction to maximize diversity.
2. The language used for the instructions should also be diverse. For example, mix questions with imperative instructions.
3. The types of instructions should be diverse: open-ended generation, classification, editing and so on.
4. A GPT language model must be able to complete the instruction. For example, do not ask for any visual or \
audio output, and do not ask it to act in the world (wake you up at 5pm, set a reminder), which it cannot do.
5. The instructions should be in English.
6. The instructions should be 1 to 2 sentences long. Either an imperative sentence or a question is permitted.
7. Write an appropriate input for the instruction. The input field should hold a specific example for the \
instruction, with realistic data and no simple placeholders. It should give enough content to make the \
instruction challenging, ideally in no more than 100 words.
8. Not every instruction needs an input. When an instruction asks about general knowledge, for example \
"what is the highest peak in the world", no specific context is needed; then write "<noinput>" in the input field.
9. The output should be an appropriate response to the instruction and the input, in less than 100 words.

List of {NUM_TASKS} tasks:
"""

NO_INPUT = "<noinput>"

# Words a text-only model cannot act on (Alpaca's list); matched as whole words, any case.
BLOCKED_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                 "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")


def blocked_words_re(words: Sequence[str]) -> re.Pattern:
    """A pattern matching any of ``words`` as whole words, any case (Alpaca's and Self-Instruct's lists)."""
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


_BLOCKED_RE = blocked_words_re(BLOCKED_WORDS)

# Reasons a generated task is discarded, in the order the checks run ("similar" is the novelty filter).
DISCARD_REASONS = ("truncated", "malformed", "too_short", "too_long", "blocked_word", "write_a_program",
                   "starts_with_punctuation", "starts_non_ascii", "similar")

_ITEM_RE = re.compile(r"\d+\s*\.\s*(Instruction|Input|Output)\s*:")
_STARTS_NUMBERED_RE = re.compile(r"\s*(###\s*)?\d+\s*\.\s*Instruction\s*:")


@dataclass
class Parsed:
    """The tasks kept from one response and the count of every discard by reason."""

    tasks: list[dict[str, str]] = field(default_factory=list)
    discarded: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few discarded texts


def encode_prompt(tasks: Sequence[Mapping[str, str]]) -> str:
    """The generation prompt: header, the example ``tasks`` as a numbered ``###`` list, and the next number.

    ``tasks`` are Alpaca records (``{"instruction", "input", "output"}``, e.g. ``Example.to_alpaca()``).
    The prompt ends with ``"{len(tasks) + 1}. Instruction:"`` so a completion model continues the list.
    """
    parts = [PROMPT_HEADER]
    for i, task in enumerate(tasks, start=1):
        instruction = re.sub(r"\s+", " ", task["instruction"]).strip().rstrip(":")
        parts.append(f"###\n{i}. Instruction: {instruction}\n{i}. Input:\n{task['input'].strip() or NO_INPUT}\n"
                     f"{i}. Output:\n{task['output'].strip()}\n")
    parts.append(f"###\n{len(tasks) + 1}. Instruction:")
    return "".join(parts)


def reject(parsed: Parsed, reason: str, text: str) -> None:
    """Count one discard of ``text`` under ``reason`` in ``parsed`` (keeping up to 3 examples per reason)."""
    parsed.discarded[reason] += 1
    examples = parsed.examples.setdefault(reason, [])
    if len(examples) < 3:
        examples.append(text[:300])


def filter_reason(instruction: str, blocked: re.Pattern | None = None) -> str | None:
    """The first of Alpaca's instruction filters that ``instruction`` fails, or ``None`` if it passes.

    ``blocked`` replaces Alpaca's keyword list (Self-Instruct's is shorter, see :mod:`self_instruct_prompts`)."""
    n_words = len(instruction.split())
    if n_words <= 3:
        return "too_short"
    if n_words > 150:
        return "too_long"
    if (blocked or _BLOCKED_RE).search(instruction):
        return "blocked_word"
    if instruction.startswith("Write a program"):
        return "write_a_program"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "starts_non_ascii"
    return None


def parse_response(text: str, num_prompt_tasks: int, finish_reason: str | None) -> Parsed:
    """Split one response into tasks and apply Alpaca's filters (not the novelty filter).

    ``text`` is the model's continuation of :func:`encode_prompt` (a chat reply that restates
    ``"N. Instruction:"`` works too). When ``finish_reason == "length"`` the last item was cut off
    and is discarded as ``"truncated"``. Kept tasks are ``{"instruction", "input", "output"}``
    with ``<noinput>`` turned into ``""``.
    """
    parsed = Parsed()
    if not _STARTS_NUMBERED_RE.match(text):
        text = f"{num_prompt_tasks + 1}. Instruction:{text}"
    items = re.split(r"###", text)
    for idx, item in enumerate(items):
        if not item.strip():
            continue
        if idx == len(items) - 1 and finish_reason == "length":
            reject(parsed, "truncated", item.strip())
            continue
        fields = _ITEM_RE.split(item)
        if len(fields) != 7 or fields[1::2] != ["Instruction", "Input", "Output"]:
            reject(parsed, "malformed", item.strip())
            continue
        instruction, inp, output = (f.strip() for f in fields[2::2])
        reason = filter_reason(instruction)
        if reason:
            reject(parsed, reason, instruction)
            continue
        parsed.tasks.append({"instruction": instruction, "input": "" if inp.lower() == NO_INPUT else inp,
                             "output": output})
    return parsed

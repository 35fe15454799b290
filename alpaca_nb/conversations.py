"""Lesson 06, data side: Vicuna-style multi-turn conversations (ShareGPT records) as supervised examples.

A ShareGPT record is ``{"id", "conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}`` (the
format of FastChat's ``data/dummy_conversation.json``). Vicuna (lm-sys/FastChat, ``fastchat/train/train.py``
``preprocess``) renders a conversation with a template, tokenises it once and
trains only on the assistant turns (each with its end-of-turn token ``</s>``): every user turn, role header
and the system text are labelled ``-100``.

Here:

- :func:`load_training_file` reads a ``.json`` list or ``.jsonl`` file whose records are ShareGPT
  conversations or Alpaca records (each record one or the other); bad input names ``file: line N`` (JSONL)
  or ``file: record N`` (JSON list) and says what to fix.
- :func:`render_conversation` renders one conversation with the tokenizer's own chat template
  (``"chat_template"``; the embedded SmolLM2 has ChatML) or with FastChat's ``vicuna_v1.1`` template
  (``"{system} USER: {human} ASSISTANT: {gpt}</s>USER: ..."``, ``</s>`` being the tokenizer's EOS);
  ``"auto"`` takes the chat template when the tokenizer has one. It returns the text and the character
  spans that are trained: each assistant turn's content and its end-of-turn token.
- :func:`tokenize_conversation` tokenises the rendering once and labels a token when its character span
  (the fast tokenizer's offsets) overlaps a trained span, so the mask is exact even where a token merges
  across the boundary (it is then trained). FastChat instead counts the tokens of each piece tokenised
  alone, with a hard-coded ``-2`` for the LLaMA tokenizer.
- :func:`conversation_examples` splits a conversation longer than ``max_length`` at turn boundaries, as
  FastChat's ``fastchat/data/split_long_conversation.py`` does before training: each piece is the system turn
  (if any) followed by whole human/gpt pairs, never cut mid-turn. A single pair too long for ``max_length``
  is dropped and counted, or truncated with ``truncate_long_turns=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data import Example, alpaca_example, ensure, load_alpaca_records
from .errors import AlpacaNbError
from .fileio import read_json_or_jsonl, read_jsonl_numbered, read_text

IGNORE_INDEX = -100  # the label the loss skips (torch's CrossEntropyLoss ignore_index), as alpaca_nb.sft
ROLES = ("system", "human", "gpt")
CHAT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}  # ShareGPT -> chat-template roles
CONVERSATION_TEMPLATES = ("auto", "chat_template", "vicuna_v1.1")
# FastChat's vicuna_v1.1 (fastchat/conversation.py): system, roles USER/ASSISTANT, sep " ", sep2 "</s>".
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass(frozen=True)
class Conversation:
    """One ShareGPT conversation: ``system`` text (``None`` when it has no system turn) and the
    (human, gpt) pairs it trains on; ``source`` is its file, ``id`` its ``id`` (or record index)."""

    pairs: tuple[tuple[str, str], ...]
    system: str | None = None
    source: str = ""
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def messages(self, pairs: Sequence[tuple[str, str]] | None = None) -> list[dict[str, str]]:
        """Chat-template messages (``role``/``content``) of the system turn and ``pairs`` (default: all)."""
        out = [{"role": "system", "content": self.system}] if self.system is not None else []
        for human, gpt in self.pairs if pairs is None else pairs:
            out += [{"role": "user", "content": human}, {"role": "assistant", "content": gpt}]
        return out

    def to_sharegpt(self) -> dict[str, Any]:
        """The record as ShareGPT's JSON."""
        turns = [{"from": "system", "value": self.system}] if self.system is not None else []
        for human, gpt in self.pairs:
            turns += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        return {"id": self.id, "conversations": turns}


def conversation_from_row(row: Any, where: str) -> Conversation:
    """Check one ShareGPT record and return it as a :class:`Conversation`; ``where`` names it in errors
    (e.g. ``"data.jsonl: line 3"``).

    Turns must be objects with a known role (``human``, ``gpt``, ``system``) and a non-empty ``value``; a
    ``system`` turn may only come first; after it, roles alternate human, gpt, human, ... and at least one
    ``gpt`` turn follows. A final human turn without a reply has nothing to train on and is left out.
    """
    turns = row.get("conversations") if isinstance(row, Mapping) else None
    if not isinstance(turns, list) or not turns:
        raise AlpacaNbError(f"{where}: 'conversations' must be a non-empty list of {{\"from\", \"value\"}} turns")
    system, pairs, expected, human = None, [], "human", ""
    for j, turn in enumerate(turns):
        at = f"{where}: conversations[{j}]"
        if not isinstance(turn, Mapping) or not isinstance(turn.get("from"), str) \
                or not isinstance(turn.get("value"), str):
            raise AlpacaNbError(f"{at}: a turn needs a string 'from' (human, gpt or system) and a string 'value'")
        role, value = turn["from"], turn["value"]
        if role not in ROLES:
            raise AlpacaNbError(f"{at}: unknown role {role!r}; use 'human', 'gpt' or 'system' (ShareGPT's roles)")
        if not value.strip():
            raise AlpacaNbError(f"{at}: empty {role} turn; fill in its 'value' or remove the turn")
        if role == "system":
            if j:
                raise AlpacaNbError(f"{at}: a 'system' turn may only come first; move it to the start or drop it")
            system = value
            continue
        if role != expected:
            raise AlpacaNbError(f"{at}: roles must alternate human, gpt, human, ... (after an optional first "
                                f"system turn), but a {role!r} turn comes where a {expected!r} turn belongs; "
                                "merge or remove the out-of-order turn")
        if role == "human":
            human, expected = value, "gpt"
        else:
            pairs.append((human, value))
            expected = "human"
    if not pairs:
        raise AlpacaNbError(f"{where}: the conversation has no 'gpt' turn, so nothing to train on; add the "
                            "assistant's reply or remove the record")
    meta = {k: v for k, v in row.items() if k not in ("id", "conversations")}
    return Conversation(tuple(pairs), system, id=str(row.get("id", "")), meta=meta)


def is_conversation(row: Any) -> bool:
    """True for a ShareGPT record (an object with ``conversations``), False for anything else."""
    return isinstance(row, Mapping) and "conversations" in row


def load_training_file(path: str | Path) -> list[Example | Conversation]:
    """The records of one ``.json`` list or ``.jsonl`` file: Alpaca records as :class:`~alpaca_nb.data.Example`,
    ShareGPT records as :class:`Conversation`, in file order. A file without conversations loads exactly as
    :func:`alpaca_nb.data.load_alpaca_records`. Errors name ``path: line N`` (JSONL) or ``path: record N``."""
    path = Path(path)
    rows = read_json_or_jsonl(path)
    if not any(is_conversation(r) for r in rows):
        return load_alpaca_records(path)
    if read_text(path).lstrip()[:1] == "[":
        numbered = [(f"record {i}", row) for i, row in enumerate(rows)]
    else:
        numbered = [(f"line {n}", row) for n, row in read_jsonl_numbered(path)]
    records: list[Example | Conversation] = []
    for i, (where, row) in enumerate(numbered):
        if not is_conversation(row):
            records.append(alpaca_example(row, path, i, where))
            continue
        if "instruction" in row:
            raise AlpacaNbError(f"{path}: {where}: has both 'conversations' and 'instruction'; a record is a "
                                "ShareGPT conversation or an Alpaca record, not both")
        conv = conversation_from_row(row, f"{path}: {where}")
        records.append(Conversation(conv.pairs, conv.system, str(path), conv.id or str(i), conv.meta))
    return records


def load_dummy_conversations() -> list[Conversation]:
    """FastChat's 500 ShareGPT-format conversations (``data/dummy_conversation.json``; manifest entry
    ``sharegpt_dummy_conversations``, fetched on first use), as :class:`Conversation` records."""
    return [r for r in load_training_file(ensure("sharegpt_dummy_conversations")) if isinstance(r, Conversation)]


# --- rendering and the label mask ---------------------------------------------------------------------

@dataclass(frozen=True)
class Rendering:
    """A conversation as text: ``trained_spans`` are the ``[start, end)`` character spans the loss trains on
    (each assistant turn and its end-of-turn token); ``add_special_tokens``: whether the tokenizer adds its own
    BOS (``vicuna_v1.1``, as FastChat) or the template already wrote every special token (chat templates)."""

    text: str
    trained_spans: tuple[tuple[int, int], ...]
    template: str
    add_special_tokens: bool


def resolve_template(tokenizer, template: str = "auto") -> str:
    """``"chat_template"`` or ``"vicuna_v1.1"``: ``"auto"`` picks the tokenizer's chat template if it has one."""
    if template not in CONVERSATION_TEMPLATES:
        raise AlpacaNbError(f"unknown conversation template {template!r}; choose one of "
                            f"{', '.join(CONVERSATION_TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat_template" and not has_chat:
        raise AlpacaNbError("the tokenizer has no chat template; use conversation template 'vicuna_v1.1' "
                            "(or 'auto')")
    return template if template != "auto" else "chat_template" if has_chat else "vicuna_v1.1"


def _vicuna(conv: Conversation, pairs: Sequence[tuple[str, str]], eos: str) -> Rendering:
    """FastChat's vicuna_v1.1 (``SeparatorStyle.ADD_COLON_TWO``); a system turn replaces the default system."""
    text, spans = (VICUNA_SYSTEM if conv.system is None else conv.system) + " ", []
    for human, gpt in pairs:
        text += f"USER: {human} ASSISTANT: "
        start = len(text)
        text += gpt + eos
        spans.append((start, len(text)))
    return Rendering(text, tuple(spans), "vicuna_v1.1", True)


def _end_of_turn(suffix: str, tokenizer) -> int:
    """Where the end-of-turn token ends in ``suffix`` (the template's text after an assistant's content): the
    tokenizer's EOS if the suffix holds it, else its first special token."""
    eos = tokenizer.eos_token
    if eos and eos in suffix:
        return suffix.index(eos) + len(eos)
    hits = [(suffix.index(t), len(t)) for t in getattr(tokenizer, "all_special_tokens", []) if t and t in suffix]
    if not hits:
        raise AlpacaNbError(f"the chat template ends an assistant turn with {suffix!r}, which holds no end-of-turn "
                            "token to train; use conversation template 'vicuna_v1.1'")
    start, length = min(hits)
    return start + length


def _chat_template(conv: Conversation, pairs: Sequence[tuple[str, str]], tokenizer) -> Rendering:
    """The tokenizer's chat template: the text of all messages, and each assistant turn located by rendering the
    messages before it with the generation prompt (the assistant header) and through it."""
    messages = conv.messages(pairs)

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False,
                                             add_generation_prompt=generation_prompt)

    text, spans = render(len(messages), False), []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(k, True), render(k + 1, False)
        start, end = len(before), len(before) + len(message["content"])
        if not (text.startswith(through) and through.startswith(before + message["content"])):
            raise AlpacaNbError("the tokenizer's chat template does not render a conversation turn by turn with the "
                                "assistant's text verbatim; use conversation template 'vicuna_v1.1'")
        spans.append((start, end + _end_of_turn(through[end:], tokenizer)))
    return Rendering(text, tuple(spans), "chat_template", False)


def render_conversation(conv: Conversation, tokenizer, template: str = "auto",
                        pairs: Sequence[tuple[str, str]] | None = None) -> Rendering:
    """``conv`` (only ``pairs`` of it, when given, after its system turn) rendered with ``template``
    (see :func:`resolve_template`), with the character spans the loss trains on."""
    pairs = conv.pairs if pairs is None else pairs
    if resolve_template(tokenizer, template) == "vicuna_v1.1":
        if not tokenizer.eos_token:
            raise AlpacaNbError("the tokenizer has no EOS token; vicuna_v1.1 ends every assistant turn with it")
        return _vicuna(conv, pairs, tokenizer.eos_token)
    return _chat_template(conv, pairs, tokenizer)


def tokenize_conversation(conv: Conversation, tokenizer, template: str = "auto",
                          pairs: Sequence[tuple[str, str]] | None = None) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` of the rendering (not truncated): one tokenisation of the whole text; a token
    is trained (label = its id) when its character span overlaps a trained span, else labelled ``-100``.
    Special tokens the tokenizer adds itself (BOS; offsets ``(0, 0)``) are never trained. Needs a fast
    tokenizer (character offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise AlpacaNbError("conversations need a fast tokenizer (it gives character offsets); load the model's "
                            "tokenizer with use_fast=True")
    rendering = render_conversation(conv, tokenizer, template, pairs)
    enc = tokenizer(rendering.text, return_offsets_mapping=True, add_special_tokens=rendering.add_special_tokens)
    spans = rendering.trained_spans
    labels = [tid if any(s < b and e > a for a, b in spans) else IGNORE_INDEX
              for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])]
    return {"input_ids": list(enc["input_ids"]), "labels": labels}


@dataclass
class ConversationCounts:
    """What :func:`conversation_examples` did: ``examples`` made, conversations ``split`` into several,
    turn pairs ``truncated`` (kept, cut at ``max_length``) and ``dropped`` (longer than ``max_length``)."""

    examples: int = 0
    split: int = 0
    truncated: int = 0
    dropped: int = 0


def conversation_examples(conv: Conversation, tokenizer, max_length: int, template: str = "auto",
                          truncate_long_turns: bool = False,
                          counts: ConversationCounts | None = None) -> list[dict[str, list[int]]]:
    """``conv`` as one or more ``{"input_ids", "labels"}`` examples of at most ``max_length`` tokens.

    A conversation that fits is one example. A longer one is split at turn boundaries, greedily: each piece
    is the system turn (if any) and as many whole (human, gpt) pairs as fit. A pair that does not fit even
    alone is dropped, or, with ``truncate_long_turns``, kept cut to ``max_length`` (dropped after all when the
    cut leaves no trained token). ``counts`` (if given) is updated.
    """
    counts = counts if counts is not None else ConversationCounts()
    whole = tokenize_conversation(conv, tokenizer, template)
    if len(whole["input_ids"]) <= max_length:
        counts.examples += 1
        return [whole]
    out, i = [], 0
    while i < len(conv.pairs):
        fitting, j = None, i
        while j < len(conv.pairs):
            piece = tokenize_conversation(conv, tokenizer, template, conv.pairs[i:j + 1])
            if len(piece["input_ids"]) > max_length:
                break
            fitting, j = piece, j + 1
        if fitting is not None:
            out.append(fitting)
            i = j
            continue
        cut = {k: v[:max_length] for k, v in piece.items()}
        if truncate_long_turns and any(label != IGNORE_INDEX for label in cut["labels"]):
            out.append(cut)
            counts.truncated += 1
        else:
            counts.dropped += 1
        i += 1
    counts.examples += len(out)
    counts.split += len(out) > 1
    return out


def mask_segments(example: Mapping[str, list[int]], tokenizer) -> list[dict[str, Any]]:
    """An example's tokens grouped into runs that are all trained or all masked:
    ``[{"trained": bool, "tokens": n, "text": decoded run}, ...]`` (for reading a conversation's mask)."""
    runs: list[dict[str, Any]] = []
    for tid, label in zip(example["input_ids"], example["labels"]):
        trained = label != IGNORE_INDEX
        if not runs or runs[-1]["trained"] != trained:
            runs.append({"trained": trained, "ids": []})
        runs[-1]["ids"].append(tid)
    return [{"trained": r["trained"], "tokens": len(r["ids"]), "text": tokenizer.decode(r["ids"])} for r in runs]

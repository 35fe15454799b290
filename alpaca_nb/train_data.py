"""Lesson 04's training set: real teacher demonstrations, kept apart from the held-out evaluation tasks.

Alpaca's 52K were written by ``text-davinci-003``. Offline we have that same teacher's answers to
AlpacaEval's 805 instructions; 553 of them (datasets oasst, koala, helpful_base, vicuna) are *not* the
252 user-oriented tasks (AlpacaEval's ``selfinstruct`` subset) on which Alpaca was judged, so they can be
trained on. ``teacher="gpt4_1106_preview"`` takes GPT-4 Turbo's answers to the same instructions instead
(the "Alpaca-GPT4" idea: same instructions, a stronger teacher). Lesson 02's kept tasks are added when
there are any. The 175 seed tasks are used only when nothing else is available (``teacher=None`` and no
generated tasks).

Every record carries ``metadata.source`` (where it came from); :func:`heldout_overlap` proves that no
training instruction equals, or has ROUGE-L >= 0.7 with, any held-out task (the same
:class:`alpaca_nb.dedupe.RougeDeduplicator` that filters lesson 02's generations).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from .answers import USER_ORIENTED_DATASET, full_instruction
from .data import Example, load_alpaca_eval, load_optional_records, load_seed_tasks, load_user_oriented_tasks
from .errors import AlpacaNbError

TEACHERS = ("text_davinci_003", "gpt4_1106_preview")
OVERLAP_THRESHOLD = 0.7  # Alpaca's novelty threshold: ROUGE-L above it counts as the same task


def teacher_demonstrations(teacher: str = "text_davinci_003") -> list[Example]:
    """``teacher``'s answers to the AlpacaEval instructions outside the held-out ``selfinstruct`` subset."""
    if teacher not in TEACHERS:
        raise AlpacaNbError(f"unknown teacher {teacher!r}; choose one of {', '.join(TEACHERS)} (or None for "
                            "lesson 02's tasks only)")
    return [Example(e.instruction, e.input, e.output, f"alpaca_eval:{teacher}", e.id,
                    {"dataset": e.meta.get("dataset"), "generator": teacher})
            for e in load_alpaca_eval(teacher) if e.meta.get("dataset") != USER_ORIENTED_DATASET]


def heldout_instructions() -> list[str]:
    """The 252 held-out user-oriented tasks as single texts (instruction, blank line, input)."""
    return [full_instruction(t.instruction, t.input) for t in load_user_oriented_tasks()]


def heldout_overlap(records: Sequence[Example], heldout: Sequence[str] | None = None,
                    threshold: float = OVERLAP_THRESHOLD) -> list[dict[str, Any]]:
    """Training records that equal a held-out task or have ROUGE-L >= ``threshold`` with one.

    Both sides are compared as single texts (instruction + input). Each hit names the record's index,
    its instruction, the closest held-out task and their ROUGE-L F-measure. An empty list is the proof.
    """
    from .dedupe import RougeDeduplicator

    heldout = list(heldout_instructions() if heldout is None else heldout)
    exact = set(heldout)
    pool = RougeDeduplicator(heldout, threshold=threshold)
    hits = []
    for i, record in enumerate(records):
        text = full_instruction(record.instruction, record.input)
        scores = pool.scores(text)
        j = int(scores.argmax()) if len(scores) else -1
        score = float(scores[j]) if j >= 0 else 0.0
        if text in exact or score >= threshold:
            hits.append({"index": i, "instruction": text, "heldout": text if text in exact else heldout[j],
                         "rouge_l": 1.0 if text in exact else score})
    return hits


def _tagged(records: Sequence[Example], source: str) -> list[Example]:
    return [Example(r.instruction, r.input, r.output, source, r.id, {**r.meta, "source": source}) for r in records]


def lesson_training_set(teacher: str | None = "text_davinci_003",
                        generated: str | Path | None = None) -> tuple[list[Example], dict[str, Any]]:
    """The lesson's training records and a description of their mix.

    Sources, in order: ``teacher``'s demonstrations (see :func:`teacher_demonstrations`; ``None`` skips
    them), then lesson 02's kept tasks from ``generated`` (a missing or empty file adds nothing). Generated
    tasks that overlap a held-out task are dropped and counted. When both give nothing, the 175 seed tasks.
    The mix is ``{"sources": {source: count}, "dropped_overlapping": n, "teacher": ..., "overlap": [...]}``
    where ``overlap`` (the final check) must be empty.
    """
    sources: list[Example] = []
    if teacher is not None:
        sources += _tagged(teacher_demonstrations(teacher), f"alpaca_eval:{teacher}")
    generated_records = _tagged(load_optional_records(generated), "lesson_02") if generated else []
    clashes = {hit["index"] for hit in heldout_overlap(generated_records)}
    sources += [r for i, r in enumerate(generated_records) if i not in clashes]
    if not sources:
        sources = _tagged(load_seed_tasks(), "seed_tasks")
    overlap = heldout_overlap(sources)
    mix = {"teacher": teacher, "sources": dict(Counter(r.meta["source"] for r in sources)),
           "datasets": dict(Counter(r.meta.get("dataset") or r.meta["source"] for r in sources)),
           "n_records": len(sources), "dropped_overlapping": len(clashes), "overlap": overlap,
           "overlap_threshold": OVERLAP_THRESHOLD, "generated_path": str(generated) if generated else None}
    return sources, mix


def training_record(record: Example) -> dict[str, Any]:
    """A record as Alpaca's JSON plus ``metadata`` (source, dataset, generator), for ``train_data.json``."""
    keep = ("source", "dataset", "generator")
    return record.to_alpaca() | {"metadata": {k: record.meta[k] for k in keep if record.meta.get(k)}}


def describe_mix(mix: dict[str, Any]) -> str:
    """One line: how many records from where, and the held-out overlap count."""
    parts = ", ".join(f"{n} from {source}" for source, n in mix["sources"].items())
    return (f"{mix['n_records']} records ({parts}); {len(mix['overlap'])} overlap the 252 held-out tasks "
            f"(ROUGE-L >= {mix['overlap_threshold']} or equal)")


"""Lesson 06, Koala's lesson: the training set as a weighted mix of data sources.

Koala (Geng et al., 2023, "Koala: A Dialogue Model for Academic Research") fine-tuned LLaMA on distilled
ChatGPT conversations mixed with open datasets, and showed that what goes into the mix matters. Here every
``--data`` entry is a source: ``PATH`` (all of it; several plain paths are concatenated, as lesson 04 always
did) or ``PATH:WEIGHT`` (``train.json:0.7 sharegpt.json:0.3``): then the mix has ``mix_size`` records (default:
the sum of the sources' sizes), each source a share proportional to its weight, its records drawn with a seeded
RNG. :func:`load_training_data` returns the records and a report of what was realised per source, which the
run summary keeps as ``data_mix``.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .conversations import Conversation
from .errors import AlpacaNbError
from .sft import load_records


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` entry: a file and its weight (``None``: use all of it, unweighted)."""

    path: str
    weight: float | None = None


def parse_data_spec(spec: str) -> DataSource:
    """``"PATH"`` or ``"PATH:WEIGHT"`` as a :class:`DataSource`.

    Only a final ``:<number>`` is a weight, so ``C:\\data\\a.json`` and ``C:/data/a.json`` stay paths, and so does
    any existing file whose name holds a colon. A weight must be a positive finite number; a non-number after
    the last colon (``a.json:x``) is an error rather than a silently different file name.
    """
    spec = str(spec)
    head, sep, tail = spec.rpartition(":")
    if not sep or not head or "/" in tail or "\\" in tail or Path(spec).exists():
        return DataSource(spec)
    try:
        weight = float(tail)
    except ValueError:
        raise AlpacaNbError(f"--data {spec!r}: {tail!r} after the last ':' is not a weight; write PATH:WEIGHT with "
                            "a positive number (e.g. train.json:0.7), or PATH alone to use all of it") from None
    if not (math.isfinite(weight) and weight > 0):
        raise AlpacaNbError(f"--data {spec!r}: the weight must be a positive number (got {tail}); leave the file "
                            "out to use none of it")
    return DataSource(head, weight)


def parse_data_specs(specs: Sequence[str]) -> list[DataSource]:
    """All ``--data`` entries; weights must be given for every entry or for none, and no file twice."""
    sources = [parse_data_spec(s) for s in specs]
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        plain = ", ".join(s.path for s in sources if s.weight is None)
        raise AlpacaNbError(f"--data: give a weight to every file or to none (no weight: {plain}); e.g. "
                            "--data a.json:0.7 --data b.jsonl:0.3")
    repeated = [p for p, n in Counter(s.path for s in sources).items() if n > 1]
    if repeated:
        raise AlpacaNbError(f"--data: {', '.join(repeated)} given more than once; give each file once (raise its "
                            "weight instead)")
    return sources


def allocate(weights: Sequence[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainder: the counts sum to ``total`` exactly
    and each is within 1 of its exact share (ties go to the earlier source)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def draw(n_available: int, n_drawn: int, rng: random.Random) -> list[int]:
    """Indices of ``n_drawn`` records out of ``n_available``: a sample without replacement when there are
    enough; otherwise every record ``n_drawn // n_available`` times plus a sample of the rest (records repeat)."""
    copies, rest = divmod(n_drawn, n_available)
    return sorted(list(range(n_available)) * copies + rng.sample(range(n_available), rest))


def _kinds(records: Sequence[Any]) -> dict[str, int]:
    """How many records are ShareGPT conversations and how many Alpaca records."""
    n = sum(isinstance(r, Conversation) for r in records)
    return {"alpaca": len(records) - n, "conversation": n}


def mix_sources(sources: Sequence[tuple[DataSource, Sequence[Any]]], mix_size: int = 0,
                seed: int = 42) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The mixed records (source by source, each in file order) and the report ``{path: {"weight", "share",
    "available", "drawn", "with_replacement", "kinds"}}``.

    Unweighted sources are used whole (``mix_size`` must then be 0). Weighted ones get ``share`` = weight / sum
    of weights of ``mix_size`` records (0: the sum of their sizes), allocated by :func:`allocate` and drawn by
    :func:`draw` with ``random.Random(seed)``; ``with_replacement`` says a source was smaller than its share.
    """
    if mix_size < 0:
        raise AlpacaNbError(f"--mix-size {mix_size}: give a positive number of records (0: the sum of the sources)")
    weighted = bool(sources) and sources[0][0].weight is not None
    if mix_size and not weighted:
        raise AlpacaNbError("--mix-size needs weighted sources: write each --data entry as PATH:WEIGHT")
    if not weighted:
        return [r for _, records in sources for r in records], {
            s.path: {"weight": None, "share": len(records) / max(1, sum(len(r) for _, r in sources)),
                     "available": len(records), "drawn": len(records), "with_replacement": False,
                     "kinds": _kinds(records)} for s, records in sources}
    total = mix_size or sum(len(records) for _, records in sources)
    quotas = allocate([s.weight for s, _ in sources], total)
    rng, mixed, report = random.Random(seed), [], {}
    weight_sum = sum(s.weight for s, _ in sources)
    for (source, records), quota in zip(sources, quotas):
        chosen = [records[i] for i in draw(len(records), quota, rng)]
        mixed += chosen
        report[source.path] = {"weight": source.weight, "share": source.weight / weight_sum,
                               "available": len(records), "drawn": quota, "with_replacement": quota > len(records),
                               "kinds": _kinds(chosen)}
    return mixed, report


def load_training_data(specs: Sequence[str], mix_size: int = 0,
                       seed: int = 42) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Load every ``--data`` entry (see :func:`parse_data_spec`; Alpaca and ShareGPT files alike, via
    :func:`alpaca_nb.sft.load_records`) and mix them (:func:`mix_sources`): ``(records, report)``."""
    sources = parse_data_specs(specs)
    if not sources:
        raise AlpacaNbError("no training data: give at least one Alpaca-format or ShareGPT file with --data")
    return mix_sources([(s, load_records([s.path])) for s in sources], mix_size, seed)


def describe_data_mix(report: dict[str, dict[str, Any]]) -> str:
    """One line per source: drawn of available, the share, the kinds, and whether records repeat."""
    lines = []
    for path, r in report.items():
        weight = "all of it" if r["weight"] is None else f"weight {r['weight']:g} -> {r['share']:.0%}"
        kinds = ", ".join(f"{n} {kind}" for kind, n in r["kinds"].items() if n)
        repeat = "; smaller than its share: records repeat" if r["with_replacement"] else ""
        lines.append(f"{path}: {r['drawn']} of {r['available']} records ({weight}; {kinds}){repeat}")
    return "\n".join(lines)

"""Lesson 01: what the 175 Self-Instruct seed tasks look like — kinds, lengths and examples.

Alpaca samples 3 of these seeds into every generation prompt, so their mix of task kinds and
lengths shapes all 52K generated examples.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from .data import Example, load_seed_tasks
from .fileio import atomic_write_json
from .paths import outputs_dir
from .plots import save_figure

STAGE = "01_seed_tasks"
FIELDS = ("instruction", "input", "output")


def kind_of(example: Example) -> str:
    """``classification``, ``with input`` or ``no input`` (classification takes precedence)."""
    if example.meta.get("is_classification"):
        return "classification"
    return "with input" if example.input else "no input"


def word_lengths(examples: Sequence[Example], field: str) -> list[int]:
    """Whitespace word counts of one field (``instruction``, ``input`` or ``output``), empty fields included."""
    return [len(getattr(e, field).split()) for e in examples]


def summarize(examples: Sequence[Example]) -> dict[str, Any]:
    """Counts and length statistics (in words) of a list of seed tasks."""
    lengths = {}
    for field in FIELDS:
        values = [n for n in word_lengths(examples, field) if n > 0]
        lengths[field] = {"non_empty": len(values), "mean": round(statistics.mean(values), 1),
                          "median": statistics.median(values), "max": max(values)}
    kinds: dict[str, int] = {}
    for e in examples:
        kinds[kind_of(e)] = kinds.get(kind_of(e), 0) + 1
    return {
        "tasks": len(examples),
        "with_input": sum(bool(e.input) for e in examples),
        "classification": sum(bool(e.meta.get("is_classification")) for e in examples),
        "multi_instance": sum(e.meta.get("n_instances", 1) > 1 for e in examples),
        "kinds": kinds,
        "length_words": lengths,
    }


def examples_table(examples: Sequence[Example], per_kind: int = 3, width: int = 90):
    """A pandas DataFrame with ``per_kind`` examples of each kind, long fields shortened to ``width`` chars."""
    import pandas as pd

    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    rows = []
    for kind in ("no input", "with input", "classification"):
        for e in [e for e in examples if kind_of(e) == kind][:per_kind]:
            rows.append({"kind": kind, "instruction": short(e.instruction), "input": short(e.input),
                         "output": short(e.output)})
    return pd.DataFrame(rows)


def plot_lengths(examples: Sequence[Example]):
    """Histograms of instruction/input/output length in words on log-spaced bins (empty inputs left out)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, field in zip(axes, FIELDS):
        values = [n for n in word_lengths(examples, field) if n > 0]
        ax.hist(values, bins=np.geomspace(1, max(values) + 1, 25), color="#4C72B0")
        ax.set_xscale("log")
        ax.set_title(f"{field} ({len(values)} non-empty)")
        ax.set_xlabel("words (log scale)")
        ax.axvline(statistics.median(values), color="k", ls="--", lw=1, label=f"median {statistics.median(values):g}")
        ax.legend()
    axes[0].set_ylabel("seed tasks")
    fig.tight_layout()
    return fig


def plot_kinds(examples: Sequence[Example]):
    """A bar chart of how many seed tasks are of each kind."""
    import matplotlib.pyplot as plt

    kinds = summarize(examples)["kinds"]
    fig, ax = plt.subplots(figsize=(5, 3))
    bars = ax.bar(list(kinds), list(kinds.values()), color=["#4C72B0", "#55A868", "#C44E52"][: len(kinds)])
    ax.bar_label(bars)
    ax.set_ylabel("seed tasks")
    ax.set_title("Kinds of seed task")
    fig.tight_layout()
    return fig


def write_report(seed_tasks: str | Path | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Compute the summary, save ``summary.json``, ``examples.csv`` and the figures; return the summary.

    ``seed_tasks`` is a Self-Instruct JSONL (default: the fetched seeds); ``out_dir`` defaults to
    ``outputs/01_seed_tasks``. The summary's ``files`` lists everything written.
    """
    import matplotlib.pyplot as plt

    examples = load_seed_tasks(seed_tasks)
    out = Path(out_dir) if out_dir else outputs_dir(STAGE)
    summary = summarize(examples)
    files = [str(p) for p in save_figure(plot_lengths(examples), out, "lengths")]
    files += [str(p) for p in save_figure(plot_kinds(examples), out, "kinds")]
    plt.close("all")
    table = out / "examples.csv"
    examples_table(examples).to_csv(table, index=False)
    summary["files"] = files + [str(table), str(out / "summary.json")]
    atomic_write_json(out / "summary.json", summary)
    return summary

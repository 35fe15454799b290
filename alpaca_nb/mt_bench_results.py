"""Lesson 06, MT-bench step 3: scores per category and per turn, with standard errors, and the category figure.

FastChat's ``show_result.py --mode single`` prints each model's mean score on turn 1, on turn 2 and on both
(judgments with score -1 left out); the MT-bench paper adds a radar chart of the mean per category. Here every mean
comes with its standard error (sample standard deviation / sqrt(n), :func:`alpaca_nb.winrate.mean_sem`), ``n`` (the
scores it averages) and ``n_null`` (judgments with no usable score: left out and counted, never guessed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .model import MODEL_NAME
from .mt_bench import CATEGORY_ORDER
from .mt_bench_judge import SETTINGS_FIELD, read_judgments
from .plots import save_figure
from .winrate import mean_sem

FIGURE = "mt_bench_categories"
SUMMARY_FILE = "mt_bench_scores.json"
SMALL_CATEGORY = 10  # fewer scores than this in a category: the figure says the sample is small
OVERALL = "overall"
BOTH_TURNS = "both"


def _stats(judgments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    scores = [j["score"] for j in judgments if j.get("score") is not None]
    mean, sem = mean_sem(scores)
    return {"n": len(scores), "n_null": len(judgments) - len(scores), "mean": mean, "standard_error": sem}


def categories_of(judgments: Sequence[dict[str, Any]]) -> list[str]:
    """The categories present, in the MT-bench paper's order (writing, roleplay, reasoning, math, coding,
    extraction, stem, humanities), any others after them alphabetically; ``None`` (unknown) last."""
    present = {j.get("category") for j in judgments}
    known = [c for c in CATEGORY_ORDER if c in present]
    return known + sorted(c for c in present - set(known) if c is not None) + ([None] if None in present else [])


def score_table(judgments: Sequence[dict[str, Any]]):
    """A pandas table, one row per model, category (and ``"overall"``) and turn (1, 2 and ``"both"``): ``n``,
    ``n_null``, ``mean`` and ``standard_error`` of the scores (``None`` where undefined)."""
    import pandas as pd

    rows = []
    for model in sorted({j["model"] for j in judgments}):
        mine = [j for j in judgments if j["model"] == model]
        for category in [OVERALL, *categories_of(mine)]:
            group = mine if category == OVERALL else [j for j in mine if j.get("category") == category]
            for turn in (1, 2, BOTH_TURNS):
                chosen = group if turn == BOTH_TURNS else [j for j in group if j["turn"] == turn]
                if chosen:
                    rows.append({"model": model, "category": category, "turn": turn} | _stats(chosen))
    return pd.DataFrame(rows, columns=["model", "category", "turn", "n", "n_null", "mean", "standard_error"])


def summary(judgments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model: ``overall`` and ``turn_1`` / ``turn_2`` (FastChat's show_result columns) and ``categories``
    (each over both turns), each ``{n, n_null, mean, standard_error}``; plus the ``judges`` that graded them."""
    out: dict[str, Any] = {}
    for model in sorted({j["model"] for j in judgments}):
        mine = [j for j in judgments if j["model"] == model]
        row = {"overall": _stats(mine)}
        for turn in (1, 2):
            if any(j["turn"] == turn for j in mine):
                row[f"turn_{turn}"] = _stats([j for j in mine if j["turn"] == turn])
        row["categories"] = {str(c): _stats([j for j in mine if j.get("category") == c]) for c in categories_of(mine)}
        out[model] = row
    return {"models": out, "judges": judges_of(judgments)}


def judges_of(judgments: Sequence[dict[str, Any]]) -> list[str]:
    """The judge models that produced the judgments (from ``judge_settings``, else FastChat's ``judge`` pair)."""
    names = set()
    for j in judgments:
        model = (j.get(SETTINGS_FIELD) or {}).get("model") or (j.get("judge") or [None])[0]
        names.add(str(model))
    return sorted(names)


def caveats(judgments: Sequence[dict[str, Any]]) -> list[str]:
    """What makes the scores weak evidence, for the figure: the 135M embedded judge, several judges mixed, a category
    with fewer than ``SMALL_CATEGORY`` scores, more unusable replies than scores."""
    notes = []
    judges = judges_of(judgments)
    if any(Path(name).name == MODEL_NAME for name in judges):
        notes.append(f"judge is the embedded {MODEL_NAME} (135M): its grades are NOT evidence")
    if len(judges) > 1:
        notes.append(f"grades from {len(judges)} judges mixed: {', '.join(Path(n).name for n in judges)}")
    sizes = [s["n"] for m in summary(judgments)["models"].values() for s in m["categories"].values()]
    if sizes and min(sizes) < SMALL_CATEGORY:
        notes.append(f"small sample: {min(sizes)} scores in a category (< {SMALL_CATEGORY})")
    nulls = sum(j.get("score") is None for j in judgments)
    if nulls > len(judgments) - nulls:
        notes.append(f"{nulls} of {len(judgments)} replies had no usable score")
    return notes


def plot_categories(judgments: Sequence[dict[str, Any]], title: str = "", caveat_notes: Sequence[str] | None = None):
    """The MT-bench paper's view: a radar of each model's mean score per category (with 3 or more categories), and
    bars of the same means ± standard error, labelled with n. ``caveat_notes`` (default :func:`caveats`) are
    written in red across the figure and the bars hatched, so the figure says when it is not evidence.
    Returns the matplotlib figure (save it with :func:`alpaca_nb.plots.save_figure`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    notes = caveats(judgments) if caveat_notes is None else list(caveat_notes)
    table = summary(judgments)["models"]
    models = list(table)
    categories = [str(c) for c in categories_of(judgments)]
    radar = len(categories) >= 3
    fig = plt.figure(figsize=(12 if radar else 6.5, 4.8))
    width = 0.8 / max(1, len(models))
    if radar:
        ax = fig.add_subplot(1, 2, 1, projection="polar")
        angles = np.linspace(0, 2 * np.pi, len(categories), endpoint=False).tolist()
        for model in models:
            values = [table[model]["categories"].get(c, {}).get("mean") or 0 for c in categories]
            ax.plot(angles + angles[:1], values + values[:1], marker="o", label=model)
            ax.fill(angles + angles[:1], values + values[:1], alpha=0.15)
        ax.set_theta_offset(np.pi / 2)  # the first category at the top, then clockwise, as the paper's radar
        ax.set_theta_direction(-1)
        ax.set_xticks(angles, categories, fontsize=8)
        ax.set_ylim(0, 10)
        ax.set_rlabel_position(180 / len(categories))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("mean score per category (both turns)", fontsize=9, pad=18)
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.25, -0.12))
    ax = fig.add_subplot(1, 2 if radar else 1, 2 if radar else 1)
    x = np.arange(len(categories) + 1)
    for k, model in enumerate(models):
        stats = [table[model]["categories"].get(c, {}) for c in categories] + [table[model]["overall"]]
        bars = ax.bar(x + (k - (len(models) - 1) / 2) * width, [s.get("mean") or 0 for s in stats], width,
                      yerr=[s.get("standard_error") or 0 for s in stats], capsize=3, label=model,
                      hatch="//" if notes else None, alpha=0.6 if notes else 1.0)
        labels = [f"n={s.get('n', 0)}" + (f"\n{s['n_null']} null" if s.get("n_null") else "") for s in stats]
        ax.bar_label(bars, labels=labels, fontsize=6, padding=2)
    ax.set_xticks(x, categories + [OVERALL], rotation=30, ha="right")
    ax.set_ylim(0, 12.5 + 0.8 * max(0, len(notes) - 1) if notes else 10.5)  # room above 10 for the caveat box
    ax.set_yticks(range(0, 11, 2))
    ax.set_ylabel("score (1-10) ± standard error")
    if not radar:
        ax.legend(fontsize=7)
    ax.set_title("mean ± standard error per category (both turns)", fontsize=9)
    if notes:
        ax.text(0.5, 0.97, "\n".join(notes), transform=ax.transAxes, ha="center", va="top", fontsize=8,
                color="#B00020", wrap=True, bbox={"facecolor": "white", "edgecolor": "#B00020", "alpha": 0.9})
    fig.suptitle(title or "MT-bench single-answer grades")
    fig.tight_layout()
    return fig


def show(judgments_path: str | Path, out_dir: str | Path | None = None, title: str = "") -> dict[str, Any]:
    """Read a judgments file and write ``mt_bench_scores.json`` (:func:`summary` plus ``caveats``) and the figure
    (``mt_bench_categories.png`` / ``.svg``) to ``out_dir`` (default: the judgments file's folder); return the
    summary with ``table`` (:func:`score_table`) and ``files``."""
    import matplotlib.pyplot as plt

    from .fileio import atomic_write_json

    judgments = read_judgments(judgments_path)
    out_dir = Path(out_dir) if out_dir else Path(judgments_path).parent
    result = summary(judgments) | {"caveats": caveats(judgments), "judgments": str(judgments_path)}
    fig = plot_categories(judgments, title, result["caveats"])
    files = save_figure(fig, out_dir, FIGURE)
    plt.close(fig)
    files.append(atomic_write_json(out_dir / SUMMARY_FILE, result))
    return result | {"table": score_table(judgments), "files": [str(f) for f in files]}

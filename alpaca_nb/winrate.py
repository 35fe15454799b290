"""Lesson 05, step 3: AlpacaEval's leaderboard columns from pairwise annotations, and ROUGE-L vs the reference.

The win rates follow ``alpaca_eval.metrics`` (tatsu-lab/alpaca_eval @ 19866ff84cd815cb8907c27fd34766541813cfa0,
src/alpaca_eval/metrics/winrate.py ``get_winrate`` and helpers.py ``describe_head2head``; alpaca_eval 0.6.6):

* ``win_rate`` (``AbsoluteScoringRule``): a preference ``p`` (1 = output_1 wins, 2 = output_2 wins, 0 read as
  1.5, a draw; any number in [1, 2] is a weighted verdict) scores ``p - 1`` for output_2's generator; the win rate
  is their mean and ``standard_error`` the standard error of that mean (ddof 1), both in percent. Preferences
  that are null/NaN (unparseable) or outside [1, 2] (0 excepted) are dropped, as AlpacaEval drops them, and
  counted in ``n_dropped`` (the unparseable among them also in ``n_unparseable``). ``n_wins``, ``n_wins_base``:
  scores above / below 0.5; ``n_draws``: preferences exactly 1.5 or 0; ``n_total``: scores kept.
* ``discrete_win_rate`` (``ZeroOneScoringRule``): 1.5 is read as 0, then each preference is rounded to an integer
  (half to even, as pandas does: 2.5 -> 2, 0.5 -> 0), 0 is a draw (0.5 point), 1 and 2 score 0 and 1, anything
  else is dropped; the mean of the points, in percent, over what it keeps.
* ``length_controlled_winrate``, ``lc_standard_error``, ``lc_glm``: AlpacaEval 2's length-controlled win rate
  (:mod:`alpaca_nb.length_control`).

A preference that AlpacaEval cannot read is refused with an error naming the annotation: text, true/false and
infinite numbers. ``avg_length`` is the mean length in characters of output_2 over all annotations, truncated to
an integer as AlpacaEval does.

ROUGE-L (longest common subsequence F-measure, ``rouge-score``) against the reference answer is a weak
signal: it rewards copying the reference's words, not being right or helpful, and a better answer
phrased differently scores low. It is reported next to the judge, never instead of it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError
from .fileio import read_json


def read_annotations(path: str | Path, rouge_l: bool = False) -> list[dict[str, Any]]:
    """Read an AlpacaEval annotations file, checking every record has ``output_2`` and a valid ``preference``
    (and, with ``rouge_l``, ``output_1``: the reference answer that ROUGE-L compares with)."""
    rows = read_json(path)
    if not isinstance(rows, list) or not rows:
        raise AlpacaNbError(f"{path}: expected a non-empty JSON list of annotations "
                            "[{instruction, output_1, generator_1, output_2, generator_2, preference}]")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("output_2"), str) or "preference" not in row:
            raise AlpacaNbError(f"{path}: annotation {i}: needs 'output_2' (text) and 'preference'")
        preference_score(row["preference"], where=f"{path}: annotation {i}")
    if rouge_l:
        _check_output_1(rows, where=f"{path}: ")
    return rows


def _check_output_1(annotations: Sequence[dict[str, Any]], where: str = "") -> None:
    for i, row in enumerate(annotations):
        if not isinstance(row.get("output_1"), str):
            raise AlpacaNbError(f"{where}annotation {i}: ROUGE-L needs 'output_1' (the reference's answer, text); "
                                "judge against a reference first, or leave out --rouge-l")


def _is_missing(preference: Any) -> bool:
    return preference is None or (isinstance(preference, float) and math.isnan(preference))


def _check_preference(preference: Any, where: str) -> None:
    if _is_missing(preference):
        return
    if isinstance(preference, bool) or not isinstance(preference, (int, float)) or math.isinf(preference):
        raise AlpacaNbError(f"{where}: preference {preference!r} is refused: AlpacaEval's preference is a finite "
                            "number (1 = output_1 wins, 2 = output_2 wins, 1.5 or 0 = draw, in between = weighted) "
                            "or null (unparseable); fix or remove this annotation")


def preference_score(preference: Any, where: str = "annotation") -> float | None:
    """Output_2's score in [0, 1] for one preference as AlpacaEval's win rate reads it (``p - 1``, 0 read as 1.5),
    ``None`` for what it drops (null, NaN, outside [1, 2]); raises :class:`AlpacaNbError` for what it cannot read."""
    _check_preference(preference, where)
    if _is_missing(preference):
        return None
    p = 1.5 if preference == 0 else float(preference)
    return p - 1.0 if 1 <= p <= 2 else None


def discrete_score(preference: Any, where: str = "annotation") -> float | None:
    """Output_2's points (0, 0.5 or 1) for one preference as AlpacaEval's ``discrete_win_rate`` reads it, or
    ``None`` for what it drops: 1.5 read as 0, rounded half to even, then 0 is a draw, 1 and 2 a loss and a win."""
    _check_preference(preference, where)
    if _is_missing(preference):
        return None
    rounded = round(0.0 if preference == 1.5 else float(preference))  # Python's round is half to even, as numpy's
    if rounded == 0:
        return 0.5
    return rounded - 1.0 if rounded in (1, 2) else None


def mean_sem(scores: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean of ``scores`` and its standard error (sample standard deviation, ddof 1, over the square root of
    n); the mean is ``None`` for no scores, the standard error for fewer than two."""
    n = len(scores)
    mean = sum(scores) / n if n else None
    sem = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n) if n > 1 else None
    return mean, sem


def leaderboard(annotations: Sequence[dict[str, Any]],
                instruction_difficulty: dict[str, Any] | None = None) -> dict[str, Any]:
    """AlpacaEval 2's leaderboard columns for output_2's generator, plus ``n_dropped`` and ``n_unparseable``.

    Keys: ``win_rate``, ``standard_error``, ``n_wins``, ``n_wins_base``, ``n_draws``, ``n_total``,
    ``discrete_win_rate``, ``length_controlled_winrate``, ``lc_standard_error``, ``lc_glm``, ``avg_length``,
    ``n_dropped``, ``n_unparseable`` (see the module docstring). ``win_rate`` and ``discrete_win_rate`` are
    ``None`` when nothing is kept, ``standard_error`` when fewer than two are; the length-controlled values as
    :func:`alpaca_nb.length_control.length_controlled_winrate` says. ``instruction_difficulty``
    (:func:`alpaca_nb.length_control.read_instruction_difficulty`) switches the GLM to ``length_controlled_v1``.
    """
    from .length_control import length_controlled_winrate

    all_scores = [preference_score(a.get("preference"), where=f"annotation {i}") for i, a in enumerate(annotations)]
    scores = [s for s in all_scores if s is not None]
    mean, sem = mean_sem(scores)
    discrete, _ = mean_sem([s for s in (discrete_score(a.get("preference")) for a in annotations) if s is not None])
    return {
        "win_rate": None if mean is None else mean * 100,
        "standard_error": None if sem is None else sem * 100,
        "n_wins": sum(s > 0.5 for s in scores),
        "n_wins_base": sum(s < 0.5 for s in scores),
        "n_draws": sum(a.get("preference") in (0, 1.5) and not isinstance(a.get("preference"), bool)
                       for a in annotations),
        "n_total": len(scores),
        "discrete_win_rate": None if discrete is None else discrete * 100,
        **length_controlled_winrate(annotations, all_scores, instruction_difficulty),
        "avg_length": int(sum(len(a["output_2"]) for a in annotations) / len(annotations)) if annotations else 0,
        "n_dropped": len(annotations) - len(scores),
        "n_unparseable": sum(_is_missing(a.get("preference")) for a in annotations),
    }


def rouge_l(outputs: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure of each output against its reference (``rouge-score``, no stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(ref, out)["rougeL"].fmeasure for out, ref in zip(outputs, references, strict=True)]


def summary(annotations: Sequence[dict[str, Any]],
            instruction_difficulty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The leaderboard columns (:func:`leaderboard`) plus ``rouge_l``: the mean ROUGE-L of output_2 against
    output_1 (the reference). An annotation without ``output_1`` raises :class:`AlpacaNbError` naming it."""
    _check_output_1(annotations)
    scores = rouge_l([a["output_2"] for a in annotations], [a["output_1"] for a in annotations])
    return leaderboard(annotations, instruction_difficulty) | {"rouge_l": sum(scores) / len(scores) if scores else None}


def answer_table(reference_outputs: Sequence[dict], model_outputs: dict[str, Sequence[dict]]):
    """A pandas table, one row per instruction: the reference's answer and each model's, side by side."""
    import pandas as pd

    rows = {r["instruction"]: {"instruction": r["instruction"], r["generator"]: r["output"]}
            for r in reference_outputs}
    for outputs in model_outputs.values():
        for r in outputs:
            rows.setdefault(r["instruction"], {"instruction": r["instruction"]})[r["generator"]] = r["output"]
    return pd.DataFrame([rows[r["instruction"]] for r in next(iter(model_outputs.values()))])


def answer_stats(reference_outputs: Sequence[dict], model_outputs: dict[str, Sequence[dict]]):
    """Per generator (the reference first): number of answers, mean length in characters and words, and mean
    ROUGE-L against the reference answer of the same instruction. (The reference scores just under 1 against
    itself: rouge-score's tokenizer keeps only ASCII letters and digits, so a non-English answer scores 0.)"""
    import pandas as pd

    references = {r["instruction"]: r["output"] for r in reference_outputs}
    rows = []
    for name, outputs in {reference_outputs[0]["generator"]: reference_outputs, **model_outputs}.items():
        texts = [r["output"] for r in outputs]
        scores = rouge_l(texts, [references[r["instruction"]] for r in outputs])
        rows.append({"generator": name, "n": len(texts), "avg_length": sum(map(len, texts)) / len(texts),
                     "avg_words": sum(len(t.split()) for t in texts) / len(texts),
                     "rouge_l": sum(scores) / len(scores)})
    return pd.DataFrame(rows).set_index("generator")

def plot_win_rates(table: dict[str, dict[str, Any]], title: str = "", caveats: Sequence[str] = ()) -> Any:
    """Bar chart of ``win_rate`` ± ``standard_error`` per model (``{model: leaderboard(...)}``).

    A dashed line marks 50 % (as good as the reference); each bar is labelled with its number of parsed
    verdicts. ``caveats`` (e.g. from :func:`alpaca_nb.judge_check.caveats`) are written in red across the
    plot and the bars are hatched, so the figure itself says when its numbers are not evidence.
    Returns the matplotlib figure (save it with :func:`alpaca_nb.plots.save_figure`).
    """
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.8 + 1.6 * len(names)), 3.8))
    ax.bar(names, [table[m]["win_rate"] or 0 for m in names], yerr=[table[m]["standard_error"] or 0 for m in names],
           capsize=6, color="#4C72B0", hatch="//" if caveats else None, alpha=0.6 if caveats else 1.0)
    ax.axhline(50, ls="--", color="grey", lw=1)
    ax.set_ylim(0, 128 if caveats else 100)  # room above 100 % for the caveat box
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("win rate vs reference (%)")
    ax.set_title(title)
    for i, m in enumerate(names):
        ax.annotate(f"n={table[m]['n_total']}", (i, 2), ha="center", color="white")
    if caveats:
        ax.text(0.5, 0.97, "\n".join(caveats), transform=ax.transAxes, ha="center", va="top", wrap=True,
                fontsize=8, color="#B00020", bbox={"facecolor": "white", "edgecolor": "#B00020", "alpha": 0.9})
    fig.tight_layout()
    return fig


def plot_raw_vs_lc(table: dict[str, dict[str, Any]], annotations: dict[str, Sequence[dict[str, Any]]] | None = None,
                   title: str = "") -> Any:
    """Raw vs length-controlled win rate per model (left; ``{model: leaderboard(...)}``), and, given each model's
    annotations, the length bias behind the gap (right): output_2's score against how much longer it is than
    output_1 (characters), with the mean score per length bin. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    fig, axes = plt.subplots(1, 2 if annotations else 1, figsize=(11 if annotations else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(names))
    for offset, key, err, label in ((-0.2, "win_rate", "standard_error", "raw"),
                                    (0.2, "length_controlled_winrate", None, "length-controlled")):
        bars = ax.bar(x + offset, [table[m].get(key) or 0 for m in names], width=0.4, label=label,
                      yerr=[table[m].get(err) or 0 for m in names] if err else None, capsize=4)
        ax.bar_label(bars, fmt="%.1f", padding=2)
    ax.set_xticks(x, names)
    ax.axhline(50, ls="--", color="grey", lw=1)
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate vs reference (%)")
    ax.legend(fontsize=8)
    ax.set_title(title)
    if annotations:
        ax = axes[0][1]
        for name, rows in annotations.items():
            pairs = [(len(a["output_2"]) - len(a.get("output_1") or ""), s) for a in rows
                     if (s := preference_score(a.get("preference"))) is not None]
            if not pairs:
                continue
            delta, score = np.array(pairs, dtype=float).T
            ax.scatter(delta, score, s=8, alpha=0.3, label=name)
            edges = np.unique(np.quantile(delta, np.linspace(0, 1, 9)))
            bins = np.clip(np.digitize(delta, edges[1:-1]), 0, len(edges) - 2)
            centres = [delta[bins == b].mean() for b in range(len(edges) - 1) if (bins == b).any()]
            means = [score[bins == b].mean() for b in range(len(edges) - 1) if (bins == b).any()]
            ax.plot(centres, means, marker="o")
        ax.axvline(0, ls="--", color="grey", lw=1)
        ax.set_xlabel("len(model answer) - len(reference answer), characters")
        ax.set_ylabel("score (0 = reference wins, 1 = model wins)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

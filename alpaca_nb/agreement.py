"""Lesson 05: does the judge agree with people? A filled blind sheet against the judge's verdicts on the same items.

Both sides are read from the model's point of view — ``model_wins``, ``tie`` or ``reference_wins`` — the rater's
label un-blinded with the sheet's key (:func:`alpaca_nb.human_eval.unblind_sheet`), the judge's from its AlpacaEval
annotation (``output_1`` the reference, ``output_2`` the model; ``preference`` 2 model wins, 1 reference wins, 1.5
or 0 a draw, and, with ``--order both``, a mean such as 1.75 read as its nearer side, as AlpacaEval's ``zero_one``
rule rounds it). Items are matched by instruction. An item the rater left blank, or one the judge could not parse
(``preference: null``), is left out of every number and counted (``unlabeled_by_human``, then, of the labelled
items, ``unparseable_by_judge``; with ``n_compared`` they add up to ``n_items``).

The numbers, over the compared items:

- ``agreement``: the share where both give the same verdict, a tie counting as a verdict of its own — FastChat's
  "with tie" agreement (lm-sys/FastChat @ 0283a0bb, ``fastchat/llm_judge/compute_agreement.py``,
  ``get_mt_bench_agreement(..., ban=[])``), the same as AlpacaEval 1's ``zero_one`` scoring rule;
- ``agreement_without_ties`` over ``n_without_ties``: FastChat's "without tie" (``ban=["tie"]``): items where
  either side says tie are left out;
- ``alpaca_eval_agreement``: AlpacaEval 2's "Human agreement" (tatsu-lab/alpaca_eval @ 039ccaaf,
  ``src/alpaca_eval/analyze.py``, ``get_metrics_evaluator``, whose default scoring rule is @ d483da3e
  ``src/alpaca_eval/metrics/helpers.py``, ``AbsoluteScoringRule``: 1 - mean ``|p_human - p_judge|``), where a tie
  against a win scores half and the judge's fractional preference is used as is (AlpacaEval compares with the
  majority of four crowd-workers; here it is one rater's sheet);
- ``cohen_kappa``: Cohen's κ over the three verdicts, (p_o - p_e) / (1 - p_e), p_e from each side's own label
  frequencies — agreement beyond what two raters with those label rates would reach by chance (1 perfect, 0 chance,
  below 0 worse than chance); ``None`` when p_e = 1 (both always give the one same verdict), where it is undefined;
- ``confusion``: ``{human verdict: {judge verdict: count}}`` (rows the rater, columns the judge).

Every share is a fraction in [0, 1], ``None`` when nothing was compared. κ and the table are scikit-learn's
``cohen_kappa_score`` (unweighted) and ``confusion_matrix`` over the three verdicts, in that order.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError
from .human_eval import PREFERENCES, VERDICTS, key_path_for, unblind_sheet
from .winrate import preference_score, read_annotations


def judge_verdict(preference: Any) -> str | None:
    """``"model_wins"``, ``"tie"`` or ``"reference_wins"`` from an AlpacaEval preference (output_2 = the model), or
    ``None`` when unparseable; a fractional mean goes to its nearer side, exactly 1.5 (or 0) is a tie."""
    score = preference_score(preference)
    if score is None:
        return None
    return "model_wins" if score > 0.5 else "reference_wins" if score < 0.5 else "tie"


def confusion_table(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``{first: {second: count}}`` over :data:`~alpaca_nb.human_eval.VERDICTS` for (first, second) verdict pairs
    (scikit-learn's ``confusion_matrix``: rows the first rater, columns the second)."""
    if not pairs:
        return {row: {col: 0 for col in VERDICTS} for row in VERDICTS}
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix([p[0] for p in pairs], [p[1] for p in pairs], labels=list(VERDICTS))
    return {row: {col: int(matrix[i][j]) for j, col in enumerate(VERDICTS)} for i, row in enumerate(VERDICTS)}


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's κ of two raters' (first, second) verdicts: scikit-learn's ``cohen_kappa_score`` (unweighted), ``None``
    where it is undefined (no pairs, or chance agreement 1: both always give the one same verdict)."""
    if not pairs:
        return None
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = cohen_kappa_score([p[0] for p in pairs], [p[1] for p in pairs], labels=list(VERDICTS))
    return None if math.isnan(kappa) else float(kappa)


def _same_text(a: str, b: str) -> bool:
    """Equal up to whitespace (a spreadsheet may turn ``\\n`` into ``\\r\\n`` or trim a cell)."""
    return a.split() == b.split()


def _judged_by_instruction(annotations: Sequence[dict], path: Path | str) -> dict[str, dict]:
    judged: dict[str, tuple[int, dict]] = {}
    for i, a in enumerate(annotations):
        if not (isinstance(a, dict) and isinstance(a.get("instruction"), str) and "preference" in a):
            raise AlpacaNbError(f"{path}: annotation {i}: needs 'instruction' (text, to be matched with the sheet) "
                                "and 'preference'; give AlpacaEval annotations as `alpaca-nb judge` writes them")
        norm = " ".join(a["instruction"].split())
        if norm in judged:
            raise AlpacaNbError(f"{path}: annotations {judged[norm][0]} and {i} judge the same instruction "
                                f"{a['instruction'][:60]!r}; keep one annotation per instruction")
        judged[norm] = (i, a)
    return {norm: a for norm, (_, a) in judged.items()}


def agreement_with_judge(sheet_path: str | Path, judge_annotations: str | Path | Sequence[dict],
                         key_path: str | Path | None = None) -> dict[str, Any]:
    """How far the judge's verdicts agree with a filled sheet's; ``judge_annotations`` is an AlpacaEval annotations
    file or the list :func:`alpaca_nb.judge.judge` returned.

    Returns ``model``, ``reference``, ``judge`` (the annotations' ``annotator``), the counts ``n_items``,
    ``n_compared``, ``unlabeled_by_human``, ``unparseable_by_judge``, and the numbers of the module docstring.
    Annotations of another model (``generator_2``), ones missing any of the sheet's instructions, or whose answers
    differ from the sheet's on a labelled item (another run of the model, another reference) raise
    :class:`AlpacaNbError` naming both files; a bad sheet, key or annotations file is refused as by
    :func:`~alpaca_nb.human_eval.score_sheet` and :func:`~alpaca_nb.winrate.read_annotations`.
    """
    sheet_path = Path(sheet_path)
    key, rows = unblind_sheet(sheet_path, key_path)
    if isinstance(judge_annotations, (str, Path)):
        annotations_path: Path | str = Path(judge_annotations)
        annotations = read_annotations(annotations_path)
    else:
        annotations_path, annotations = "the judge's annotations", list(judge_annotations)
    fix = f"give the judge's annotations of the model outputs that {sheet_path} was exported from"
    others = sorted({str(a["generator_2"]) for a in annotations if "generator_2" in a} - {key["model"]})
    if others:
        raise AlpacaNbError(f"{annotations_path} holds annotations of model {others[0]!r}, but the sheet "
                            f"{sheet_path} compares {key['model']!r} (its key {key_path or key_path_for(sheet_path)}); "
                            f"{fix}")
    judged = _judged_by_instruction(annotations, annotations_path)
    unjudged = [r for r in rows if " ".join(r["instruction"].split()) not in judged]
    if unjudged:
        raise AlpacaNbError(f"{annotations_path} does not judge {len(unjudged)} of the {len(rows)} items of "
                            f"{sheet_path}, e.g. item {unjudged[0]['item']} {unjudged[0]['instruction'][:60]!r}; "
                            f"{fix}")
    pairs, prefs, unparseable = [], [], 0
    for row in rows:
        if row["verdict"] is None:
            continue
        a = judged[" ".join(row["instruction"].split())]
        for side, field in (("model", "output_2"), ("reference", "output_1")):
            if isinstance(a.get(field), str) and not _same_text(a[field], row[f"output_{side}"]):
                raise AlpacaNbError(f"{annotations_path}: the {side}'s answer ({field}) to item {row['item']} "
                                    f"{row['instruction'][:60]!r} is not the one on {sheet_path}; {fix}")
        verdict = judge_verdict(a["preference"])
        if verdict is None:
            unparseable += 1
            continue
        pairs.append((row["verdict"], verdict))
        prefs.append((PREFERENCES[row["verdict"]], float(a["preference"]) or 1.5))  # 0 is AlpacaEval's old draw
    n = len(pairs)
    decided = [(h, j) for h, j in pairs if "tie" not in (h, j)]
    share = lambda hits, total: hits / total if total else None  # noqa: E731
    return {
        "model": key["model"], "reference": key["reference"],
        "judge": ", ".join(sorted({str(a["annotator"]) for a in annotations if "annotator" in a})) or None,
        "n_items": len(rows), "n_compared": n,
        "unlabeled_by_human": sum(r["verdict"] is None for r in rows), "unparseable_by_judge": unparseable,
        "agreement": share(sum(h == j for h, j in pairs), n),
        "agreement_without_ties": share(sum(h == j for h, j in decided), len(decided)),
        "n_without_ties": len(decided),
        "alpaca_eval_agreement": share(n - sum(abs(h - j) for h, j in prefs), n),
        "cohen_kappa": cohen_kappa(pairs),
        "confusion": confusion_table(pairs),
    }

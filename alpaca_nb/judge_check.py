"""Lesson 05, step 0: a judge must prove itself before its win rate is believed.

Before judging our models we give the judge pairs whose answer is known in advance: on AlpacaEval
instructions, GPT-4 Turbo's answer (``gpt4_1106_preview``) against the real Alpaca 7B's (``alpaca-7b``),
picked among the items where AlpacaEval 2's own judge (GPT-4 Turbo, weighted) clearly preferred GPT-4
Turbo (preference <= ``max_preference``, from its published annotations). Each pair is judged in both
orders with the same prompt and parser as :func:`alpaca_nb.judge.judge`. Three numbers come out:

- **agreement**: of the decided verdicts (``a`` or ``b``), the share that prefer the stronger answer;
- **position bias**: of the decided verdicts, the share that pick whichever answer was shown first
  (a judge that always says "Output (a)" scores 100 %, an unbiased one about 50 %);
- **unparseable**: the share of replies that name no winner.

The judge **passes** when agreement >= :data:`MIN_AGREEMENT`, position bias <= :data:`MAX_POSITION_BIAS`
and unparseable <= :data:`MAX_UNPARSEABLE` (our addition: a judge that answers two of 48 prompts is no
evidence either). A failed check does not hide the win rate: it marks it, on the figure and in the table,
as not evidence.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from .data import ensure, validate_file
from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json
from .judge_weighted import p_output
from .server import Endpoint

STRONG, WEAK = "gpt4_1106_preview", "alpaca-7b"
ANNOTATIONS = "alpaca_eval2_alpaca_7b_annotations"  # manifest entry: AlpacaEval 2's verdicts on the pairs
MIN_AGREEMENT = 0.8
MAX_POSITION_BIAS = 0.7
MAX_UNPARSEABLE = 0.5
CHECK_FILE = "judge_check.json"
SMALL_SAMPLE = 50  # fewer decided verdicts than this: the figure says the sample is small


def known_pairs(n: int = 24, seed: int = 0, max_preference: float = 1.05,
                max_chars: int | None = 2500) -> tuple[list[dict], list[dict]]:
    """``n`` AlpacaEval pairs with a known winner, as (weak ``model_outputs``, strong ``model_outputs``).

    Candidates are the items where AlpacaEval 2's judge gave ``preference <= max_preference`` (1 = GPT-4
    Turbo's answer better, 2 = Alpaca 7B's), and, with ``max_chars``, whose instruction and two answers
    total at most that many characters (keeps prompts short for a small local judge). A seeded draw.
    """
    path = ensure(ANNOTATIONS)
    validate_file(path, "annotations")
    rows = [a for a in read_json(path) if a["preference"] is not None and a["preference"] <= max_preference
            and (max_chars is None or len(a["instruction"]) + len(a["output_1"]) + len(a["output_2"]) <= max_chars)]
    if n < 1 or n > len(rows):
        raise AlpacaNbError(f"--n must be between 1 and {len(rows)} (pairs with a known winner); got {n}")
    rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]
    record = lambda a, key, gen: {"instruction": a["instruction"], "output": a[key], "generator": gen,  # noqa: E731
                                  "dataset": a.get("dataset")}
    return [record(a, "output_2", WEAK) for a in rows], [record(a, "output_1", STRONG) for a in rows]


def check_metrics(annotations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Agreement, position bias and unparseable rate over every judgement of ``annotations``, where
    ``output_1`` is the stronger answer (as :func:`run_judge_check` sets it up)."""
    verdicts = [(j["first"], j["verdict"]) for a in annotations for j in a["judgements"]]
    decided = [(first, v) for first, v in verdicts if v in ("a", "b")]
    strong = sum((v == "a") == (first == 1) for first, v in decided)
    first_picked = sum(v == "a" for _, v in decided)
    n = len(verdicts)
    return {"n": len(annotations), "n_verdicts": n, "n_decided": len(decided),
            "n_ties": sum(v == "tie" for _, v in verdicts), "n_unparseable": sum(v is None for _, v in verdicts),
            "agreement": strong / len(decided) if decided else None,
            "position_bias": first_picked / len(decided) if decided else None,
            "unparseable": sum(v is None for _, v in verdicts) / n if n else None}


def weighted_metrics(annotations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The same three numbers for the weighted verdicts, plus ``calibration``, where ``output_1`` is the stronger
    answer: ``agreement`` = pairs whose mean p(stronger) over both orders is above 0.5 (AlpacaEval 2's debiased
    preference); ``position_bias`` = judgements that give the answer shown first p > 0.5; ``calibration`` = the mean
    p(stronger) over judgements; ``unparseable`` = judgements without label probabilities."""
    judgements = [j for a in annotations for j in a["judgements"]]
    scored = [j for j in judgements if j.get("p_a") is not None]
    p_strong = [p_output(j, 1) for j in scored]
    pairs = []
    for a in annotations:
        ps = [p_output(j, 1) for j in a["judgements"] if j.get("p_a") is not None]
        if ps and len(ps) == len(a["judgements"]):
            pairs.append(sum(ps) / len(ps))
    decided = [p for p in pairs if p != 0.5]
    n = len(judgements)
    return {"n": len(annotations), "n_verdicts": n, "n_decided": len(decided), "n_ties": len(pairs) - len(decided),
            "n_unparseable": n - len(scored),
            "agreement": sum(p > 0.5 for p in decided) / len(decided) if decided else None,
            "position_bias": sum(j["p_a"] > 0.5 for j in scored) / len(scored) if scored else None,
            "calibration": sum(p_strong) / len(p_strong) if p_strong else None,
            "unparseable": (n - len(scored)) / n if n else None}


def verdict(metrics: dict[str, Any], min_agreement: float = MIN_AGREEMENT,
            max_position_bias: float = MAX_POSITION_BIAS, max_unparseable: float = MAX_UNPARSEABLE) -> dict[str, Any]:
    """``metrics`` plus ``passed`` (bool), ``reasons`` (why it failed) and the thresholds used."""
    reasons = []
    if not metrics["n_decided"]:
        reasons.append("no decided verdict")
    else:
        if metrics["agreement"] < min_agreement:
            reasons.append(f"agreement {metrics['agreement']:.0%} < {min_agreement:.0%}")
        if metrics["position_bias"] > max_position_bias:
            reasons.append(f"position bias {metrics['position_bias']:.0%} > {max_position_bias:.0%}")
    if metrics["unparseable"] is not None and metrics["unparseable"] > max_unparseable:
        reasons.append(f"unparseable {metrics['unparseable']:.0%} > {max_unparseable:.0%}")
    return metrics | {"passed": not reasons, "reasons": reasons,
                      "thresholds": {"min_agreement": min_agreement, "max_position_bias": max_position_bias,
                                     "max_unparseable": max_unparseable}}


def run_judge_check(endpoint: Endpoint, n: int = 24, seed: int = 0, max_tokens: int = 12,
                    out_dir: str | Path | None = None, progress: bool = True, verdict_method: str = "weighted",
                    **thresholds) -> dict[str, Any]:
    """Judge ``n`` known pairs in both orders with ``endpoint``; return (and write ``judge_check.json``) the
    verdict. The raw annotations go to ``judge_check_annotations.json`` beside it (resumable).

    The same requests give both methods: the result keeps ``"text"`` and (where the judge gave label
    probabilities) ``"weighted"`` metrics, each with its own ``passed``; the top-level numbers and ``passed`` are
    those of ``method``: ``verdict_method`` when available, else ``text``."""
    from .judge import judge

    weak, strong = known_pairs(n, seed)
    out = Path(out_dir) if out_dir else None
    annotations = judge(weak, strong, endpoint, order="both", seed=seed, max_tokens=max_tokens,
                        out_path=out / "judge_check_annotations.json" if out else None, progress=progress,
                        verdict=verdict_method)
    methods = {"text": verdict(check_metrics(annotations), **thresholds)}
    weighted = weighted_metrics(annotations)
    if weighted["n_unparseable"] < weighted["n_verdicts"]:
        methods["weighted"] = verdict(weighted, **thresholds)
    method = verdict_method if verdict_method in methods else "text"
    result = methods[method] | methods | {"method": method, "judge": Path(endpoint.model).name, "strong": STRONG,
                                          "weak": WEAK, "seed": seed, "max_tokens": max_tokens}
    if out:
        atomic_write_json(out / CHECK_FILE, result, secrets=[endpoint.api_key])
    return result


def read_check(path: str | Path) -> dict[str, Any]:
    """A ``judge_check.json``; a file without ``passed`` is an error naming it."""
    result = read_json(path)
    if not isinstance(result, dict) or not isinstance(result.get("passed"), bool):
        raise AlpacaNbError(f"{path}: not a judge check result (no boolean 'passed'); run `alpaca-nb judge-check`")
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def summary_line(result: dict[str, Any]) -> str:
    """One line for people: PASSED or FAILED, the three numbers and, when failed, why."""
    head = "PASSED" if result["passed"] else "FAILED"
    method = result.get("method", "text")
    line = (f"judge check {head} ({result.get('judge', 'judge')}, {method} verdicts, {result['n']} pairs x 2 orders): "
            f"agreement {_pct(result['agreement'])}, position bias {_pct(result['position_bias'])}, "
            f"unparseable {_pct(result['unparseable'])}")
    if result.get("calibration") is not None:
        line += f", calibration {result['calibration']:.2f}"
    other = "text" if method == "weighted" else "weighted"
    if isinstance(result.get(other), dict):
        o = result[other]
        line += (f" | {other}: agreement {_pct(o['agreement'])}, position bias {_pct(o['position_bias'])}, "
                 f"{'passed' if o['passed'] else 'failed'}")
    if result["passed"]:
        return line
    return f"{line} [{'; '.join(result['reasons'])}]: its win rates are not evidence"


def caveats(table: dict[str, dict[str, Any]], check: dict[str, Any] | None) -> list[str]:
    """What makes a win-rate figure unreliable: a judge that failed (or skipped) its check, a small sample."""
    notes = []
    if check is None:
        notes.append("judge not checked: win rates are not evidence")
    elif not check["passed"]:
        notes.append(f"judge FAILED its sanity check ({'; '.join(check['reasons'])}): NOT evidence")
    sizes = [row.get("n_total") or 0 for row in table.values()]
    if sizes and min(sizes) < SMALL_SAMPLE:
        notes.append(f"small sample: {min(sizes)} decided verdicts (< {SMALL_SAMPLE})")
    return notes


def mark_leaderboard(table: dict[str, dict[str, Any]], check: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each leaderboard row plus ``judge_check`` ("passed", "failed" or "not run") and ``evidence`` (bool)."""
    status = "not run" if check is None else ("passed" if check["passed"] else "failed")
    return {name: row | {"judge_check": status, "evidence": status == "passed"} for name, row in table.items()}


def plot_methods(result: dict[str, Any], title: str = "") -> Any:
    """Text vs weighted verdicts of one judge check side by side: agreement and position bias (bars, %), with the
    pass thresholds as dashed lines. A method that failed says so in red on its bars; the figure's note says how
    many pairs it rests on. Returns the matplotlib figure (save it with :func:`alpaca_nb.plots.save_figure`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [m for m in ("text", "weighted") if isinstance(result.get(m), dict)]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = np.arange(len(methods))
    for offset, key, label, color in ((-0.2, "agreement", "agreement", "#4C72B0"),
                                      (0.2, "position_bias", "position bias", "#DD8452")):
        bars = ax.bar(x + offset, [100 * (result[m][key] or 0) for m in methods], width=0.4, label=label, color=color)
        ax.bar_label(bars, fmt="%.0f%%", padding=2)
    thresholds = result[methods[0]]["thresholds"] if methods else {}
    if thresholds:
        ax.axhline(100 * thresholds["min_agreement"], ls="--", color="#4C72B0", lw=1)
        ax.axhline(100 * thresholds["max_position_bias"], ls="--", color="#DD8452", lw=1)
    ax.axhline(50, ls=":", color="grey", lw=1)
    labels = [f"{m}\n{'passed' if result[m]['passed'] else 'FAILED'}" for m in methods]
    ax.set_xticks(x, labels)
    for tick, m in zip(ax.get_xticklabels(), methods):
        tick.set_color("black" if result[m]["passed"] else "#B00020")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 25))
    ax.set_ylabel("% (dashed: pass thresholds; dotted: a coin)")
    ax.set_title(title or f"judge check: {result.get('judge', 'judge')}, {result['n']} known pairs x 2 orders")
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    if result["n"] < SMALL_SAMPLE:
        ax.text(0.99, 0.97, f"small sample: {result['n']} pairs", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color="#B00020")
    fig.tight_layout()
    return fig

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
                    out_dir: str | Path | None = None, progress: bool = True, **thresholds) -> dict[str, Any]:
    """Judge ``n`` known pairs in both orders with ``endpoint``; return (and write ``judge_check.json``) the
    verdict. The raw annotations go to ``judge_check_annotations.json`` beside it (resumable)."""
    from .judge import judge

    weak, strong = known_pairs(n, seed)
    out = Path(out_dir) if out_dir else None
    annotations = judge(weak, strong, endpoint, order="both", seed=seed, max_tokens=max_tokens,
                        out_path=out / "judge_check_annotations.json" if out else None, progress=progress)
    result = verdict(check_metrics(annotations), **thresholds) | {
        "judge": Path(endpoint.model).name, "strong": STRONG, "weak": WEAK, "seed": seed, "max_tokens": max_tokens}
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
    line = (f"judge check {head} ({result.get('judge', 'judge')}, {result['n']} pairs x 2 orders): agreement "
            f"{_pct(result['agreement'])}, position bias {_pct(result['position_bias'])}, "
            f"unparseable {_pct(result['unparseable'])}")
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

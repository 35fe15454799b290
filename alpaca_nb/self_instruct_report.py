"""Lesson 02's reading of a Self-Instruct run: one task through the four steps, and the two recipes side by side.

:func:`trace_task` follows one instruction from step 1 (where it came from, its nearest seeds) through step 2
(the classifier's answer), step 3 (the prompt's style and the raw reply) to step 4 (the instances kept and
why others were dropped). :func:`recipe_comparison` tabulates Alpaca's recipe and Self-Instruct's on what they
spent and what they produced. Nothing here sends a request.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import self_instruct_prompts as sip
from .dedupe import max_scores
from .generate_config import load_regen, read_summary
from .generate_cost import PRICES_AS_OF, PRICES_PER_1M, cost_usd
from .self_instruct_files import finish_reason, load_outputs


def pick_task(run: dict[str, Any]) -> str | None:
    """The instruction to show: the first kept classification task, else the first kept task, else the first
    task with instances, else the first instruction (``None`` for an empty run)."""
    kept = [r["instruction"] for r in run["training"]]
    clf = [i for i in kept if sip.parse_clf(run["classification"].get(i, {}).get("is_classification", "")) is True]
    for pool in (clf, kept, list(run["instances"]), [r["instruction"] for r in run["instructions"]]):
        if pool:
            return pool[0]
    return None


def trace_task(out_dir: str | Path, instruction: str | None = None) -> str:
    """One instruction through the four steps of the run in ``out_dir``, as text (default: :func:`pick_task`)."""
    run = load_outputs(out_dir)
    instruction = instruction or pick_task(run)
    if instruction is None:
        return "step 1 kept no instruction in this run: nothing to follow (raise max_requests or use a stronger model)"
    first = next((r for r in run["instructions"] if r["instruction"] == instruction), None)
    if first is None:
        return f"{instruction!r} is not among this run's instructions"
    near = list(first["most_similar"].items())[:3]
    lines = [f"STEP 1  new instruction (request {first['request_idx']}, finish reason "
             f"{first['metadata'].get('finish_reason')}): {instruction}",
             "        nearest in the pool (ROUGE-L): " + "; ".join(f"{s:.2f} {t[:60]!r}" for t, s in near)]
    clf = run["classification"].get(instruction)
    if clf is None:
        return "\n".join(lines + ["STEP 2  not reached (the request budget ran out)"])
    verdict = sip.parse_clf(clf["is_classification"])
    meaning = {True: "classification", False: "not classification"}.get(verdict, "unclear, so not classification")
    lines.append(f"STEP 2  'Is it classification?' -> {clf['is_classification'].strip()!r}: {meaning}")
    inst = run["instances"].get(instruction)
    if inst is None:
        return "\n".join(lines + ["STEP 3  not reached (the request budget ran out)"])
    style = inst["instance_metadata"].get("prompt", "output-first" if verdict else "input-first")
    lines.append(f"STEP 3  {style} prompt; raw reply (finish reason {finish_reason(inst)}):")
    lines += [f"        | {line}" for line in inst["raw_instances"].strip().splitlines()[:12]]
    parsed = sip.parse_instances(inst["raw_instances"], verdict is True, finish_reason(inst))
    dropped = ", ".join(f"{k} {v}" for k, v in parsed.discarded.items() if v) or "none"
    lines.append(f"STEP 4  {len(parsed.instances)} instance(s) kept; dropped: {dropped}")
    lines += [f"        input: {inp[:70]!r} -> output: {out[:70]!r}" for inp, out in parsed.instances]
    return "\n".join(lines)


def _rouge_quantiles(instructions: Sequence[str], seeds: Sequence[str]) -> str:
    if not instructions:
        return "-"
    best = max_scores(list(instructions), list(seeds))
    return f"{np.median(best):.2f} / {np.quantile(best, 0.9):.2f} / {best.max():.2f}"


def recipe_comparison(alpaca_dir: str | Path, si_dir: str | Path, seeds: Sequence[str],
                      alpaca_verdicts: Sequence[bool | None] | None = None, price_model: str = "gpt-4o-mini"):
    """A table, one column per recipe, of what each run spent (requests, tokens, what those tokens would cost
    at ``price_model``'s list price) and produced (kept tasks, training examples, classification share, label
    balance of the classification tasks, max ROUGE-L of the instructions to the ``seeds``).

    Alpaca's recipe does not ask whether a task is a classification task: ``alpaca_verdicts`` (step 2's
    classifier on Alpaca's kept instructions, see :func:`alpaca_nb.self_instruct.classify`) fills that row."""
    import pandas as pd

    price = PRICES_PER_1M[price_model]
    columns = {}
    alpaca, a_sum = load_regen(alpaca_dir), read_summary(Path(alpaca_dir), recipe="alpaca")
    si = load_outputs(si_dir)
    s_sum = si["summary"]
    for name, summary, tasks, examples in (("Alpaca (one prompt)", a_sum, [r["instruction"] for r in alpaca], alpaca),
                                           ("Self-Instruct (4 steps)", s_sum,
                                            list(dict.fromkeys(r["instruction"] for r in si["training"])),
                                            si["training"])):
        columns[name] = {"requests": summary.get("requests", 0),
                         "prompt tokens": summary.get("prompt_tokens", 0),
                         "completion tokens": summary.get("completion_tokens", 0),
                         f"cost at {price_model} prices (USD, {PRICES_AS_OF})": round(cost_usd(
                             price, summary.get("prompt_tokens", 0), summary.get("completion_tokens", 0)), 5),
                         "kept tasks": len(tasks), "training examples": len(examples),
                         "max ROUGE-L to seeds (median / p90 / max)": _rouge_quantiles(tasks, seeds)}
    verdicts = list(alpaca_verdicts or [])
    columns["Alpaca (one prompt)"]["classification share"] = (
        f"{sum(v is True for v in verdicts) / len(verdicts):.2f} (step 2's classifier, asked afterwards)"
        if verdicts else "not asked")
    columns["Alpaca (one prompt)"]["label balance of classification tasks"] = "one example per task: none to balance"
    share = s_sum.get("classification_share")
    columns["Self-Instruct (4 steps)"]["classification share"] = "-" if share is None else f"{share:.2f} (step 2)"
    balance = s_sum.get("label_balance", {})
    columns["Self-Instruct (4 steps)"]["label balance of classification tasks"] = (
        f"{balance['with_two_or_more_labels']} of {balance['classification_tasks']} tasks with 2+ labels; majority "
        f"label {balance['mean_majority_label_share']:.0%} of a task's examples"
        if balance.get("classification_tasks") else "no classification task kept")
    return pd.DataFrame(columns)


def steps_table(summary: dict[str, Any]):
    """One row per step of a Self-Instruct summary: requests, prompts, tokens, and what the step produced."""
    import pandas as pd

    steps = summary["steps"]
    step4 = steps["filter"]
    produced = {
        "1 instructions": f"{steps['instructions']['kept']} new instructions of {steps['instructions']['parsed']} "
                          "parsed",
        "2 classification": f"{steps['classification']['classification']} of {steps['classification']['done']} "
                            f"classification ({steps['classification']['unclear']} unclear answers)",
        "3 instances": f"{steps['instances']['done']} raw replies",
        "4 filter": f"{step4['instances']} examples for {step4['tasks_kept']} of {step4['tasks']} tasks"}
    rows = {}
    for (name, text), key in zip(produced.items(), ("instructions", "classification", "instances", "filter")):
        counts = steps[key]
        rows[name] = {k: counts.get(k, 0) for k in ("requests", "prompts", "prompt_tokens", "completion_tokens")}
        rows[name]["produced"] = text
    return pd.DataFrame(rows).T

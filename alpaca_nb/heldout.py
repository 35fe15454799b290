"""Lessons 04 and 05: what fine-tuning changed, measured on the 252 held-out user-oriented tasks.

Alpaca was judged on Self-Instruct's 252 user-oriented tasks, which it never trained on. This module
measures a model on the same tasks, against text-davinci-003's answers (Alpaca's teacher), in two ways:

- **teacher-forced loss**: the mean negative log-likelihood, in nats per token, that the model gives the
  reference answer (+ EOS) after Alpaca's prompt, with the prompt tokens masked exactly as in training
  (:func:`alpaca_nb.sft.preprocess`), and its perplexity ``exp(loss)``. Lower means the model's own
  next-token predictions are closer to what the teacher wrote. All tasks, batched.
- **greedy answers** to ``num_answers`` of the tasks (a seeded subset): how many run on into a fake
  ``### Instruction:`` / ``### Input:`` / ``### Response:`` (a *template leak*: the model continues the
  prompt format instead of stopping), how many end with EOS before ``max_new_tokens`` (a *clean stop*),
  their length in words next to the reference's, and their ROUGE-L against the reference.

``heldout.json`` holds one such record per model, e.g. ``{"before": {...}, "after": {...}}``.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

from .answers import LocalModel, build_prompt, load_eval_set, load_local_model
from .data import Example
from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json
from .sft import IGNORE_INDEX, preprocess

HELDOUT_FILE = "heldout.json"
ANSWERS_FILE = "heldout_answers.json"
FIGURE = "heldout"
TEMPLATE_LEAK = re.compile(r"###\s*(?:Instruction|Input|Response)\s*:", re.IGNORECASE)
METRIC_KEYS = ("loss", "perplexity", "n_tasks", "n_tokens", "n_answers", "template_leaks", "clean_stops",
               "mean_words", "reference_mean_words", "rouge_l")


def heldout_tasks(n: int | None = None, seed: int = 0) -> list[Example]:
    """The user-oriented tasks (all 252, or a seeded subset of ``n``) with text-davinci-003's answers."""
    return load_eval_set("user_oriented", reference="text_davinci_003", n=n, seed=seed)


def teacher_forced_loss(lm: LocalModel, tasks: Sequence[Example], max_length: int = 512, batch_size: int = 8,
                        bf16: bool | None = None, progress: bool = True) -> dict[str, Any]:
    """Mean NLL (nats per reference token) of each task's ``output`` + EOS after Alpaca's prompt.

    Tokenised and masked exactly as in training (:func:`alpaca_nb.sft.preprocess`, which also drops a
    task whose prompt alone fills ``max_length``, and truncates long answers); batched by length with
    right padding. The forward pass runs under bf16 autocast when ``bf16`` (``None``: where the CPU or GPU
    computes bf16 natively, about 3x faster on such a CPU; the log-softmax stays fp32). Returns ``loss``,
    ``perplexity``, ``n_tokens`` (trained tokens), ``n_scored`` (tasks) and ``precision``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from .train_config import native_bf16

    device = next(lm.model.parameters()).device
    bf16 = native_bf16(device.type == "cuda") if bf16 is None else bf16

    tok = lm.tokenizer
    examples = preprocess(list(tasks), tok, max_length)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    total, count = 0.0, 0
    for start in tqdm(range(0, len(order), batch_size), desc="held-out loss", unit="batch", disable=not progress):
        rows = [examples[i] for i in order[start:start + batch_size]]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float().cpu()
        target = labels[:, 1:]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((target != IGNORE_INDEX).sum())
    if not count:
        raise AlpacaNbError("no reference tokens to score; raise max_length")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "n_tokens": count, "n_scored": len(examples),
            "precision": "bf16" if bf16 else "fp32"}


def answer_metrics(answers: Sequence[str], references: Sequence[str], stopped: Sequence[bool]) -> dict[str, Any]:
    """Template leaks, clean stops, mean words (answer and reference) and mean ROUGE-L of ``answers``."""
    from .winrate import rouge_l

    n = len(answers)
    if not n:
        return {"n_answers": 0, "template_leaks": 0, "clean_stops": 0, "mean_words": None,
                "reference_mean_words": None, "rouge_l": None}
    scores = rouge_l(list(answers), list(references))
    return {"n_answers": n,
            "template_leaks": sum(bool(TEMPLATE_LEAK.search(a)) for a in answers),
            "clean_stops": sum(bool(s) for s in stopped),
            "mean_words": sum(len(a.split()) for a in answers) / n,
            "reference_mean_words": sum(len(r.split()) for r in references) / n,
            "rouge_l": sum(scores) / n}


def greedy_answers(lm: LocalModel, tasks: Sequence[Example], max_new_tokens: int = 128, batch_size: int = 8,
                   progress: bool = True) -> tuple[list[str], list[bool]]:
    """Greedy answers to ``tasks`` with Alpaca's prompt, and for each whether it ended with EOS in time."""
    from .answers import generate_tokens

    prompts = [build_prompt(t, "alpaca") for t in tasks]
    tokens = generate_tokens(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
    texts = [lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in tokens]
    return texts, [len(ids) < max_new_tokens for ids in tokens]


def measure(model: str | Path | LocalModel | None, num_answers: int = 32, num_tasks: int | None = None,
            max_length: int = 512, max_new_tokens: int = 128, batch_size: int = 8, seed: int = 0,
            progress: bool = True) -> dict[str, Any]:
    """All held-out metrics of one model (a folder, an adapter folder, a loaded model, or ``None``: embedded).

    The loss covers ``num_tasks`` tasks (``None``: all 252); the greedy answers a seeded subset of
    ``num_answers`` of them. The record has :data:`METRIC_KEYS`, the settings, the seconds it took and
    ``answers`` (instruction, reference, answer, stopped) for side-by-side reading.
    """
    start = time.perf_counter()
    lm = model if isinstance(model, LocalModel) else load_local_model(model)
    tasks = heldout_tasks(num_tasks, seed)
    sample = heldout_tasks(min(num_answers, len(tasks)), seed) if num_tasks is None else tasks[:num_answers]
    loss = teacher_forced_loss(lm, tasks, max_length=max_length, batch_size=batch_size, progress=progress)
    texts, stopped = greedy_answers(lm, sample, max_new_tokens, batch_size, progress) if sample else ([], [])
    metrics = answer_metrics(texts, [t.output for t in sample], stopped)
    return {"loss": loss["loss"], "perplexity": loss["perplexity"], "n_tasks": len(tasks),
            "n_scored": loss["n_scored"], "n_tokens": loss["n_tokens"], "loss_precision": loss["precision"], **metrics,
            "settings": {"max_length": max_length, "max_new_tokens": max_new_tokens, "num_answers": num_answers,
                         "num_tasks": num_tasks, "seed": seed},
            "seconds": time.perf_counter() - start,
            "answers": [{"instruction": t.instruction, "input": t.input, "reference": t.output, "answer": a,
                         "stopped": s} for t, a, s in zip(sample, texts, stopped)]}


def measure_cached(model: str | Path | None, out_dir: str | Path, label: str, **settings) -> dict[str, Any]:
    """:func:`measure`, reusing ``label``'s record in ``out_dir/heldout.json`` when the model's weights
    (:func:`alpaca_nb.model.model_identity`) and every setting are unchanged; the result is written back into
    that file (other labels are kept)."""
    from .model import model_identity, resolve_model

    path = Path(out_dir) / HELDOUT_FILE
    identity = model_identity(resolve_model(model))
    results = read_heldout(path) if path.is_file() else {}
    old = results.get(label)
    wanted = {k: v for k, v in settings.items() if k != "progress"}
    if old and old.get("model") == identity and old.get("cache_key") == wanted:
        return old
    record = measure(model, **settings) | {"model": identity, "cache_key": wanted}
    results[label] = record
    atomic_write_json(path, results)
    return record


def read_heldout(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ``heldout.json``: ``{label: metrics}``; anything else is an error naming the file."""
    results = read_json(path)
    if not isinstance(results, dict) or not all(isinstance(v, dict) and "loss" in v for v in results.values()):
        raise AlpacaNbError(f"{path}: expected {{label: {{loss, perplexity, ...}}}} as written by "
                            "`alpaca-nb heldout`; delete it to measure again")
    return results


def comparison_table(results: dict[str, dict[str, Any]]):
    """A pandas table of the metrics, one column per model (e.g. before / after), plus the relative change."""
    import pandas as pd

    table = pd.DataFrame({label: {k: r.get(k) for k in METRIC_KEYS} for label, r in results.items()})
    if {"before", "after"} <= set(results) and results["before"]["loss"]:
        table.loc["loss change (%)"] = [None, 100 * (results["after"]["loss"] / results["before"]["loss"] - 1)]
    return table


def answers_side_by_side(results: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """One row per greedy-answered task: instruction, reference, then each model's answer."""
    labels = list(results)
    rows = []
    for i, first in enumerate(results[labels[0]]["answers"]):
        row = {"instruction": first["instruction"], "reference": first["reference"]}
        row.update({label: results[label]["answers"][i]["answer"] for label in labels
                    if i < len(results[label]["answers"])})
        rows.append(row)
    return rows


def write_answers(results: dict[str, dict[str, Any]], out_dir: str | Path) -> Path:
    """``heldout_answers.json`` in ``out_dir``: :func:`answers_side_by_side` of ``results``."""
    return atomic_write_json(Path(out_dir) / ANSWERS_FILE, answers_side_by_side(results))


def scored_label(result: dict[str, Any]) -> str:
    """What the loss was measured on, as the figure says it: "242 of 252 tasks\n(10 over 256 tokens dropped)" when
    ``max_length`` dropped some (their prompt alone fills it; long answers are cut too), else "252 tasks"."""
    n_tasks, n_scored = result["n_tasks"], result.get("n_scored", result["n_tasks"])
    if n_scored == n_tasks:
        return f"{n_tasks} tasks"
    max_length = (result.get("settings") or {}).get("max_length")
    return f"{n_scored} of {n_tasks} tasks\n({n_tasks - n_scored} prompts over {max_length} tokens dropped)"


def plot_heldout(results: dict[str, dict[str, Any]], title: str = ""):
    """Four panels, one bar per model: loss (nats/token), template leaks, clean stops and ROUGE-L."""
    import matplotlib.pyplot as plt

    labels = list(results)
    n = max(r["n_answers"] for r in results.values()) or 1
    panels = [("loss", f"loss on {scored_label(results[labels[0]])}\n(nats/token, lower is better)", None),
              ("template_leaks", f"template leaks\n(of {n} answers, lower is better)", n),
              ("clean_stops", f"clean stops at EOS\n(of {n} answers, higher is better)", n),
              ("rouge_l", "ROUGE-L vs teacher\n(higher is closer)", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    colors = ["#999999", "#4C72B0", "#55A868", "#C44E52"]
    for ax, (key, name, top) in zip(axes, panels):
        values = [results[label][key] or 0 for label in labels]
        ax.bar(labels, values, color=colors[:len(labels)])
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, (top or max(values) or 1) * 1.15)
    fig.suptitle(title or "held-out user-oriented tasks (never trained on)")
    fig.tight_layout()
    return fig

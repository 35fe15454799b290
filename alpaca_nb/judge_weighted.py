"""Lesson 05: the judge's verdict read from its own probabilities, as AlpacaEval 2's weighted judge does.

AlpacaEval 2's default annotator (``weighted_alpaca_eval_gpt4_turbo`` in tatsu-lab/alpaca_eval:
``evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml``) asks for a single label token, requests
``logprobs`` with ``top_logprobs``, and turns the probabilities of the two labels into a continuous preference
(``completion_parsers.logprob_parser``): normalised over the two labels, ``preference = 1 + p(label of output_2)``,
in [1, 2]. Here the labels are the ones our prompt asks for, ``a`` and ``b`` in ``Output (a)``/``Output (b)``:

- through an OpenAI-compatible server that returns logprobs, :func:`label_probabilities_from_response` reads the
  ``top_logprobs`` at the first reply token that is a label (the same request as the text verdict: no extra one);
- for a judge that is a local folder (the embedded model; ``transformers serve`` returns no logprobs),
  :class:`LocalLabelReader` reads the model's next-token logits right after ``Output (`` in process.

Where neither is possible the judge falls back to the text verdict and the annotation says so.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

VERDICT_PREFIX = "Output ("  # how the prompt asks the reply to start: "Output (a)", "Output (b)"
LABELS = ("a", "b")
TOP_LOGPROBS = 5  # as AlpacaEval's weighted configs (configs.yaml: logprobs: true, top_logprobs: 5)


def _label(token: str) -> str | None:
    t = token.strip().strip("()[]*`'\" ").lower()
    return t if t in LABELS else None


def normalised(p_a: float, p_b: float) -> dict[str, float] | None:
    """``{"p_a", "p_b"}`` normalised to sum 1 (``mass``: what the two labels had before), or ``None``."""
    mass = p_a + p_b
    if mass <= 0 or not math.isfinite(mass):
        return None
    return {"p_a": p_a / mass, "p_b": p_b / mass, "mass": mass}


def label_probabilities_from_response(response: Any) -> dict[str, float] | None:
    """The two labels' probabilities at the first label token of a chat completion with ``logprobs``, or ``None``
    when the server sent no logprobs (or the reply names no label). Alternatives that read as the same label
    (``a``, ``A``, `` a``, ``(a``) are summed, as AlpacaEval's parser sums its label's variants."""
    try:
        content = response.choices[0].logprobs.content
    except (AttributeError, IndexError, TypeError):
        return None
    for item in content or []:
        if _label(item.token or "") is None:
            continue
        probs = {"a": 0.0, "b": 0.0}
        for alt in item.top_logprobs or []:
            label = _label(alt.token or "")
            if label:
                probs[label] += math.exp(alt.logprob)
        return normalised(probs["a"], probs["b"])
    return None


class LocalLabelReader:
    """A local judge folder loaded once: :meth:`__call__` gives p(a), p(b) after ``Output (`` for chat messages."""

    def __init__(self, folder: str | Path) -> None:
        from .answers import load_local_model

        self.lm = load_local_model(folder)
        tok = self.lm.tokenizer
        self.ids = {}
        for label in LABELS:
            ids = tok.encode(label, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"label {label!r} is not one token for {folder}")
            self.ids[label] = ids[0]
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> dict[str, float] | None:
        import torch

        tok = self.lm.tokenizer
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + VERDICT_PREFIX
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        device = next(self.lm.model.parameters()).device
        with self._lock, torch.no_grad():
            logits = self.lm.model(input_ids=ids.to(device)).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        return normalised(float(probs[self.ids["a"]]), float(probs[self.ids["b"]]))


def p_output(judgement: dict[str, Any], output: int) -> float:
    """The probability one judgement gave ``output`` (1 or 2), given which was shown as ``Output (a)`` (``first``)."""
    return judgement["p_a"] if judgement["first"] == output else judgement["p_b"]


def weighted_preference(judgements: list[dict[str, Any]]) -> float | None:
    """AlpacaEval's continuous preference from judgements with ``p_a``/``p_b`` and ``first`` (which output was shown
    as ``Output (a)``): the mean over the orders of ``1 + p(output_2)``; ``None`` if any judgement lacks them."""
    values = []
    for j in judgements:
        if j.get("p_a") is None:
            return None
        values.append(1 + p_output(j, 2))
    return sum(values) / len(values) if values else None

"""Lesson 02's accounting: the dated price table, the cost of tokens, and the estimate before a run."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from . import prompts
from . import self_instruct_prompts as sip
from .errors import AlpacaNbError
from .fileio import read_json
from .generate_config import SUMMARY_FILE, GenerateConfig, read_summary, seed_records

# USD per 1M tokens (input, output): OpenAI list prices as of PRICES_AS_OF. Override or extend with a
# JSON file {"model": {"input": 0.15, "output": 0.6}} (--prices). text-davinci-003, which Alpaca used,
# cost $0.02 per 1K tokens either way and was retired on 2024-01-04; Alpaca reported < $500 for 52K.
PRICES_AS_OF = "2025-06-01"
PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),  # the one current model on the legacy completions endpoint
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o": (2.50, 10.00),
    "text-davinci-003": (20.00, 20.00),      # historical (retired)
}

# What an estimate assumes before any measurement: a reply of ~17 tasks (20 minus the 3 shown) is about
# 1,000 tokens and about 10 of its tasks survive the filters (Alpaca's yield with text-davinci-003); the
# local 135M teacher, one task per request, keeps about 1 task in 8 (README, lesson 02). A finished or
# partial run in the same folder replaces both with measured values.
ASSUMED_COMPLETION_TOKENS, ASSUMED_KEPT_PER_PROMPT, ASSUMED_KEPT_PER_PROMPT_LOCAL = 1000, 10.0, 0.125
# Without --max-requests a run stops after this many times the estimated number of requests (at least
# MIN_MAX_REQUESTS, as estimates of small targets are rough), so a server whose replies never yield a task
# cannot make it run (and bill) forever.
MAX_REQUESTS_FACTOR, MIN_MAX_REQUESTS = 3, 10
# Self-Instruct's recipe, per prompt of each step (remote, local): a step-1 reply lists up to 7 new instructions
# (9 to 15, ~120 tokens; locally one, ~15) of which about 3 survive the filters (locally 1 in 2, our assumption
# until measured); a classification answer is one token; a task's instances about 200 tokens (upstream's limit is
# 300-350; locally the step's limit). A finished or partial run in the same folder replaces them with measured values.
ASSUMED_SI_KEPT_PER_PROMPT = (3.0, 0.5)
ASSUMED_SI_COMPLETION_TOKENS = {"instructions": (120, 15), "classification": (1, 1), "instances": (200, None)}


def load_prices(path: str | Path | None = None) -> dict[str, tuple[float, float]]:
    """The price table, updated from a JSON file ``{"model": {"input": $/1M, "output": $/1M}}`` if given."""
    prices = dict(PRICES_PER_1M)
    if not path:
        return prices
    table = read_json(path)
    if not isinstance(table, dict):
        raise AlpacaNbError(f'{path}: expected an object like {{"gpt-4o-mini": {{"input": 0.15, "output": 0.6}}}}')
    for model, p in table.items():
        if not (isinstance(p, dict) and all(isinstance(p.get(k), (int, float)) for k in ("input", "output"))):
            raise AlpacaNbError(f"{path}: entry {model!r} needs numeric 'input' and 'output' prices per 1M tokens")
        prices[model] = (float(p["input"]), float(p["output"]))
    return prices


def price_for(model: str, backend: str, prices: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: exact name, else the longest known prefix
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``); 0 for the local model; ``None`` if unknown."""
    if backend == "local":
        return (0.0, 0.0)
    if model in prices:
        return prices[model]
    known = [name for name in prices if model.startswith(name)]
    return prices[max(known, key=len)] if known else None


def cost_usd(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for the tokens at ``price`` (per 1M tokens, input and output); ``None`` for an unknown price."""
    return None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def estimate(config: GenerateConfig, model: str | None = None, use_measured: bool = True) -> dict[str, Any]:
    """Tokens and dollars to reach ``config.num_instructions``, before spending anything.

    Prompt tokens are measured on real prompts (characters / 4, the usual rule for English with
    OpenAI tokenizers). Completion tokens and kept instructions per prompt come from ``summary.json``
    in the output folder when ``use_measured`` and a run there has kept something, else from the
    stated assumptions (``ASSUMED_*``). ``max_requests`` is ``config.max_requests``, else
    ``MAX_REQUESTS_FACTOR`` times the estimated requests (at least ``MIN_MAX_REQUESTS``). A setting that
    cannot work raises :class:`AlpacaNbError` (see :meth:`GenerateConfig.validate`).
    """
    model = model or config.model or ("SmolLM2-135M-Instruct (local)" if config.backend == "local" else "?")
    if config.recipe == "self-instruct":
        return _estimate_self_instruct(config, model, use_measured)
    seeds = seed_records(config.seed_tasks)
    config.validate(len(seeds))
    rng = random.Random(config.seed)
    sample = [prompts.encode_prompt(rng.sample(seeds, config.num_prompt_instructions)) for _ in range(20)]
    prompt_tokens = sum(len(p) for p in sample) / len(sample) / 4
    completion_tokens = min(ASSUMED_COMPLETION_TOKENS, config.resolved_max_tokens)
    kept_per_prompt = ASSUMED_KEPT_PER_PROMPT_LOCAL if config.backend == "local" else ASSUMED_KEPT_PER_PROMPT
    basis = "assumed"
    out_dir = config.out_path
    done = read_summary(out_dir, recipe=config.recipe) if use_measured else {}
    if done.get("prompts") and done.get("kept"):
        completion_tokens = done["completion_tokens"] / done["prompts"]
        kept_per_prompt = done["kept"] / done["prompts"]
        basis = f"measured on {done['prompts']} prompts in {out_dir / SUMMARY_FILE}"
    n_prompts = -(-config.num_instructions // max(kept_per_prompt, 1e-9))
    total_prompt, total_completion = round(n_prompts * prompt_tokens), round(n_prompts * completion_tokens)
    price = price_for(model, config.backend, load_prices(config.prices))
    requests = int(-(-n_prompts // config.prompts_per_request))
    max_requests = config.max_requests or max(MIN_MAX_REQUESTS, MAX_REQUESTS_FACTOR * requests)
    return {"model": model, "num_instructions": config.num_instructions, "prompts": int(n_prompts),
            "requests": requests, "max_requests": max_requests,
            "max_requests_basis": "--max-requests" if config.max_requests else f"default {MAX_REQUESTS_FACTOR}x the "
                                  f"estimate, at least {MIN_MAX_REQUESTS}; set --max-requests",
            "prompt_tokens_per_prompt": round(prompt_tokens), "completion_tokens_per_prompt": round(completion_tokens),
            "kept_per_prompt": round(kept_per_prompt, 2), "basis": basis,
            "prompt_tokens": total_prompt, "completion_tokens": total_completion,
            "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF,
            "cost_usd": cost_usd(price, total_prompt, total_completion)}


def _estimate_self_instruct(config: GenerateConfig, model: str, use_measured: bool) -> dict[str, Any]:
    """:func:`estimate` for Self-Instruct's four steps: prompts, requests and tokens per step, then the total."""
    from .data import load_seed_tasks

    seeds = load_seed_tasks(config.seed_tasks)
    config.validate(len(seeds))
    rng, local = random.Random(config.seed), int(config.backend == "local")
    examples = sip.pick_examples(seeds)
    instructions = [s.instruction for s in seeds]
    sample = {"instructions": [sip.encode_instruction_prompt(rng.sample(instructions, 8)) for _ in range(20)],
              "classification": [sip.encode_clf_prompt(examples, rng.choice(instructions)) for _ in range(20)],
              "instances": [sip.encode_instance_prompt(examples, s.instruction, bool(s.meta.get("is_classification")))
                            for s in rng.sample(seeds, 20)]}
    kept_per_prompt, basis = ASSUMED_SI_KEPT_PER_PROMPT[local], "assumed"
    completion = {step: tokens[local] or sip.step_config(config, step).resolved_max_tokens
                  for step, tokens in ASSUMED_SI_COMPLETION_TOKENS.items()}
    done = read_summary(config.out_path, recipe="self-instruct") if use_measured else {}
    steps_done = done.get("steps", {})
    if steps_done.get("instructions", {}).get("prompts") and done.get("instructions"):
        kept_per_prompt = done["instructions"] / steps_done["instructions"]["prompts"]
        for step, s in steps_done.items():
            if step in completion and s.get("prompts"):
                completion[step] = s["completion_tokens"] / s["prompts"]
        basis = f"measured on {done['prompts']} prompts in {config.out_path / SUMMARY_FILE}"
    n = config.num_instructions
    price = price_for(model, config.backend, load_prices(config.prices))
    steps = {}
    for step, n_prompts in (("instructions", -(-n // max(kept_per_prompt, 1e-9))), ("classification", n),
                            ("instances", n)):
        per_prompt = sum(len(p) for p in sample[step]) / len(sample[step]) / 4
        steps[step] = {"prompts": int(n_prompts), "requests": int(-(-n_prompts // config.prompts_per_request)),
                       "prompt_tokens": round(n_prompts * per_prompt),
                       "completion_tokens": round(n_prompts * completion[step])}
    total = {k: sum(s[k] for s in steps.values())
             for k in ("prompts", "requests", "prompt_tokens", "completion_tokens")}
    max_requests = config.max_requests or max(MIN_MAX_REQUESTS, MAX_REQUESTS_FACTOR * total["requests"])
    return {"recipe": "self-instruct", "model": model, "num_instructions": n, **total, "max_requests": max_requests,
            "max_requests_basis": "--max-requests" if config.max_requests else f"default {MAX_REQUESTS_FACTOR}x the "
                                  f"estimate, at least {MIN_MAX_REQUESTS}; set --max-requests",
            "kept_per_prompt": round(kept_per_prompt, 2), "basis": basis, "steps": steps,
            "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF,
            "cost_usd": cost_usd(price, total["prompt_tokens"], total["completion_tokens"])}


def format_estimate(est: dict[str, Any]) -> str:
    """One line for people: requests (and the most that will be sent), tokens, dollars (per step for Self-Instruct)."""
    cost = "unknown price (add it with --prices FILE)" if est["cost_usd"] is None else f"${est['cost_usd']:,.2f}"
    if est.get("recipe") == "self-instruct":
        steps = "; ".join(f"{step} {s['prompts']:,} prompts, {s['prompt_tokens']:,} + {s['completion_tokens']:,} tokens"
                          for step, s in est["steps"].items())
        return (f"Self-Instruct estimate for {est['num_instructions']:,} instructions with {est['model']}: "
                f"{est['prompts']:,} prompts ({est['requests']:,} requests; at most {est['max_requests']:,}: "
                f"{est['max_requests_basis']}), {est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
                f"completion tokens, {cost} (prices as of {est['prices_as_of']}; {steps}; {est['kept_per_prompt']} "
                f"instructions kept per step-1 prompt, {est['basis']})")
    return (f"estimate for {est['num_instructions']:,} instructions with {est['model']}: {est['prompts']:,} prompts "
            f"({est['requests']:,} requests; at most {est['max_requests']:,}: {est['max_requests_basis']}), "
            f"{est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
            f"completion tokens, {cost} (prices as of {est['prices_as_of']}; {est['kept_per_prompt']} kept per "
            f"prompt, {est['basis']})")


"""Lesson 02: Alpaca's Self-Instruct generation loop, on any OpenAI-compatible endpoint.

Each request shows the model three seed tasks in :func:`alpaca_nb.prompts.encode_prompt` and asks
for more; responses are parsed and filtered (:mod:`alpaca_nb.prompts`), then the ROUGE-L novelty
filter (:mod:`alpaca_nb.dedupe`) keeps an instruction only if it scores at most 0.7 against every
seed and every instruction kept so far. Requests run ``max_concurrency`` at a time with bounded
retries (exponential backoff with jitter) on 429, 5xx and timeouts.

Crash safety: after every completed request ``regen.json`` (Alpaca's format plus ``metadata``) and
``summary.json`` (accounting) are rewritten atomically, so ``kill -9`` loses at most the requests in
flight, and re-running with the same ``output_dir`` continues to ``num_instructions`` with no
duplicate. The API key is never written anywhere.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import prompts
from .dedupe import RougeDeduplicator
from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json
from .paths import outputs_dir
from .server import open_endpoint

STAGE = "02_generate_instructions"
REGEN_FILE, SUMMARY_FILE, SERVER_LOG = "regen.json", "summary.json", "server.log"

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

# Alpaca's request settings: up to 3072 new tokens, stop before task 20. The embedded 135M model on a
# CPU writes a few tokens a second and rarely finishes a task list, so locally each request stops
# after its first task (at "###" or where the next task begins): short requests, at most one task each.
REMOTE_MAX_TOKENS, LOCAL_MAX_TOKENS = 3072, 160
REMOTE_STOP = ["\n20", "20."]

# What an estimate assumes before any measurement: a reply of ~17 tasks (20 minus the 3 shown) is about
# 1,000 tokens and about 10 of its tasks survive the filters (Alpaca's yield with text-davinci-003).
# A finished or partial run in the same folder replaces both with measured values.
ASSUMED_COMPLETION_TOKENS, ASSUMED_KEPT_PER_PROMPT = 1000, 10.0


@dataclass
class GenerateConfig:
    """Everything a generation run needs; the command line and the notebook fill the same fields.

    ``api=None`` means ``"chat"`` for ``backend="openai"`` (current OpenAI models are chat models) and
    ``"completions"`` otherwise (Alpaca's style). ``request_batch_size`` prompts go in one legacy
    completions request where the server takes a list (OpenAI, vLLM); the chat API and the local
    ``transformers serve`` take one prompt per request. ``max_concurrency=None`` means 1 for the
    local server (it generates one request at a time) and 8 otherwise. ``max_requests`` bounds the
    total number of requests over all resumed runs (a weak teacher may never reach the target).
    """

    num_instructions: int = 100
    output_dir: str | None = None
    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    api: str | None = None
    seed_tasks: str | None = None
    num_prompt_instructions: int = 3
    request_batch_size: int = 5
    max_concurrency: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int = 42
    similarity_threshold: float = 0.7
    max_requests: int | None = None
    request_timeout: float = 600.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    prices: str | None = None
    progress: bool = True

    @property
    def resolved_api(self) -> str:
        api = self.api or ("chat" if self.backend == "openai" else "completions")
        if api not in ("chat", "completions"):
            raise AlpacaNbError(f"api {api!r}: choose 'chat' or 'completions'")
        return api

    @property
    def resolved_max_tokens(self) -> int:
        return self.max_tokens or (LOCAL_MAX_TOKENS if self.backend == "local" else REMOTE_MAX_TOKENS)

    @property
    def resolved_stop(self) -> list[str]:
        if self.stop is not None:
            return self.stop
        return ["###", f"\n{self.num_prompt_instructions + 2}. Instruction"] if self.backend == "local" else REMOTE_STOP

    @property
    def resolved_concurrency(self) -> int:
        return self.max_concurrency or (1 if self.backend == "local" else 8)

    @property
    def prompts_per_request(self) -> int:
        lists_ok = self.resolved_api == "completions" and self.backend != "local"
        return max(1, self.request_batch_size) if lists_ok else 1

    def out_dir(self) -> Path:
        path = Path(self.output_dir) if self.output_dir else outputs_dir(STAGE)
        path.mkdir(parents=True, exist_ok=True)
        return path


# --- prices and estimates ---------------------------------------------------------------------------

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


def _cost(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    return None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def estimate(config: GenerateConfig, model: str | None = None, use_measured: bool = True) -> dict[str, Any]:
    """Tokens and dollars to reach ``config.num_instructions``, before spending anything.

    Prompt tokens are measured on real prompts (characters / 4, the usual rule for English with
    OpenAI tokenizers). Completion tokens and kept instructions per prompt come from ``summary.json``
    in the output folder when ``use_measured`` and a run there has kept something, else from the
    stated assumptions (``ASSUMED_*``).
    """
    model = model or config.model or ("SmolLM2-135M-Instruct (local)" if config.backend == "local" else "?")
    seeds = _seed_records(config.seed_tasks)
    rng = random.Random(config.seed)
    sample = [prompts.encode_prompt(rng.sample(seeds, config.num_prompt_instructions)) for _ in range(20)]
    prompt_tokens = sum(len(p) for p in sample) / len(sample) / 4
    completion_tokens = min(ASSUMED_COMPLETION_TOKENS, config.resolved_max_tokens)
    kept_per_prompt, basis = ASSUMED_KEPT_PER_PROMPT, "assumed"
    out_dir = Path(config.output_dir) if config.output_dir else outputs_dir(STAGE)
    done = _read_summary(out_dir) if use_measured else {}
    if done.get("prompts") and done.get("kept"):
        completion_tokens = done["completion_tokens"] / done["prompts"]
        kept_per_prompt = done["kept"] / done["prompts"]
        basis = f"measured on {done['prompts']} prompts in {out_dir / SUMMARY_FILE}"
    n_prompts = -(-config.num_instructions // max(kept_per_prompt, 1e-9))
    total_prompt, total_completion = round(n_prompts * prompt_tokens), round(n_prompts * completion_tokens)
    price = price_for(model, config.backend, load_prices(config.prices))
    return {"model": model, "num_instructions": config.num_instructions, "prompts": int(n_prompts),
            "requests": int(-(-n_prompts // config.prompts_per_request)),
            "prompt_tokens_per_prompt": round(prompt_tokens), "completion_tokens_per_prompt": round(completion_tokens),
            "kept_per_prompt": round(kept_per_prompt, 2), "basis": basis,
            "prompt_tokens": total_prompt, "completion_tokens": total_completion,
            "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF,
            "cost_usd": _cost(price, total_prompt, total_completion)}


def format_estimate(est: dict[str, Any]) -> str:
    """One line for people: requests, tokens, dollars."""
    cost = "unknown price (add it with --prices FILE)" if est["cost_usd"] is None else f"${est['cost_usd']:,.2f}"
    return (f"estimate for {est['num_instructions']:,} instructions with {est['model']}: {est['prompts']:,} prompts "
            f"({est['requests']:,} requests), {est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} "
            f"completion tokens, {cost} (prices as of {est['prices_as_of']}; {est['kept_per_prompt']} kept per "
            f"prompt, {est['basis']})")


# --- requests -----------------------------------------------------------------------------------------

@dataclass
class _Reply:
    index: int
    outputs: list[tuple[str, str | None]]  # (text, finish_reason) per prompt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: dict[str, int] = field(default_factory=dict)


def _fatal(e: Exception, endpoint, api: str) -> AlpacaNbError | None:
    """A clear error for failures that retrying cannot fix (bad key, no access, unknown model, bad request)."""
    import openai

    where = f"{endpoint.base_url or 'https://api.openai.com/v1'} (model {endpoint.model!r}, --api {api})"
    if isinstance(e, openai.AuthenticationError):
        return AlpacaNbError(f"{where} rejected the API key (401): check OPENAI_API_KEY, or run offline with "
                             "--backend local")
    if isinstance(e, openai.PermissionDeniedError):
        return AlpacaNbError(f"{where}: no access (403): this key may not use this model; pick another --model")
    if isinstance(e, openai.NotFoundError):
        return AlpacaNbError(f"{where}: not found (404): check --model and --base-url; a chat-only model needs "
                             "--api chat")
    if isinstance(e, openai.APIStatusError) and 400 <= e.status_code < 500 and e.status_code not in (408, 409, 429):
        return AlpacaNbError(f"{where}: the server refused the request ({e.status_code}: {e.message}); check "
                             "--max-tokens, --model and --api")
    return None


def _retry_kind(e: Exception) -> str | None:
    """'429', '5xx', 'timeout' or 'connection' for failures worth retrying, else None."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection"
    if isinstance(e, openai.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500):
        return "429" if e.status_code == 429 else "5xx" if e.status_code >= 500 else str(e.status_code)
    return None


def _backoff(attempt: int, config: GenerateConfig, e: Exception) -> float:
    """Exponential backoff with jitter, at least the server's Retry-After, at most ``backoff_max``."""
    delay = config.backoff_base * 2 ** attempt * random.uniform(0.5, 1.5)
    response = getattr(e, "response", None)
    with contextlib.suppress(TypeError, ValueError):
        delay = max(delay, float(response.headers.get("retry-after") if response is not None else None))
    return min(delay, config.backoff_max)


def _call(client, endpoint, config: GenerateConfig, api: str, texts: list[str], seed: int, extra: dict) -> tuple:
    common = dict(model=endpoint.model, max_tokens=config.resolved_max_tokens, temperature=config.temperature,
                  top_p=config.top_p, stop=config.resolved_stop or None, seed=seed, extra_body=extra or None)
    if api == "chat":
        r = client.chat.completions.create(messages=[{"role": "user", "content": texts[0]}], **common)
        outputs = [(r.choices[0].message.content or "", r.choices[0].finish_reason)]
    else:
        r = client.completions.create(prompt=texts if len(texts) > 1 else texts[0], **common)
        outputs = [(c.text, c.finish_reason) for c in sorted(r.choices, key=lambda c: c.index)]
    usage = r.usage
    return outputs, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)


def _request(client, endpoint, config: GenerateConfig, index: int, texts: list[str], extra: dict,
             stop: threading.Event) -> _Reply:
    """Send one request, retrying transient failures; raise AlpacaNbError when it cannot succeed.

    ``stop`` (set when the run ends early) cuts the backoff short and gives up."""
    api, retries = config.resolved_api, {}
    for attempt in range(config.max_retries + 1):
        try:
            outputs, p_tok, c_tok = _call(client, endpoint, config, api, texts, config.seed * 1_000_003 + index, extra)
            return _Reply(index, [(_strip_stop(t, config.resolved_stop), f) for t, f in outputs], p_tok, c_tok, retries)
        except AlpacaNbError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into fatal / retryable / unexpected below
            fatal, kind = _fatal(e, endpoint, api), _retry_kind(e)
            if fatal:
                raise fatal from e
            if kind is None or stop.is_set():
                raise
            retries[kind] = retries.get(kind, 0) + 1
            if attempt == config.max_retries:
                raise AlpacaNbError(f"request {index} to {endpoint.base_url or 'the OpenAI API'} still failing after "
                                    f"{config.max_retries} retries ({kind}: {e}); the server may be overloaded or "
                                    "down: try again later (the run resumes), lower --max-concurrency, or raise "
                                    "--request-timeout") from e
            stop.wait(_backoff(attempt, config, e))
    raise AssertionError("unreachable")


def _strip_stop(text: str, stops: list[str]) -> str:
    """Some servers (transformers serve) keep the stop sequence at the end; OpenAI drops it."""
    for stop in stops:
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


def _sampling_extra(config: GenerateConfig, endpoint) -> dict:
    """transformers serve samples only if the model's generation config says so: ask for sampling."""
    if config.backend != "local":
        return {}
    path = Path(endpoint.model) / "generation_config.json"
    gen = json.loads(path.read_text()) if path.exists() else {}
    gen = {k: v for k, v in gen.items() if not k.startswith("_") and k != "transformers_version"}
    return {"generation_config": json.dumps(gen | {"do_sample": config.temperature > 0})}


# --- state on disk ------------------------------------------------------------------------------------

def _seed_records(path: str | None) -> list[dict[str, str]]:
    from .data import load_seed_tasks

    return [e.to_alpaca() for e in load_seed_tasks(path)]


def _read_summary(out_dir: Path) -> dict[str, Any]:
    path = out_dir / SUMMARY_FILE
    return read_json(path) if path.exists() else {}


def load_regen(out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The records kept so far in ``out_dir/regen.json`` (``[]`` if none); a damaged file is an error."""
    path = Path(out_dir or outputs_dir(STAGE)) / REGEN_FILE
    if not path.exists():
        return []
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("instruction") for r in records):
        raise AlpacaNbError(f"{path}: expected a JSON list of records with 'instruction'; move the file away to "
                            "start over")
    return records


class _Run:
    """The state of one output folder: kept records, the novelty pool and the accounting."""

    def __init__(self, config: GenerateConfig, seeds: list[dict[str, str]], out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        self.records = load_regen(out_dir)
        self.dedup = RougeDeduplicator((s["instruction"] for s in seeds), threshold=config.similarity_threshold)
        for r in self.records:
            self.dedup.append(r["instruction"])
        s = _read_summary(out_dir)
        self.counts = {k: s.get(k, 0) for k in ("requests", "prompts", "prompt_tokens", "completion_tokens",
                                                "parsed_tasks", "beyond_target")}
        self.discarded = {reason: s.get("discarded", {}).get(reason, 0) for reason in prompts.DISCARD_REASONS}
        self.examples: dict[str, list[str]] = s.get("discard_examples", {})
        self.retries: dict[str, int] = s.get("retries", {})
        self.elapsed_before = s.get("elapsed_s", 0.0)
        self.sessions = s.get("sessions", [])
        done = [r.get("metadata", {}).get("request", -1) for r in self.records]
        self.next_index = max([self.counts["requests"], *(i + 1 for i in done)])
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.started = time.monotonic()

    def absorb(self, reply: _Reply, model: str) -> int:
        """Parse, filter and deduplicate one reply; return how many records it added."""
        self.counts["requests"] += 1
        self.counts["prompts"] += len(reply.outputs)
        self.counts["prompt_tokens"] += reply.prompt_tokens
        self.counts["completion_tokens"] += reply.completion_tokens
        for kind, n in reply.retries.items():
            self.retries[kind] = self.retries.get(kind, 0) + n
        added = 0
        for text, finish_reason in reply.outputs:
            parsed = prompts.parse_response(text, self.config.num_prompt_instructions, finish_reason)
            self.counts["parsed_tasks"] += len(parsed.tasks) + sum(parsed.discarded.values())
            for reason, n in parsed.discarded.items():
                self.discarded[reason] += n
            for reason, texts in parsed.examples.items():
                self.examples.setdefault(reason, []).extend(texts[: 3 - len(self.examples.get(reason, []))])
            for task in parsed.tasks:
                added += self._consider(task, reply.index, model)
        return added

    def _consider(self, task: dict[str, str], index: int, model: str) -> int:
        if len(self.records) >= self.config.num_instructions:
            self.counts["beyond_target"] += 1
            return 0
        scores = self.dedup.scores(task["instruction"])
        if not self.dedup.is_novel(scores):
            self.discarded["similar"] += 1
            examples = self.examples.setdefault("similar", [])
            if len(examples) < 3:
                top = self.dedup.most_similar(scores, 1)
                examples.append(f"{task['instruction']}  ~  {next(iter(top))} ({next(iter(top.values())):.2f})")
            return 0
        self.records.append({**task, "most_similar_instructions": self.dedup.most_similar(scores, 10),
                             "avg_similarity_score": float(scores.mean()),
                             "metadata": {"run_id": self.run_id, "request": index, "seed": self.config.seed,
                                          "model": model, "api": self.config.resolved_api}})
        self.dedup.append(task["instruction"])
        return 1

    def summary(self, status: str, session: dict[str, Any], price: tuple[float, float] | None) -> dict[str, Any]:
        session_s = time.monotonic() - self.started
        elapsed = self.elapsed_before + session_s
        kept = len(self.records)
        c = self.counts
        return {"status": status, "kept": kept, "target": self.config.num_instructions, **c,
                "discarded": self.discarded, "retries": self.retries,
                "yield_per_prompt": round(kept / c["prompts"], 3) if c["prompts"] else None,
                "elapsed_s": round(elapsed, 2),
                "throughput": {"kept_per_min": round(60 * kept / elapsed, 2) if elapsed else None,
                               "requests_per_min": round(60 * c["requests"] / elapsed, 2) if elapsed else None,
                               "completion_tokens_per_s": round(c["completion_tokens"] / elapsed, 1) if elapsed else None},
                "cost_usd": _cost(price, c["prompt_tokens"], c["completion_tokens"]),
                "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF,
                "discard_examples": self.examples,
                "sessions": [*self.sessions, session | {"seconds": round(session_s, 2), "status": status}]}

    def save(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.out_dir / REGEN_FILE, self.records)   # records first: the summary may lag, never lead
        atomic_write_json(self.out_dir / SUMMARY_FILE, summary)


# --- the loop -------------------------------------------------------------------------------------------

def generate(config: GenerateConfig, endpoint=None) -> dict[str, Any]:
    """Generate until ``out_dir/regen.json`` holds ``num_instructions`` records (or ``max_requests`` is spent).

    ``endpoint`` (an :class:`alpaca_nb.server.Endpoint`) skips starting or resolving one. Returns the
    run summary, also written to ``out_dir/summary.json``.
    """
    from tqdm.auto import tqdm

    out_dir = config.out_dir()
    seeds = _seed_records(config.seed_tasks)
    if config.num_prompt_instructions > len(seeds):
        raise AlpacaNbError(f"num_prompt_instructions={config.num_prompt_instructions} but only {len(seeds)} seed tasks")
    run = _Run(config, seeds, out_dir)
    spent = config.max_requests is not None and run.next_index >= config.max_requests
    if (len(run.records) >= config.num_instructions or spent) and (out_dir / SUMMARY_FILE).exists():
        return _read_summary(out_dir)  # already done: nothing to start, nothing to spend
    prices = load_prices(config.prices)
    with contextlib.ExitStack() as stack:
        endpoint = endpoint or stack.enter_context(open_endpoint(
            config.backend, model=config.model, base_url=config.base_url, log_path=out_dir / SERVER_LOG))
        model = Path(endpoint.model).name if config.backend == "local" else endpoint.model
        price = price_for(endpoint.model, config.backend, prices)
        session = {"run_id": run.run_id, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "backend": config.backend, "base_url": endpoint.base_url, "model": model,
                   "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)}}
        client = endpoint.client(timeout=config.request_timeout, max_retries=0)
        extra = _sampling_extra(config, endpoint)
        bar = stack.enter_context(tqdm(total=config.num_instructions, initial=min(len(run.records), config.num_instructions),
                                       desc="kept instructions", unit="instr", disable=not config.progress))
        pool, stop = ThreadPoolExecutor(max_workers=config.resolved_concurrency), threading.Event()
        in_flight: dict[Future, int] = {}
        try:
            while len(run.records) < config.num_instructions:
                while (len(in_flight) < config.resolved_concurrency
                       and (config.max_requests is None or run.next_index < config.max_requests)):
                    texts = [_prompt_for(config, seeds, run.next_index, j) for j in range(config.prompts_per_request)]
                    future = pool.submit(_request, client, endpoint, config, run.next_index, texts, extra, stop)
                    in_flight[future] = run.next_index
                    run.next_index += 1
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    del in_flight[future]
                    bar.update(run.absorb(future.result(), model))
                    run.save(run.summary("running", session, price))
                    bar.set_postfix(requests=run.counts["requests"], discarded=sum(run.discarded.values()))
            while in_flight:  # already paid for: account for them (their tasks count as beyond_target)
                future = next(iter(in_flight))
                run.absorb(future.result(), model)
                del in_flight[future]
        except BaseException as e:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            client.close()  # aborts the requests still in flight
            run.save(run.summary(f"error: {e}" if isinstance(e, Exception) else "interrupted", session, price))
            raise
        pool.shutdown()
        status = "complete" if len(run.records) >= config.num_instructions else "stopped: max_requests reached"
        summary = run.summary(status, session, price)
        run.save(summary)
    return summary


def one_response(config: GenerateConfig, index: int = 0, endpoint=None) -> dict[str, Any]:
    """Send the prompt of request ``index`` once and return it with the raw reply (for the lesson).

    Returns ``{"prompt", "text", "finish_reason", "prompt_tokens", "completion_tokens"}``; nothing is saved.
    """
    seeds = _seed_records(config.seed_tasks)
    prompt = _prompt_for(config, seeds, index, 0)
    with contextlib.ExitStack() as stack:
        endpoint = endpoint or stack.enter_context(open_endpoint(
            config.backend, model=config.model, base_url=config.base_url, log_path=config.out_dir() / SERVER_LOG))
        client = endpoint.client(timeout=config.request_timeout, max_retries=0)
        reply = _request(client, endpoint, config, index, [prompt], _sampling_extra(config, endpoint),
                         threading.Event())
    text, finish_reason = reply.outputs[0]
    return {"prompt": prompt, "text": text, "finish_reason": finish_reason,
            "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}


def _prompt_for(config: GenerateConfig, seeds: list[dict[str, str]], index: int, j: int) -> str:
    """The prompt for request ``index``, slot ``j``: the same on every resume, different across requests."""
    rng = random.Random(f"{config.seed}:{index}:{j}")
    return prompts.encode_prompt(rng.sample(seeds, config.num_prompt_instructions))


def summary_table(summary: dict[str, Any]):
    """A pandas table of what happened to every generated task: kept, or discarded by reason."""
    import pandas as pd

    rows = {"kept": summary["kept"], **{f"discarded: {k}": v for k, v in summary["discarded"].items()},
            "beyond target (unused)": summary.get("beyond_target", 0)}
    table = pd.DataFrame({"tasks": rows})
    table["share"] = (table["tasks"] / max(1, table["tasks"].sum())).round(3)
    return table


def outcome_figure(summary: dict[str, Any]):
    """A horizontal bar chart of :func:`summary_table` (kept vs each discard reason)."""
    import matplotlib.pyplot as plt

    table = summary_table(summary)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1))
    colors = ["tab:green" if name == "kept" else "tab:gray" for name in table.index]
    ax.barh(table.index[::-1], table["tasks"][::-1], color=colors[::-1])
    ax.set_xlabel("generated tasks")
    ax.set_title(f"{summary['kept']} kept of {summary['parsed_tasks']} parsed tasks, {summary['requests']} requests")
    fig.tight_layout()
    return fig

"""Lesson 02: Alpaca's Self-Instruct generation loop, on any OpenAI-compatible endpoint.

Each request shows the model three seed tasks in :func:`alpaca_nb.prompts.encode_prompt` and asks
for more; responses are parsed and filtered (:mod:`alpaca_nb.prompts`), then the ROUGE-L novelty
filter (:mod:`alpaca_nb.dedupe`) keeps an instruction only if it scores at most 0.7 against every
seed and every instruction kept so far. Requests run ``max_concurrency`` at a time with bounded
retries (exponential backoff with jitter) on 429, 5xx and timeouts (:mod:`alpaca_nb.generate_requests`);
settings and files are in :mod:`alpaca_nb.generate_config`, prices and estimates in
:mod:`alpaca_nb.generate_cost`.

Crash safety: after every completed request ``regen.json`` (Alpaca's format plus ``metadata``) and
``summary.json`` (accounting) are rewritten atomically, so ``kill -9`` loses at most the requests in
flight, and re-running with the same ``output_dir`` continues to ``num_instructions`` with no
duplicate. The API key is never written anywhere: files and messages pass through
:func:`alpaca_nb.errors.scrub_secrets` (a server may echo it in an error). A run sends at most
``max_requests`` requests (default: 3x the estimate), never more at once than the target can still use,
and stops with a clear error when a request keeps failing or keeps getting unusable replies.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import prompts
from .dedupe import RougeDeduplicator
from .fileio import atomic_write_json
from .folder_lock import locks_output_folder
from .generate_config import (REGEN_FILE, SERVER_LOG, SUMMARY_FILE, GenerateConfig, load_regen, prompt_for,
                              read_summary, seed_records)
from .generate_cost import PRICES_AS_OF, cost_usd, estimate
from .generate_requests import RequestReply, abort_requests, open_session, sampling_extra, send_request
from .self_instruct import generate_self_instruct
from .server import open_endpoint


# --- the state of one output folder ---------------------------------------------------------------------

class _Run:
    """The state of one output folder: kept records, the novelty pool and the accounting."""

    def __init__(self, config: GenerateConfig, seeds: list[dict[str, str]], out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        self.secrets: list[str] = []  # the API key, scrubbed from every file written
        self.session_requests = 0
        self.records = load_regen(out_dir)
        self.dedup = RougeDeduplicator((s["instruction"] for s in seeds), threshold=config.similarity_threshold)
        for r in self.records:
            self.dedup.append(r["instruction"])
        s = read_summary(out_dir, recipe="alpaca")
        self.counts = {k: s.get(k, 0) for k in ("requests", "prompts", "prompt_tokens", "completion_tokens",
                                                "parsed_tasks", "beyond_target")}
        self.discarded = {reason: s.get("discarded", {}).get(reason, 0) for reason in prompts.DISCARD_REASONS}
        self.examples: dict[str, list[str]] = s.get("discard_examples", {})
        self.retries: dict[str, int] = s.get("retries", {})
        self.elapsed_before = s.get("elapsed_s", 0.0)
        self.sessions = s.get("sessions", [])
        done = [m.get("request") for r in self.records if isinstance(m := r.get("metadata"), dict)]
        self.next_index = max([self.counts["requests"], *(i + 1 for i in done if isinstance(i, int))])
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.started = time.monotonic()

    def absorb(self, reply: RequestReply, model: str) -> int:
        """Parse, filter and deduplicate one reply; return how many records it added."""
        self.counts["requests"] += 1
        self.session_requests += 1
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
        return {"status": status, "recipe": "alpaca", "kept": kept, "target": self.config.num_instructions, **c,
                "steps": {"generate": {k: c[k] for k in ("requests", "prompts", "prompt_tokens", "completion_tokens")}},
                "discarded": self.discarded, "retries": self.retries,
                "yield_per_prompt": round(kept / c["prompts"], 3) if c["prompts"] else None,
                "elapsed_s": round(elapsed, 2),
                "throughput": {"kept_per_min": round(60 * kept / elapsed, 2) if elapsed else None,
                               "requests_per_min": round(60 * c["requests"] / elapsed, 2) if elapsed else None,
                               "completion_tokens_per_s": round(c["completion_tokens"] / elapsed, 1) if elapsed else None},
                "cost_usd": cost_usd(price, c["prompt_tokens"], c["completion_tokens"]),
                "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF,
                "discard_examples": self.examples,
                "sessions": [*self.sessions, session | {"seconds": round(session_s, 2), "status": status}]}

    def save(self, summary: dict[str, Any], records: bool = True) -> None:
        """Write ``regen.json`` (unless ``records`` is False), then ``summary.json``: atomic, secrets scrubbed."""
        if records:  # records first: the summary may lag, never lead
            atomic_write_json(self.out_dir / REGEN_FILE, self.records, secrets=self.secrets)
        atomic_write_json(self.out_dir / SUMMARY_FILE, summary, secrets=self.secrets)


# --- the loop -------------------------------------------------------------------------------------------

@locks_output_folder("alpaca-nb generate", lambda a: a["config"].out_dir())
def generate(config: GenerateConfig, endpoint=None) -> dict[str, Any]:
    """Generate until ``out_dir/regen.json`` holds ``num_instructions`` records (or ``max_requests`` is spent).

    ``endpoint`` (an :class:`alpaca_nb.server.Endpoint`) skips starting or resolving one. Returns the
    run summary, also written to ``out_dir/summary.json``. Bad settings or files raise
    :class:`AlpacaNbError` before anything is sent or written; a failed run leaves the files of earlier
    sessions as they were unless it completed a request (a fresh folder gets a summary of the failure).
    ``config.recipe == "self-instruct"`` runs :func:`alpaca_nb.self_instruct.generate_self_instruct` instead.
    """
    from tqdm.auto import tqdm

    if config.recipe != "alpaca":
        config.validate()
        return generate_self_instruct(config, endpoint)
    seeds = seed_records(config.seed_tasks)
    config.validate(len(seeds))
    out_dir = config.out_dir()
    run = _Run(config, seeds, out_dir)
    limit = estimate(config)["max_requests"]
    spent = run.next_index >= limit
    if (len(run.records) >= config.num_instructions or spent) and (out_dir / SUMMARY_FILE).exists():
        return read_summary(out_dir)  # already done: nothing to start, nothing to spend
    with contextlib.ExitStack() as stack:
        endpoint, price, session, client = open_session(stack, config, out_dir, run.run_id, limit, endpoint)
        run.secrets.append(endpoint.api_key)
        model = session["model"]
        extra = sampling_extra(config, endpoint)
        bar = stack.enter_context(tqdm(total=config.num_instructions, initial=min(len(run.records), config.num_instructions),
                                       desc="kept instructions", unit="instr", disable=not config.progress))
        pool, stop = ThreadPoolExecutor(max_workers=config.resolved_concurrency), threading.Event()
        in_flight: dict[Future, int] = {}
        try:
            while len(run.records) < config.num_instructions:
                # never more prompts in flight than instructions still missing (at least one request)
                usable = -(-(config.num_instructions - len(run.records)) // config.prompts_per_request)
                while len(in_flight) < min(config.resolved_concurrency, usable) and run.next_index < limit:
                    texts = [prompt_for(config, seeds, run.next_index, j) for j in range(config.prompts_per_request)]
                    future = pool.submit(send_request, client, endpoint, config, run.next_index, texts, extra, stop)
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
            status = abort_requests(e, stop, pool, client, run.secrets)
            if run.session_requests or not (out_dir / SUMMARY_FILE).exists():
                run.save(run.summary(status, session, price), records=run.session_requests > 0)
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
    seeds = seed_records(config.seed_tasks)
    config.validate(len(seeds))
    prompt = prompt_for(config, seeds, index, 0)
    with contextlib.ExitStack() as stack:
        endpoint = endpoint or stack.enter_context(open_endpoint(
            config.backend, model=config.model, base_url=config.base_url, log_path=config.out_dir() / SERVER_LOG))
        client = endpoint.client(timeout=config.request_timeout, max_retries=0)
        reply = send_request(client, endpoint, config, index, [prompt], sampling_extra(config, endpoint),
                             threading.Event())
    text, finish_reason = reply.outputs[0]
    return {"prompt": prompt, "text": text, "finish_reason": finish_reason,
            "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}


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

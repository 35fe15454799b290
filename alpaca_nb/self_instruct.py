"""Lesson 02, second recipe: Self-Instruct's four steps (Wang et al., 2023), beside Alpaca's one-prompt shortcut.

``alpaca-nb generate --recipe self-instruct`` (``GenerateConfig(recipe="self-instruct")``) runs, in one process,
what yizhongw/self-instruct runs as four scripts, each writing upstream's file in the output folder:

1. ``bootstrap_instructions.py``: new instructions from 8 in-context ones (6 seeds, 2 from the model's own pool),
   upstream's filters, the ROUGE-L <= 0.7 novelty filter -> ``machine_generated_instructions.jsonl``;
2. ``identify_clf_or_not.py``: a few-shot "Is it classification?" -> ``is_clf_or_not_<engine>_template_1.jsonl``;
3. ``generate_instances.py``: instances, output-first for classification tasks (a label, then an input for it,
   so the labels stay balanced), input-first otherwise -> ``machine_generated_instances.jsonl``;
4. ``prepare_for_finetuning.py``: parse and filter the instances -> ``finetuning/all_generated_instances.jsonl``
   (Alpaca's instruction/input/output; upstream's GPT-3 prompt/completion encoding is for GPT-3's fine-tuning
   API and is not written).

Prompts, parsers and request settings are in :mod:`alpaca_nb.self_instruct_prompts`; the endpoint
(:func:`alpaca_nb.server.open_endpoint`), the request layer with its retries
(:func:`alpaca_nb.generate_requests.send_request`), the novelty filter (:class:`RougeDeduplicator`), the price
table and the estimate (:mod:`alpaca_nb.generate_cost`) are Alpaca's recipe's.

Files keep upstream's keys. Deviations: ``metadata``/``instance_metadata`` hold our small record (run id,
request, model, and the finish reason where upstream's parser reads it, ``response.choices[0].finish_reason``)
instead of the whole API response; each step's file is appended with one write and an fsync per completed
request (upstream appends too) rather than rewritten, so a 52K run does not rewrite a growing file 52K times:
a line torn by ``kill -9`` is dropped on resume and its request sent again. Then ``summary.json`` is rewritten
atomically. A rerun skips every instruction a step's file already holds (upstream keys its files by
instruction too), so it resumes at the step and record where the run stopped, with nothing lost or repeated.

Budget: ``max_requests`` bounds the requests of all steps together (default: 3x the estimate); step 1 stops
early enough to leave steps 2 and 3 a request for every instruction it keeps.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import self_instruct_prompts as sip
from .data import Example, load_seed_tasks
from .dedupe import RougeDeduplicator
from .errors import scrub_secrets
from .fileio import atomic_write_json, atomic_write_text
from .folder_lock import locks_output_folder
from .generate_config import SUMMARY_FILE, GenerateConfig, read_summary
from .generate_cost import PRICES_AS_OF, cost_usd, estimate, load_prices, price_for
from .generate_requests import RequestReply, abort_requests, open_session, sampling_extra, send_request
from .self_instruct_files import (CLF_FILE, FINETUNING_FILE, INSTANCES_FILE, INSTRUCTIONS_FILE, append_jsonl,
                                  engine_name, finish_reason, read_step_file)

STEPS = ("instructions", "classification", "instances")  # the steps that send requests; "filter" is step 4
_COUNTS = ("requests", "prompts", "prompt_tokens", "completion_tokens")


class _Run:
    """One output folder's state: the step files, the novelty pool, step 4's results and the accounting."""

    def __init__(self, config: GenerateConfig, seeds: list[Example], out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        self.paths = {"instructions": out_dir / INSTRUCTIONS_FILE, "instances": out_dir / INSTANCES_FILE,
                      "classification": out_dir / CLF_FILE.format(engine=engine_name(config))}
        self.secrets: list[str] = []
        self.seed_instructions = [s.instruction for s in seeds]
        self.examples = sip.pick_examples(seeds)
        self.pool = read_step_file(self.paths["instructions"], ("instruction",))
        self.by_instruction = {r["instruction"]: r for r in self.pool}
        self.clf = {r["instruction"]: r for r in read_step_file(self.paths["classification"],
                                                                 ("instruction", "is_classification"))}
        self.instances: dict[str, dict] = {}
        self.parsed_instances: dict[str, sip.Instances] = {}
        for r in read_step_file(self.paths["instances"], ("instruction", "raw_instances")):
            self._add_instances(r)
        s = read_summary(out_dir, recipe="self-instruct")
        steps = s.get("steps", {})
        self.counts = {step: {k: steps.get(step, {}).get(k, 0) for k in _COUNTS} for step in STEPS}
        first = steps.get("instructions", {})
        self.discarded = Counter({r: first.get("discarded", {}).get(r, 0) for r in sip.INSTRUCTION_DISCARD_REASONS})
        self.parsed, self.beyond_target = first.get("parsed", 0), first.get("beyond_target", 0)
        self.discard_examples: dict[str, list[str]] = s.get("discard_examples", {})
        self.retries: dict[str, int] = s.get("retries", {})
        self.elapsed_before, self.sessions = s.get("elapsed_s", 0.0), s.get("sessions", [])
        self.dedup = RougeDeduplicator(self.seed_instructions, threshold=config.similarity_threshold)
        for r in self.pool:
            self.dedup.append(r["instruction"])
        self.sent = sum(c["requests"] for c in self.counts.values())  # completed (+ in flight this session)
        self.next_index = {step: self.counts[step]["requests"] for step in STEPS}
        self.next_index["instructions"] = max([self.next_index["instructions"], *(
            r["request_idx"] + 1 for r in self.pool if isinstance(r.get("request_idx"), int))])
        self.limit = estimate(config)["max_requests"]
        self.session_requests = 0
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.started = time.monotonic()

    # --- what is left to do ------------------------------------------------------------------------------

    def is_classification(self, instruction: str) -> bool:
        """Step 2's verdict for ``instruction`` (an unclear answer counts as no, as upstream)."""
        return sip.parse_clf(self.clf[instruction]["is_classification"]) is True

    def pending(self, step: str) -> list[str]:
        """Instructions of the pool that ``step`` (2 or 3) still has to do, in pool order."""
        done, ready = (self.clf, None) if step == "classification" else (self.instances, self.clf)
        return [r["instruction"] for r in self.pool if r["instruction"] not in done
                and (ready is None or r["instruction"] in ready)]

    def _later_requests(self, n_instructions: int) -> int:
        """Requests steps 2 and 3 need once the pool holds ``n_instructions``."""
        ppr = self.config.prompts_per_request
        return (-(-max(0, n_instructions - len(self.clf)) // ppr) +
                -(-max(0, n_instructions - len(self.instances)) // ppr))

    def can_send_instructions(self, in_flight: int) -> bool:
        """Step 1 may send: the target is not reached (nor covered by what is in flight) and the budget leaves
        steps 2 and 3 a request for every instruction, counting one new instruction per request."""
        missing = self.config.num_instructions - len(self.pool)
        if missing <= 0 or in_flight >= -(-missing // self.config.prompts_per_request):
            return False
        return self.sent + 1 + self._later_requests(len(self.pool) + in_flight + 1) <= self.limit

    def has_work(self) -> bool:
        """Whether any step could send a request now."""
        pending = self.pending("classification") or self.pending("instances")
        return self.can_send_instructions(0) or bool(pending and self.sent < self.limit)

    def complete(self) -> bool:
        return len(self.pool) >= self.config.num_instructions and len(self.instances) >= len(self.pool)

    # --- requests ------------------------------------------------------------------------------------------

    def next_job(self, step: str, in_flight: int,
                 queue: deque) -> tuple[int, list[str], list[str], GenerateConfig] | None:
        """``(index, instructions, prompts, request settings)`` of the next request of ``step`` (steps 2 and 3 take
        their instructions from ``queue``), or ``None``."""
        config, ppr = self.config, self.config.prompts_per_request
        if step == "instructions":
            if not self.can_send_instructions(in_flight):
                return None
            index = self.next_index[step]
            return index, [], [self.instruction_prompt(index, j) for j in range(ppr)], sip.step_config(config, step)
        if self.sent >= self.limit:
            return None
        if not queue:
            return None
        batch = [queue.popleft() for _ in range(min(ppr, len(queue)))]
        if step == "classification":
            texts = [sip.encode_clf_prompt(self.examples, i) for i in batch]
            return self.next_index[step], batch, texts, sip.step_config(config, step)
        clf = [self.is_classification(i) for i in batch]
        texts = [sip.encode_instance_prompt(self.examples, i, c) for i, c in zip(batch, clf)]
        return self.next_index[step], batch, texts, sip.step_config(config, step, any(clf))

    @property
    def restated_number(self) -> int | None:
        """The number step 1's prompt ends with, where a chat API makes the model say it again (else ``None``)."""
        return sip.NUM_PROMPT_INSTRUCTIONS + 1 if self.config.resolved_api == "chat" else None

    def instruction_prompt(self, index: int, j: int) -> str:
        """Step 1's prompt for request ``index``, slot ``j``: up to 2 pool instructions and 6+ seeds, shuffled."""
        rng = random.Random(f"{self.config.seed}:self-instruct:{index}:{j}")
        machine = rng.sample([r["instruction"] for r in self.pool], min(sip.NUM_MACHINE_INSTRUCTIONS, len(self.pool)))
        shown = machine + rng.sample(self.seed_instructions, sip.NUM_PROMPT_INSTRUCTIONS - len(machine))
        rng.shuffle(shown)
        return sip.encode_instruction_prompt(shown)

    def absorb(self, step: str, index: int, batch: list[str], reply: RequestReply, model: str) -> list[dict]:
        """Account for one reply of ``step`` and turn it into that step's new records (also applied here)."""
        counts = self.counts[step]
        counts["requests"] += 1
        counts["prompts"] += len(reply.outputs)
        counts["prompt_tokens"] += reply.prompt_tokens
        counts["completion_tokens"] += reply.completion_tokens
        self.session_requests += 1
        for kind, n in reply.retries.items():
            self.retries[kind] = self.retries.get(kind, 0) + n
        meta = {"run_id": self.run_id, "request": index, "seed": self.config.seed, "model": model,
                "api": self.config.resolved_api}
        if step == "instructions":
            return self._absorb_instructions(index, reply, meta)
        rows = []
        for instruction, (text, reason) in zip(batch, reply.outputs):
            if step == "classification":
                row = {"instruction": instruction, "is_classification": text}
                self.clf[instruction] = row
            else:
                clf = self.is_classification(instruction)
                source = self.by_instruction[instruction]
                row = {"instruction": instruction, "raw_instances": (sip.CLASS_LABEL + text) if clf else text,
                       "instance_metadata": meta | {"prompt": "output-first" if clf else "input-first",
                                                    "response": {"choices": [{"finish_reason": reason}]}},
                       "instruction_metadata": source.get("metadata"), "most_similar": source.get("most_similar"),
                       "avg_similarity_score": source.get("avg_similarity_score")}
                self._add_instances(row)
            rows.append(row)
        return rows

    def _absorb_instructions(self, index: int, reply: RequestReply, meta: dict) -> list[dict]:
        rows = []
        for text, reason in reply.outputs:
            parsed = sip.parse_instructions(text, reason, self.restated_number)
            self.parsed += len(parsed.tasks) + sum(parsed.discarded.values())
            self.discarded.update(parsed.discarded)
            for kind, texts in parsed.examples.items():
                self.discard_examples.setdefault(kind, []).extend(texts[: 3 - len(self.discard_examples.get(kind, []))])
            for task in parsed.tasks:
                if len(self.pool) >= self.config.num_instructions:
                    self.beyond_target += 1
                    continue
                scores = self.dedup.scores(task["instruction"])
                if not self.dedup.is_novel(scores):
                    self.discarded["similar"] += 1
                    examples = self.discard_examples.setdefault("similar", [])
                    if len(examples) < 3:
                        top, score = next(iter(self.dedup.most_similar(scores, 1).items()))
                        examples.append(f"{task['instruction']}  ~  {top} ({score:.2f})")
                    continue
                row = {"instruction": task["instruction"], "most_similar": self.dedup.most_similar(scores, 10),
                       "avg_similarity_score": float(scores.mean()), "metadata": meta | {"finish_reason": reason},
                       "request_idx": index}
                self.pool.append(row)
                self.by_instruction[row["instruction"]] = row
                self.dedup.append(task["instruction"])
                rows.append(row)
        return rows

    def _add_instances(self, row: dict) -> None:
        """Record step 3's ``row`` and parse it at once (step 4 then only gathers)."""
        instruction = row["instruction"]
        self.instances[instruction] = row
        clf = instruction in self.clf and self.is_classification(instruction)
        self.parsed_instances[instruction] = sip.parse_instances(row["raw_instances"], clf, finish_reason(row))

    # --- step 4 and the summary ----------------------------------------------------------------------------

    def training_rows(self) -> list[dict[str, str]]:
        """Step 4's output: every kept instance as Alpaca's ``{"instruction", "input", "output"}``, in pool order."""
        return [{"instruction": r["instruction"], "input": inp, "output": out} for r in self.pool
                for inp, out in getattr(self.parsed_instances.get(r["instruction"]), "instances", [])]

    def write_training_file(self) -> None:
        rows = self.training_rows()
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(self.out_dir / FINETUNING_FILE, scrub_secrets(text, self.secrets))

    def filter_summary(self) -> dict[str, Any]:
        """Step 4's numbers: tasks in and kept, instances kept, discards by reason, label balance."""
        discarded: Counter = Counter()
        kept = [i for i, p in self.parsed_instances.items() if p.instances]
        for p in self.parsed_instances.values():
            discarded.update(p.discarded)
        shares = [sip.majority_share([out for _, out in self.parsed_instances[i].instances])
                  for i in kept if i in self.clf and self.is_classification(i)]
        return {"tasks": len(self.parsed_instances), "tasks_kept": len(kept),
                "instances": sum(len(self.parsed_instances[i].instances) for i in kept),
                "discarded": {r: discarded.get(r, 0) for r in sip.INSTANCE_DISCARD_REASONS},
                "label_balance": {"classification_tasks": len(shares),
                                  "with_two_or_more_labels": sum(s < 1 for s in shares),
                                  "mean_majority_label_share": round(sum(shares) / len(shares), 3) if shares else None}}

    def summary(self, status: str, session: dict[str, Any] | None, price: tuple[float, float] | None) -> dict[str, Any]:
        session_s = time.monotonic() - self.started
        elapsed = self.elapsed_before + session_s
        total = {k: sum(c[k] for c in self.counts.values()) for k in _COUNTS}
        verdicts = Counter(sip.parse_clf(r["is_classification"]) for r in self.clf.values())
        step4 = self.filter_summary()
        not_reached = sum(r["instruction"] not in self.instances for r in self.pool)
        clf_done = len(self.clf)
        return {"status": status, "recipe": "self-instruct", "kept": step4["tasks_kept"],
                "target": self.config.num_instructions, **total, "parsed_tasks": self.parsed,
                "beyond_target": self.beyond_target,
                "discarded": {**{r: self.discarded.get(r, 0) for r in sip.INSTRUCTION_DISCARD_REASONS},
                              "no_valid_instances": step4["tasks"] - step4["tasks_kept"], "not_reached": not_reached},
                "retries": self.retries, "instructions": len(self.pool), "instances": step4["instances"],
                "classification_share": round(verdicts[True] / clf_done, 3) if clf_done else None,
                "label_balance": step4["label_balance"],
                "steps": {"instructions": {**self.counts["instructions"], "parsed": self.parsed, "kept": len(self.pool),
                                           "beyond_target": self.beyond_target, "discarded": dict(self.discarded)},
                          "classification": {**self.counts["classification"], "done": clf_done,
                                             "classification": verdicts[True], "not_classification": verdicts[False],
                                             "unclear": verdicts[None]},
                          "instances": {**self.counts["instances"], "done": len(self.instances)},
                          "filter": step4},
                "files": {"instructions": self.paths["instructions"].name, "classification":
                          self.paths["classification"].name, "instances": self.paths["instances"].name,
                          "finetuning": FINETUNING_FILE},
                "yield_per_prompt": round(step4["tasks_kept"] / total["prompts"], 3) if total["prompts"] else None,
                "elapsed_s": round(elapsed, 2),
                "throughput": {"requests_per_min": round(60 * total["requests"] / elapsed, 2) if elapsed else None,
                               "completion_tokens_per_s": round(total["completion_tokens"] / elapsed, 1) if elapsed
                               else None},
                "cost_usd": cost_usd(price, total["prompt_tokens"], total["completion_tokens"]),
                "price_per_1m_tokens": price, "prices_as_of": PRICES_AS_OF, "discard_examples": self.discard_examples,
                "sessions": self.sessions + ([session | {"seconds": round(session_s, 2), "status": status}]
                                             if session else [])}

    def save_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.out_dir / SUMMARY_FILE, summary, secrets=self.secrets)

    def pump(self, step: str, executor: ThreadPoolExecutor, stop: threading.Event, client, endpoint, model: str,
             after: Callable[[str], None]) -> None:
        """Send ``step``'s requests, ``max_concurrency`` at a time, until it has none left or the budget is spent;
        append each reply's records to the step's file, then call ``after(step)``."""
        in_flight: dict = {}
        queue = deque(self.pending(step) if step != "instructions" else ())
        while True:
            while len(in_flight) < self.config.resolved_concurrency:
                job = self.next_job(step, len(in_flight), queue)
                if job is None:
                    break
                index, batch, texts, cfg = job
                extra = sampling_extra(cfg, endpoint) | sip.step_extra(cfg, step)
                future = executor.submit(send_request, client, endpoint, cfg, index, texts, extra, stop)
                in_flight[future] = (index, batch)
                self.next_index[step] += 1
                self.sent += 1
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                index, batch = in_flight.pop(future)
                append_jsonl(self.paths[step], self.absorb(step, index, batch, future.result(), model), self.secrets)
                after(step)


@locks_output_folder("alpaca-nb generate --recipe self-instruct", lambda a: a["config"].out_dir())
def generate_self_instruct(config: GenerateConfig, endpoint=None) -> dict[str, Any]:
    """Run (or resume) Self-Instruct's four steps in ``config.out_dir()``; return the summary (also written to
    ``summary.json``). Bad settings or files raise :class:`AlpacaNbError` before anything is sent."""
    from tqdm.auto import tqdm

    seeds = load_seed_tasks(config.seed_tasks)
    config.validate(len(seeds))
    out_dir = config.out_dir()
    run = _Run(config, seeds, out_dir)
    if not run.has_work():
        done = read_summary(out_dir) if (out_dir / FINETUNING_FILE).exists() else {}
        if done.get("status") in ("complete", "stopped: max_requests reached"):
            return done  # already done: nothing to start, nothing to spend
        run.write_training_file()  # a run stopped after its last request but before step 4: finish it
        summary = run.summary("complete" if run.complete() else "stopped: max_requests reached", None,
                              price_for(config.model or "", config.backend, load_prices(config.prices)))
        run.save_summary(summary)
        return summary
    with contextlib.ExitStack() as stack:
        endpoint, price, session, client = open_session(stack, config, out_dir, run.run_id, run.limit, endpoint)
        run.secrets.append(endpoint.api_key)
        model = session["model"]
        bar = stack.enter_context(tqdm(desc="Self-Instruct requests", unit="req", disable=not config.progress))

        def after(step: str) -> None:
            run.save_summary(run.summary("running", session, price))
            bar.update(1)
            bar.set_postfix(step=step, instructions=len(run.pool), instances=len(run.instances))

        executor, stop = ThreadPoolExecutor(max_workers=config.resolved_concurrency), threading.Event()
        try:
            for step in STEPS:
                run.pump(step, executor, stop, client, endpoint, model, after)
        except BaseException as e:
            status = abort_requests(e, stop, executor, client, run.secrets)
            if run.session_requests or not (out_dir / SUMMARY_FILE).exists():
                run.save_summary(run.summary(status, session, price))
            raise
        executor.shutdown()
        run.write_training_file()
        summary = run.summary("complete" if run.complete() else "stopped: max_requests reached", session, price)
        run.save_summary(summary)
    return summary


def classify(config: GenerateConfig, instructions: list[str], endpoint) -> list[bool | None]:
    """Step 2's verdict (yes, no, ``None`` if unclear) for any ``instructions`` (e.g. Alpaca's recipe's), with
    step 2's prompt and settings on ``endpoint``; nothing is written. For comparing the recipes in the lesson."""
    examples = sip.pick_examples(load_seed_tasks(config.seed_tasks))
    cfg = sip.step_config(config, "classification")
    client = endpoint.client(timeout=config.request_timeout, max_retries=0)
    extra, stop = sampling_extra(cfg, endpoint), threading.Event()
    verdicts = []
    for index, instruction in enumerate(instructions):
        reply = send_request(client, endpoint, cfg, index, [sip.encode_clf_prompt(examples, instruction)], extra, stop)
        verdicts.append(sip.parse_clf(reply.outputs[0][0]))
    return verdicts


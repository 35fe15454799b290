"""The generation loop against a real local OpenAI-compatible HTTP server (scripted), and end to end
against `transformers serve` on the embedded model."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alpaca_nb import data
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.generate import generate
from alpaca_nb.generate_config import GenerateConfig, load_regen
from alpaca_nb.generate_cost import PRICES_PER_1M, estimate, load_prices, price_for
from openai_stub import OpenAIStub, Reply, UniqueTasks, numbered_tasks

REPO = Path(__file__).resolve().parents[1]


def config(stub: OpenAIStub, out: Path, **kw) -> GenerateConfig:
    base = dict(num_instructions=10, output_dir=str(out), backend="url", base_url=stub.base_url, model="stub-model",
                api="completions", request_batch_size=1, max_concurrency=2, request_timeout=5.0,
                backoff_base=0.01, backoff_max=0.05, progress=False)
    return GenerateConfig(**(base | kw))


def task(instruction: str) -> tuple[str, str, str]:
    return instruction, "", "An answer."


def test_reaches_target_and_writes_alpaca_records_with_similarity(tmp_path, mirror):
    seeds = [e.instruction for e in data.load_seed_tasks()]
    first = numbered_tasks([task("Give three tips for staying healthy this winter."), task(seeds[0]),
                            task("Give three tips for staying healthy this winter season."),
                            task("Translate the sentence into Spanish for a tourist.")])
    with OpenAIStub([Reply(text=first)], default=UniqueTasks(per_reply=3)) as stub:
        summary = generate(config(stub, tmp_path, num_instructions=8, max_concurrency=1))
    records = load_regen(tmp_path)
    assert summary["status"] == "complete" and summary["kept"] == len(records) == 8
    assert records[0]["instruction"] == "Give three tips for staying healthy this winter."
    assert records[1]["instruction"] == "Translate the sentence into Spanish for a tourist."
    assert summary["discarded"]["similar"] == 2          # a seed, and a near copy of record 0
    assert summary["discard_examples"]["similar"][0].startswith(seeds[0])
    for r in records:
        assert set(r) == {"instruction", "input", "output", "most_similar_instructions", "avg_similarity_score",
                          "metadata"}
        sims = list(r["most_similar_instructions"].values())
        assert len(sims) == 10 and sims == sorted(sims, reverse=True) and max(sims) <= 0.7
        assert 0 <= r["avg_similarity_score"] <= max(sims)
        assert r["metadata"]["model"] == "stub-model" and r["metadata"]["seed"] == 42
    assert len({r["instruction"] for r in records}) == 8
    # accounting adds up: every parsed task is kept, discarded for a reason, or beyond the target
    assert summary["parsed_tasks"] == summary["kept"] + sum(summary["discarded"].values()) + summary["beyond_target"]
    assert summary["requests"] == len(stub.requests) and summary["completion_tokens"] > 0
    body = stub.requests[0]["body"]
    assert body["prompt"].endswith("###\n4. Instruction:") and body["stop"] == ["\n20", "20."]
    assert body["max_tokens"] == 3072 and body["temperature"] == 1.0 and body["model"] == "stub-model"
    assert json.loads((tmp_path / "summary.json").read_text())["kept"] == 8


def test_prompt_lists_for_completions_and_one_message_for_chat(tmp_path):
    with OpenAIStub(default=UniqueTasks(per_reply=2)) as stub:
        generate(config(stub, tmp_path / "a", num_instructions=6, request_batch_size=3))
        lists = [r["body"]["prompt"] for r in stub.requests]
    assert all(isinstance(p, list) and len(p) == 3 for p in lists)   # Alpaca: several prompts per call
    with OpenAIStub(default=UniqueTasks(per_reply=2)) as stub:
        summary = generate(config(stub, tmp_path / "b", num_instructions=4, api="chat", request_batch_size=5))
        bodies = [r["body"] for r in stub.requests]
    assert summary["kept"] == 4 and all(r["path"] == "/v1/chat/completions" for r in stub.requests)
    assert all(len(b["messages"]) == 1 and b["messages"][0]["role"] == "user" for b in bodies)


def test_faults_are_retried_with_backoff_and_bad_responses_counted(tmp_path):
    script = [Reply(status=429, retry_after=0.01), Reply(status=500), Reply(status=503),
              Reply(delay=2.0, text=numbered_tasks([task("This reply comes too late to count.")])),
              Reply(text="4. Input:\nnothing\n### a list that lost its fields ###"),
              Reply(text=numbered_tasks([task("Describe the water cycle to a child."),
                                         task("Summarize the plot of the")]), finish_reason="length")]
    with OpenAIStub(script, default=UniqueTasks(per_reply=2)) as stub:
        summary = generate(config(stub, tmp_path, num_instructions=5, max_concurrency=1, request_timeout=0.5))
    assert summary["retries"] == {"429": 1, "5xx": 2, "timeout": 1}
    assert summary["discarded"]["malformed"] >= 2 and summary["discarded"]["truncated"] == 1
    assert load_regen(tmp_path)[0]["instruction"] == "Describe the water cycle to a child."
    assert summary["kept"] == 5 and summary["status"] == "complete"


def test_persistent_server_errors_stop_after_bounded_retries(tmp_path):
    with OpenAIStub(default=lambda body: Reply(status=500)) as stub:
        with pytest.raises(AlpacaNbError, match="after 2 retries"):
            generate(config(stub, tmp_path, max_retries=2, max_concurrency=1))
    assert len(stub.requests) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["status"].startswith("error")


@pytest.mark.parametrize("status, hint", [(401, "OPENAI_API_KEY"), (403, "another --model"),
                                          (404, "--api chat")])
def test_bad_key_or_unknown_model_stop_at_once(tmp_path, status, hint):
    with OpenAIStub(default=lambda body: Reply(status=status)) as stub:
        with pytest.raises(AlpacaNbError, match=hint):
            generate(config(stub, tmp_path, max_concurrency=1))
    assert len(stub.requests) == 1


def test_openai_backend_without_key_explains_how_to_run_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AlpacaNbError, match="backend 'local'"):
        generate(GenerateConfig(backend="openai", model="gpt-4o-mini", output_dir=str(tmp_path), progress=False))


def test_max_requests_bounds_a_run_that_cannot_reach_the_target(tmp_path):
    with OpenAIStub(default=lambda body: Reply(text="no tasks here")) as stub:
        summary = generate(config(stub, tmp_path, max_requests=4))
    assert summary["status"].startswith("stopped") and summary["requests"] == 4 == len(stub.requests)
    assert summary["kept"] == 0 and summary["discarded"]["malformed"] == 4 and load_regen(tmp_path) == []


def test_prices_estimate_and_cost(tmp_path, mirror):
    assert price_for("gpt-4o-mini-2024-07-18", "openai", PRICES_PER_1M) == PRICES_PER_1M["gpt-4o-mini"]
    assert price_for("my-model", "url", PRICES_PER_1M) is None and price_for("x", "local", PRICES_PER_1M) == (0, 0)
    (tmp_path / "prices.json").write_text(json.dumps({"my-model": {"input": 1.0, "output": 3.0}}))
    assert load_prices(tmp_path / "prices.json")["my-model"] == (1.0, 3.0)
    (tmp_path / "bad.json").write_text(json.dumps({"my-model": {"input": "cheap"}}))
    with pytest.raises(AlpacaNbError, match="bad.json.*my-model"):
        load_prices(tmp_path / "bad.json")
    # Alpaca's own numbers: 52K with text-davinci-003 ($0.02/1K) came to less than $500.
    davinci = estimate(GenerateConfig(num_instructions=52_000, backend="openai", model="text-davinci-003",
                                      output_dir=str(tmp_path / "none")))
    assert davinci["basis"] == "assumed" and 100 < davinci["cost_usd"] < 500
    assert davinci["cost_usd"] == pytest.approx((davinci["prompt_tokens"] + davinci["completion_tokens"]) * 20 / 1e6)
    # A run measures real tokens and yield; its cost uses the override table; the estimate then uses them.
    with OpenAIStub(default=UniqueTasks(per_reply=4)) as stub:
        summary = generate(config(stub, tmp_path / "run", num_instructions=8, model="my-model", max_concurrency=1,
                                  prices=str(tmp_path / "prices.json")))
    assert summary["cost_usd"] == pytest.approx((summary["prompt_tokens"] * 1 + summary["completion_tokens"] * 3) / 1e6)
    measured = estimate(config(stub, tmp_path / "run", num_instructions=80, model="my-model",
                               prices=str(tmp_path / "prices.json")))
    assert measured["basis"].startswith("measured") and measured["kept_per_prompt"] == 4
    assert measured["prompts"] == 20


def run_cli(*args: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "generate", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_resumes_after_kill_9_without_duplicates_or_losses_and_never_writes_the_key(tmp_path):
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    env = os.environ | {"OPENAI_API_KEY": secret}
    out = tmp_path / "gen"
    with OpenAIStub(default=UniqueTasks(per_reply=2, delay=0.15)) as stub:
        args = ["--num-instructions", "40", "--output-dir", str(out), "--backend", "url", "--base-url",
                stub.base_url, "--model", "stub-model", "--max-concurrency", "2", "--no-progress"]
        dry = run_cli(*args, "--dry-run", env=env)
        assert dry.wait(60) == 0 and "estimate for 40 instructions" in dry.stderr.read()
        assert stub.requests == []                                   # nothing spent
        proc = run_cli(*args, env=env)
        deadline = time.monotonic() + 60
        while len(load_regen(out) if (out / "regen.json").exists() else []) < 10:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = load_regen(out)
        assert 10 <= len(before) < 40
        rerun = run_cli(*args, env=env)
        stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    after = load_regen(out)
    assert len(after) == 40 and after[:len(before)] == before
    assert len({r["instruction"] for r in after}) == 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and len(summary["sessions"]) == 2
    assert all(r["authorization"] == f"Bearer {secret}" for r in stub.requests)
    written = "".join(p.read_text() for p in out.iterdir() if p.is_file()) + stdout + stderr
    assert secret not in written


@pytest.mark.slow
def test_end_to_end_on_transformers_serve(local_endpoint, tmp_path):
    summary = generate(GenerateConfig(num_instructions=1, output_dir=str(tmp_path), backend="local", max_requests=1,
                                      max_tokens=8, progress=False), endpoint=local_endpoint)
    assert summary["requests"] == 1 and summary["prompts"] == 1
    assert summary["prompt_tokens"] > 500 and 0 < summary["completion_tokens"] <= 8
    assert summary["parsed_tasks"] == summary["kept"] + sum(summary["discarded"].values())
    assert summary["cost_usd"] == 0 and summary["status"] in ("complete", "stopped: max_requests reached")
    assert len(load_regen(tmp_path)) == summary["kept"]


class RepeatingTasks:
    """Reply k brings one new task and two of the first four again (the same text from different requests),
    so only a run that remembers what it kept (across a restart too) stays free of duplicates."""

    def __init__(self, n: int = 120, delay: float = 0.15) -> None:
        words = UniqueTasks(per_reply=n, seed=7)(body={}).text  # n made-up, mutually dissimilar instructions
        self.tasks = [task(line.split("Instruction: ")[-1].strip()) for line in words.splitlines()
                      if line.startswith(" Explain") or "Instruction: " in line]
        self.delay, self.count = delay, itertools.count()

    def __call__(self, body: dict) -> Reply:
        k = next(self.count)
        picks = (k % 4, 4 + k % (len(self.tasks) - 4), (k + 2) % 4)
        return Reply(text=numbered_tasks(self.tasks[i] for i in picks), delay=self.delay)


def test_resume_after_kill_9_remembers_kept_tasks_and_continues_the_request_numbers(tmp_path):
    out = tmp_path / "gen"
    with OpenAIStub(default=RepeatingTasks()) as stub:
        args = ["--num-instructions", "30", "--output-dir", str(out), "--backend", "url", "--base-url",
                stub.base_url, "--model", "stub-model", "--max-concurrency", "2", "--request-batch-size", "1",
                "--no-progress"]
        proc = run_cli(*args, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while len(load_regen(out) if (out / "regen.json").exists() else []) < 8:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = load_regen(out)
        assert 8 <= len(before) < 30
        rerun = run_cli(*args, env=dict(os.environ))
        _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    after = load_regen(out)
    assert len(after) == 30 and after[:len(before)] == before
    assert len({r["instruction"] for r in after}) == 30                  # repeats across the restart discarded
    old = [r["metadata"]["request"] for r in before]
    new = [r["metadata"]["request"] for r in after[len(before):]]
    assert min(new) > max(old)                                           # numbering goes on, not from 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["discarded"]["similar"] > 0 and summary["requests"] > max(new)
    assert summary["status"] == "complete" and len(summary["sessions"]) == 2

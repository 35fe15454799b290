"""Self-Instruct's four-step recipe (`alpaca-nb generate --recipe self-instruct`) against the real stub OpenAI
server, with a scripted teacher that answers each step's prompt: output-first vs input-first, discards by reason,
resume after kill -9 between and within steps, upstream's file formats, bad input, the estimate and the budget."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from alpaca_nb import self_instruct_prompts as sip
from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.generate import generate
from alpaca_nb.generate_config import GenerateConfig
from alpaca_nb.generate_cost import estimate
from alpaca_nb.self_instruct_files import load_outputs, read_step_file
from openai_stub import OpenAIStub, Reply

REPO = Path(__file__).resolve().parents[1]
CLF_FILE = "is_clf_or_not_stub-model_template_1.jsonl"
_SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "vo", "pe", "du", "zi", "ba", "go", "fe", "xu", "ho"]


def made_up_instructions(n: int, seed: int = 0) -> list[str]:
    """``n`` mutually dissimilar instructions (made-up words), every third a classification task."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(3)) for _ in range(k))

    return [f"Tell whether the {words(6)} is positive or negative" if i % 3 == 0 else f"Explain the {words(7)} briefly"
            for i in range(n)]


def task_of(prompt: str) -> str:
    """The instruction a step-2 or step-3 prompt asks about (its last ``Task:`` line)."""
    return prompt.rsplit("Task: ", 1)[1].split("\n", 1)[0]


class Teacher:
    """A scripted teacher: step 1 gets the next instruction of ``script`` (one per request, or a raw reply when
    the item is a :class:`Reply`), step 2 "Yes" for "Tell whether" tasks, step 3 the ``instances`` reply for the
    task (default: two labels output-first, two examples input-first). Every prompt is kept by step."""

    def __init__(self, script: list, clf_answers: dict[str, str] | None = None,
                 instances: dict[str, Reply] | None = None, delay: float = 0.0) -> None:
        self.script, self.clf_answers, self.instances = list(script), clf_answers or {}, instances or {}
        self.delay, self.lock, self.positions = delay, threading.Lock(), {}
        self.prompts: dict[str, list[str]] = {"instructions": [], "classification": [], "instances": []}

    def __call__(self, body: dict) -> Reply:
        prompt = body.get("prompt") or body["messages"][0]["content"]
        with self.lock:
            if isinstance(prompt, list):  # one call per prompt of a batched request, in order
                k = self.positions.get(id(body), 0)
                self.positions[id(body)], prompt = k + 1, prompt[k]
            if prompt.startswith(sip.INSTRUCTION_HEADER):
                self.prompts["instructions"].append(prompt)
                item = self.script.pop(0) if self.script else ""
                return item if isinstance(item, Reply) else Reply(text=f" {item}", delay=self.delay)
            if prompt.startswith(sip.CLF_HEADER):
                self.prompts["classification"].append(prompt)
                task = task_of(prompt)
                text = self.clf_answers.get(task, " Yes" if task.startswith("Tell whether") else " No")
                return Reply(text=text, delay=self.delay)
            self.prompts["instances"].append(prompt)
            task = task_of(prompt)
            if task in self.instances:
                return self.instances[task]
            if prompt.startswith(sip.OUTPUT_FIRST_HEADER):
                return Reply(text=" Positive\nReview: I loved it.\nClass label: Negative\nReview: Dull and slow.\n",
                             delay=self.delay)
            return Reply(text="Example 1\nInput: a red fox\nOutput: A fox that is red.\nExample 2\nInput: a tall "
                              "tree\nOutput: A tree that is tall.\n", delay=self.delay)


def si_config(stub: OpenAIStub, out: Path, **kw) -> GenerateConfig:
    base = dict(recipe="self-instruct", num_instructions=3, output_dir=str(out), backend="url", base_url=stub.base_url,
                model="stub-model", api="completions", request_batch_size=1, max_concurrency=1, request_timeout=5.0,
                backoff_base=0.01, backoff_max=0.05, progress=False)
    return GenerateConfig(**(base | kw))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_classification_tasks_get_output_first_instances_and_the_others_input_first(tmp_path):
    clf_task, gen_task, other = made_up_instructions(3)
    teacher = Teacher([clf_task, gen_task, other])
    with OpenAIStub(default=teacher) as stub:
        summary = generate(si_config(stub, tmp_path))
        bodies = [r["body"] for r in stub.requests]
    assert summary["status"] == "complete" and summary["instructions"] == 3 and summary["kept"] == 3
    prompts = teacher.prompts
    # step 1: 8 numbered instructions (6 seeds + up to 2 from the pool), then "9." to continue
    assert all(p.count("\n") == 9 and p.endswith("\n9.") for p in prompts["instructions"])
    assert clf_task in prompts["instructions"][2] and gen_task in prompts["instructions"][2]
    # step 3: output-first (ending in "Class label:") for the classification task, input-first for the other
    by_task = {task_of(p): p for p in prompts["instances"]}
    assert by_task[clf_task].startswith(sip.OUTPUT_FIRST_HEADER)
    assert by_task[clf_task].endswith(f"Task: {clf_task}\nClass label:")
    assert by_task[gen_task].startswith(sip.INPUT_FIRST_HEADER) and by_task[gen_task].endswith(f"Task: {gen_task}\n")
    assert "Class label:" not in by_task[gen_task] and "Example 1\nInput:" in by_task[gen_task]
    rows = lines(tmp_path / "finetuning" / "all_generated_instances.jsonl")
    assert [(r["input"], r["output"]) for r in rows if r["instruction"] == clf_task] == [
        ("Review: I loved it.", "Positive"), ("Review: Dull and slow.", "Negative")]     # label first, then input
    assert [(r["input"], r["output"]) for r in rows if r["instruction"] == gen_task] == [
        ("a red fox", "A fox that is red."), ("a tall tree", "A tree that is tall.")]
    assert summary["classification_share"] == 0.333
    assert summary["label_balance"] == {"classification_tasks": 1, "with_two_or_more_labels": 1,
                                        "mean_majority_label_share": 0.5}
    # upstream's request settings per step, on a remote server (presence_penalty included)
    step1, step2, step3 = bodies[0], bodies[3], bodies[6]
    assert (step1["temperature"], step1["top_p"], step1["max_tokens"], step1["presence_penalty"]) == (0.7, 0.5, 1024, 2)
    assert step1["stop"] == ["\n\n", "\n16", "16.", "16 ."]
    assert (step2["temperature"], step2["max_tokens"], step2["stop"]) == (0, 3, ["\n", "Task"])
    assert "presence_penalty" not in step2
    assert (step3["max_tokens"], step3["presence_penalty"], step3["stop"]) == (300, 1.5, ["Example 6", "Task:"])
    # accounting: per step, and every parsed instruction kept, discarded or beyond the target
    steps = summary["steps"]
    assert [steps[s]["requests"] for s in ("instructions", "classification", "instances")] == [3, 3, 3]
    assert summary["requests"] == 9 == len(bodies)
    assert summary["prompt_tokens"] == sum(steps[s]["prompt_tokens"] for s in ("instructions", "classification",
                                                                               "instances"))
    assert summary["parsed_tasks"] == summary["kept"] + sum(summary["discarded"].values()) + summary["beyond_target"]


def test_malformed_replies_are_discarded_and_counted_by_reason(tmp_path):
    tasks = made_up_instructions(9, seed=1)
    seed_copy = "Give me a phrase that I can use to express I am very happy."        # a seed task, word for word
    step1 = [Reply(text=""),                                                          # empty_reply
             Reply(text=f" {tasks[0]}\n10. {tasks[1]}\n11. Summarize the plot of", finish_reason="length"),  # truncated
             "Draw a map of the ancient city of Rome",                               # blocked_word (both lists)
             "Describe the music video of the famous old song for a friend",         # kept: "music"/"video" Alpaca-only
             "Sing", f"{seed_copy}", "Write a program that adds two numbers",        # too_short, similar, program
             *tasks[3:9]]
    gen = {tasks[1]: "no examples here at all",                                                  # no_instances
           tasks[4]: "Example 1\nInput: same\nOutput: same\nExample 2\nInput: x\nOutput: y\n",   # input == output
           tasks[5]: "Example 1\nInput: note:\nOutput: fine\nExample 2\nInput: q\nOutput:\n",     # colon, empty output
           tasks[7]: "Example 1\nInput: k\nOutput: one\nExample 2\nInput: k\nOutput: two\n",  # one input, 2 outputs
           tasks[8]: "Example 1\nInput: d\nOutput: e\nExample 2\nInput: d\nOutput: e\nExample 3\nInput: f\nOutput: "
                     "cut", }
    instances = {k: Reply(text=v, finish_reason="length" if k == tasks[8] else "stop") for k, v in gen.items()}
    teacher = Teacher(step1, clf_answers={tasks[0]: " Maybe?", tasks[6]: "Yes."}, instances=instances)
    with OpenAIStub(default=teacher) as stub:
        summary = generate(si_config(stub, tmp_path, num_instructions=9, max_requests=40))
    discarded = summary["steps"]["instructions"]["discarded"]
    assert {k: v for k, v in discarded.items() if v} == {"empty_reply": 1, "truncated": 1, "blocked_word": 1,
                                                         "too_short": 1, "similar": 1, "write_a_program": 1}
    assert summary["discard_examples"]["truncated"] == ["Summarize the plot of"]
    kept = [r["instruction"] for r in lines(tmp_path / "machine_generated_instructions.jsonl")]
    assert kept[:3] == [tasks[0], tasks[1], "Describe the music video of the famous old song for a friend"]
    clf = summary["steps"]["classification"]
    assert clf["unclear"] == 1 and clf["done"] == 9     # "Maybe?" counts as no (upstream), "Yes." as yes
    assert clf["classification"] == 2                    # tasks[3] and [6]; tasks[0]'s answer was unclear
    assert task_of(teacher.prompts["instances"][0]) == tasks[0]
    assert teacher.prompts["instances"][0].startswith(sip.INPUT_FIRST_HEADER)
    step4 = summary["steps"]["filter"]["discarded"]
    assert {k: v for k, v in step4.items() if v} == {"no_instances": 1, "input_equals_output": 1,
                                                     "ends_with_colon": 1, "empty_output": 1,
                                                     "same_input_different_output": 2, "truncated": 1, "duplicate": 1}
    rows = lines(tmp_path / "finetuning" / "all_generated_instances.jsonl")
    assert [(r["input"], r["output"]) for r in rows if r["instruction"] == tasks[8]] == [("d", "e")]
    assert not any(r["instruction"] in (tasks[1], tasks[5], tasks[7]) for r in rows)
    assert summary["discarded"]["no_valid_instances"] == 3 and summary["kept"] == 6
    assert summary["parsed_tasks"] == summary["kept"] + sum(summary["discarded"].values()) + summary["beyond_target"]


def test_the_four_files_are_in_self_instructs_formats(tmp_path):
    tasks = made_up_instructions(4, seed=2)
    with OpenAIStub(default=Teacher(tasks)) as stub:
        generate(si_config(stub, tmp_path, num_instructions=4, request_batch_size=2, max_concurrency=2))
        assert all(len(r["body"]["prompt"]) == 2 for r in stub.requests if isinstance(r["body"]["prompt"], list))
    instructions = lines(tmp_path / "machine_generated_instructions.jsonl")
    assert [list(r) for r in instructions] == [["instruction", "most_similar", "avg_similarity_score", "metadata",
                                               "request_idx"]] * 4
    assert all(len(r["most_similar"]) == 10 and max(r["most_similar"].values()) <= 0.7 for r in instructions)
    clf = lines(tmp_path / CLF_FILE)
    assert [list(r) for r in clf] == [["instruction", "is_classification"]] * 4
    # upstream's reader: data["is_classification"].strip() in ["Yes", "yes", "YES"]
    assert {r["instruction"]: r["is_classification"].strip() in ["Yes", "yes", "YES"] for r in clf} == {
        t: t.startswith("Tell whether") for t in tasks}
    instances = lines(tmp_path / "machine_generated_instances.jsonl")
    assert [list(r) for r in instances] == [["instruction", "raw_instances", "instance_metadata",
                                             "instruction_metadata", "most_similar", "avg_similarity_score"]] * 4
    # upstream's parser reads the finish reason here and needs "Class label:" in a classification task's text
    assert all(r["instance_metadata"]["response"]["choices"][0]["finish_reason"] == "stop" for r in instances)
    assert all(r["raw_instances"].startswith("Class label: Positive") == r["instruction"].startswith("Tell whether")
               for r in instances)
    final = lines(tmp_path / "finetuning" / "all_generated_instances.jsonl")
    assert final and all(list(r) == ["instruction", "input", "output"] for r in final)
    assert {r["instruction"] for r in final} == set(tasks)
    loaded = load_outputs(tmp_path)
    assert len(loaded["instructions"]) == 4 and len(loaded["training"]) == len(final)
    assert set(loaded["classification"]) == set(loaded["instances"]) == set(tasks)


def run_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "generate", *args], cwd=REPO,
                            env=env or dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, path: Path, n: int) -> None:
    """kill -9 ``proc`` once ``path`` holds at least ``n`` lines."""
    deadline = time.monotonic() + 60
    while len(lines(path)) < n:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_between_and_within_steps_resumes_with_nothing_lost_or_repeated(tmp_path):
    out, n = tmp_path / "si", 12
    files = {step: out / name for step, name in (("instructions", "machine_generated_instructions.jsonl"),
                                                 ("classification", CLF_FILE),
                                                 ("instances", "machine_generated_instances.jsonl"))}
    script = made_up_instructions(n + 6, seed=3)  # requests lost in flight at a kill use up a few
    teacher = Teacher(script, delay=0.1)
    with OpenAIStub(default=teacher) as stub:
        args = ["--recipe", "self-instruct", "--num-instructions", str(n), "--output-dir", str(out), "--backend", "url",
                "--base-url", stub.base_url, "--model", "stub-model", "--api", "completions", "--max-concurrency", "2",
                "--request-batch-size", "1", "--no-progress"]
        seen = {}
        for step, at in (("instructions", 5), ("classification", 4), ("instances", 6)):  # killed within each step
            kill_when(run_cli(*args), files[step], at)
            seen[step] = lines(files[step])
            assert at <= len(seen[step]) < n
        with open(files["instances"], "a") as f:
            f.write('{"instruction": "torn by the ki')                 # a record cut short by kill -9 mid-write
        rerun = run_cli(*args)
        stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    for step, before in seen.items():
        after = lines(files[step])
        assert after[:len(before)] == before                                   # nothing written was lost
        assert len(after) == n and len({r["instruction"] for r in after}) == n  # nothing repeated
    assert {r["instruction"] for r in lines(files["instructions"])} <= set(script)
    asked = Counter(task_of(p) for p in teacher.prompts["instances"])
    assert sum(asked.values()) <= n + 2 * 2   # each kill loses at most the 2 requests in flight
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["kept"] == n and len(summary["sessions"]) == 4
    assert summary["steps"]["classification"]["done"] == summary["steps"]["instances"]["done"] == n
    assert json.loads(stdout)["kept"] == n and "machine_generated_instances.jsonl" in stderr
    again = run_cli(*args)                                                      # done: nothing more is sent
    assert again.wait(60) == 0 and json.loads((out / "summary.json").read_text()) == summary


def test_dry_run_estimates_each_recipe_and_sends_nothing(tmp_path, capsys):
    with OpenAIStub(default=Teacher(made_up_instructions(6, seed=4))) as stub:
        base = ["generate", "--num-instructions", "52000", "--backend", "url", "--base-url", stub.base_url, "--model",
                "gpt-4o-mini", "--output-dir", str(tmp_path / "si"), "--dry-run"]
        assert main([*base, "--recipe", "self-instruct"]) == 0
        si_line = capsys.readouterr().err
        assert main([*base[:-3], "--output-dir", str(tmp_path / "alpaca"), "--dry-run"]) == 0
        alpaca_line = capsys.readouterr().err
        assert stub.requests == []
        config = si_config(stub, tmp_path / "si", model="gpt-4o-mini", num_instructions=52_000)
        si = estimate(config)
        alpaca = estimate(GenerateConfig(num_instructions=52_000, backend="url", base_url=stub.base_url,
                                         model="gpt-4o-mini", api="completions", output_dir=str(tmp_path / "alpaca")))
        assert si_line.startswith("Self-Instruct estimate for 52,000 instructions") and "classification" in si_line
        assert alpaca_line.startswith("estimate for 52,000 instructions")
        # three prompts per instruction, and the classification prompt's examples, cost more than Alpaca's shortcut
        assert si["steps"]["classification"]["prompts"] == si["steps"]["instances"]["prompts"] == 52_000
        assert si["cost_usd"] > alpaca["cost_usd"] > 0
        assert si["prompt_tokens"] == sum(s["prompt_tokens"] for s in si["steps"].values())
        # after a run, the estimate uses the measured yield and tokens of that folder
        generate(si_config(stub, tmp_path / "si", model="gpt-4o-mini", num_instructions=3))
        measured = estimate(config)
    assert measured["basis"].startswith("measured") and measured["kept_per_prompt"] == 1.0


def test_max_requests_bounds_all_steps_and_leaves_room_for_steps_2_and_3(tmp_path):
    with OpenAIStub(default=Teacher(made_up_instructions(10, seed=5))) as stub:
        summary = generate(si_config(stub, tmp_path, num_instructions=10, max_requests=7))
    assert summary["status"] == "stopped: max_requests reached" and summary["requests"] <= 7
    assert summary["instructions"] == 2                      # 2 + 2 x 2 = 6; a third would need 9
    assert summary["steps"]["instances"]["done"] == 2 and summary["discarded"]["not_reached"] == 0


def test_alpaca_summary_names_its_recipe_and_the_recipes_keep_to_their_folders(tmp_path):
    with OpenAIStub(default=Teacher(made_up_instructions(2, seed=6))) as stub:
        summary = generate(si_config(stub, tmp_path, num_instructions=2))
        with pytest.raises(AlpacaNbError, match="written by --recipe self-instruct, not alpaca"):
            generate(si_config(stub, tmp_path, recipe="alpaca"))
    assert summary["recipe"] == "self-instruct"


BAD = {  # name: (CLI args or a file to damage, what the one error line says)
    "unknown recipe": (["--recipe", "evol-instruct"], "invalid choice: 'evol-instruct'"),
    "zero instructions": (["--num-instructions", "0"], "--num-instructions 0"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_settings_give_one_line_and_exit_2(tmp_path, capsys, name):
    extra, says = BAD[name]
    with OpenAIStub(default=Teacher([])) as stub:
        args = ["generate", "--recipe", "self-instruct", "--output-dir", str(tmp_path), "--backend", "url",
                "--base-url", stub.base_url, "--model", "stub-model", *extra]
        if name == "unknown recipe":  # argparse refuses it: usage, then one error line, exit 2
            with pytest.raises(SystemExit) as exit_info:
                main(args)
            code = exit_info.value.code
        else:
            code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and says in err
    assert [line for line in err.splitlines() if "error:" in line] == [err.strip().splitlines()[-1]]
    assert stub.requests == [] and not (tmp_path / "summary.json").exists()


def test_unknown_recipe_in_the_config_and_a_damaged_step_file_are_refused_before_sending(tmp_path):
    with OpenAIStub(default=Teacher(made_up_instructions(2, seed=7))) as stub:
        with pytest.raises(AlpacaNbError, match="--recipe 'evol'"):
            generate(si_config(stub, tmp_path / "a", recipe="evol"))
        generate(si_config(stub, tmp_path / "b", num_instructions=2))
        sent = len(stub.requests)
        path = tmp_path / "b" / CLF_FILE
        path.write_text(path.read_text().replace('"is_classification"', '"label"', 1))
        with pytest.raises(AlpacaNbError, match=f"{path.name}: line 1: expected an object with instruction, "
                                                "is_classification"):
            generate(si_config(stub, tmp_path / "b", num_instructions=3))
    assert len(stub.requests) == sent
    assert read_step_file(tmp_path / "b" / "machine_generated_instructions.jsonl", ("instruction",))


def test_lesson_03_sets_both_recipes_side_by_side(tmp_path):
    from alpaca_nb import diversity
    from alpaca_nb.paths import outputs_dir

    regen = outputs_dir("02_generate_instructions") / "regen.json"
    regen.write_text(json.dumps([{"instruction": "Write a haiku about rain.", "input": "", "output": "..."}]))
    assert diversity.lesson_datasets(compare="seed_tasks") == [str(regen), "seed_tasks"]  # no Self-Instruct run yet
    with OpenAIStub(default=Teacher(made_up_instructions(2, seed=8))) as stub:
        summary = generate(si_config(stub, tmp_path, num_instructions=2, output_dir=None))  # the lesson's folder
    final = outputs_dir("02_generate_instructions") / "self_instruct" / "finetuning" / "all_generated_instances.jsonl"
    specs = diversity.lesson_datasets(compare="seed_tasks")
    assert specs == [str(regen), str(final), "seed_tasks"]
    name, examples = diversity.load_dataset(specs[1])
    assert name == "all_generated_instances" and len(examples) == summary["instances"] == 4


def test_a_run_killed_after_its_last_request_finishes_step_4_without_sending(tmp_path):
    with OpenAIStub(default=Teacher(made_up_instructions(2, seed=9))) as stub:
        done = generate(si_config(stub, tmp_path, num_instructions=2))
        sent = len(stub.requests)
        final = tmp_path / "finetuning" / "all_generated_instances.jsonl"
        rows = final.read_text()
        final.write_text(rows.splitlines(keepends=True)[0])  # killed before step 4 rewrote its file
        summary = json.loads((tmp_path / "summary.json").read_text())
        (tmp_path / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
        again = generate(si_config(stub, tmp_path, num_instructions=2))
    assert len(stub.requests) == sent and final.read_text() == rows
    assert again["status"] == "complete" and again["kept"] == done["kept"] and len(again["sessions"]) == 1


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_step_1_keeps_an_instruction_that_begins_with_a_number_and_strips_only_a_restated_9(tmp_path, api):
    numbered = "2001. A Space Odyssey is a film: tell its story in three sentences for a child"
    # a completion continues after the prompt's "9."; a chat model says "9." again first (upstream never sees that)
    first = f"9. {numbered}" if api == "chat" else numbered
    teacher = Teacher([first, "Name three rivers that flow through more than one country in Europe"])
    with OpenAIStub(default=teacher) as stub:
        generate(si_config(stub, tmp_path, api=api, num_instructions=2, max_requests=12))
    kept = [r["instruction"] for r in lines(tmp_path / "machine_generated_instructions.jsonl")]
    assert kept[0] == numbered


@pytest.mark.parametrize("recipe", ["alpaca", "self-instruct"])
def test_a_run_whose_every_reply_was_discarded_says_so_and_names_only_files_it_wrote(tmp_path, recipe):
    out = tmp_path / recipe
    with OpenAIStub(default=lambda body: Reply(text=" Sing")) as stub:  # too short for both recipes' filters
        done = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "generate", "--recipe", recipe, "--output-dir",
                               str(out), "--backend", "url", "--base-url", stub.base_url, "--model", "stub", "--api",
                               "completions", "--num-instructions", "2", "--max-requests", "3", "--no-progress"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.search(r"nothing kept: every reply of \d+ request\(s\) was discarded \((malformed|too_short) \d+",
                     lines[-1]), lines[-1]
    wrote = next(line for line in lines if line.startswith("wrote "))
    for name in wrote.removeprefix("wrote ").split(", "):
        assert Path(name).exists(), name

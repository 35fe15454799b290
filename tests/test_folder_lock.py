"""A second run into a folder that a first run is writing stops at once, naming the folder and the holder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alpaca_nb.cli import main
from alpaca_nb.fileio import atomic_write_json
from alpaca_nb.folder_lock import HOLDER_FILE, FolderBusyError, output_folder_lock
from alpaca_nb.generate_config import load_regen
from tests.openai_stub import OpenAIStub, Reply
from tests.test_generate import UniqueTasks

REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys; from alpaca_nb.folder_lock import output_folder_lock\n" \
       "with output_folder_lock(sys.argv[1], 'the holder'):\n    print('held', flush=True); sys.stdin.read()"


def _generate(out: Path, base_url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "generate", "--output-dir", str(out), "--backend",
                             "url", "--base-url", base_url, "--model", "stub", "--no-progress", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_two_alpaca_runs_into_one_folder_the_second_is_refused_and_nothing_is_lost(tmp_path):
    out = tmp_path / "gen"
    # The first run's replies wait until the second run has been answered: on a loaded machine the first run
    # could otherwise finish before the second one starts (it then finds the work done and exits 0).
    gate, tasks = threading.Event(), UniqueTasks(per_reply=2, delay=0.2)
    with OpenAIStub(default=lambda body: (gate.wait(120), tasks(body))[1]) as stub:
        first = _generate(out, stub.base_url, "--num-instructions", "12", "--max-concurrency", "1")
        try:
            _wait_for(out / HOLDER_FILE, first)  # the lock is held (regen.json waits on the first reply)
            start = time.monotonic()
            second = _generate(out, stub.base_url, "--num-instructions", "12")
            _, err = second.communicate(timeout=60)
        finally:
            gate.set()
        assert second.returncode == 2 and time.monotonic() - start < 30
        assert str(out.resolve()) in err and f"pid {first.pid}" in err and "alpaca-nb generate" in err
        assert "Traceback" not in err
        assert first.wait(120) == 0, first.stderr.read()
    assert len(load_regen(out)) == 12
    assert json.loads((out / "summary.json").read_text())["kept"] == 12
    assert not (out / HOLDER_FILE).exists()  # released, and a third run may start
    with output_folder_lock(out, "test"):
        pass


def test_a_self_instruct_run_is_refused_while_another_holds_the_folder(tmp_path):
    out = tmp_path / "si"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with OpenAIStub(default=lambda body: Reply(text="1. Write a poem.")) as stub:
            second = _generate(out, stub.base_url, "--recipe", "self-instruct", "--num-instructions", "2")
            _, err = second.communicate(timeout=60)
            assert second.returncode == 2 and f"pid {holder.pid}" in err and "the holder" in err
            assert stub.requests == []  # refused before anything is sent
        assert sorted(p.name for p in out.iterdir()) == [".alpaca-nb.lock", HOLDER_FILE]  # the holder's only
    finally:
        holder.communicate("", timeout=30)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusyError, match="the holder"):
        with output_folder_lock(tmp_path, "second"):
            pass
    holder.kill()
    holder.wait()
    with output_folder_lock(tmp_path, "after kill -9"):
        with output_folder_lock(tmp_path, "re-entered"):  # re-entrant within one process
            assert json.loads((tmp_path / HOLDER_FILE).read_text())["command"] == "after kill -9"


@pytest.fixture
def held(tmp_path):
    """A process holding ``tmp_path/held``'s lock for the test."""
    folder = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc.pid
    proc.communicate("", timeout=30)


def _outputs(generator: str) -> list[dict]:
    return [{"instruction": "Say hi", "output": f"hi from {generator}", "generator": generator,
             "dataset": "selfinstruct"}]


def test_answer_judge_mt_bench_and_train_refuse_a_held_folder(held, tmp_path, capsys):
    folder, pid = held
    model = atomic_write_json(tmp_path / "model.json", _outputs("m"))
    reference = atomic_write_json(tmp_path / "ref.json", _outputs("r"))
    mt_answers = tmp_path / "mt" / "model_answer" / "m.jsonl"
    mt_answers.parent.mkdir(parents=True)
    mt_answers.write_text(json.dumps({"question_id": 81, "model_id": "m", "choices": [{"turns": ["a", "b"]}]}) + "\n")
    train_data = atomic_write_json(tmp_path / "train.json", [{"instruction": "Say hi", "input": "", "output": "hi"}])
    with OpenAIStub(default=lambda body: Reply(text="Output (a)")) as stub:
        url = ["--backend", "url", "--base-url", stub.base_url, "--model", "stub"]
        commands = {
            "answer": ["answer", *url, "--eval-set", "alpaca_eval", "-n", "1", "--out", str(folder / "o.json")],
            "judge": ["judge", "--model-outputs", str(model), "--reference", str(reference), "--backend", "url",
                      "--base-url", stub.base_url, "--judge-model", "stub", "--out", str(folder / "a.json")],
            "mt-bench answer": ["mt-bench", "answer", *url, "--out", str(folder.parent), "--model-id", "held",
                                "--category", "writing", "--per-category", "1"],
            "mt-bench judge": ["mt-bench", "judge", "--answers", str(mt_answers), "--backend", "url", "--base-url",
                               stub.base_url, "--judge-model", "stub", "--category", "writing", "--per-category", "1",
                               "--out", str(folder / "j.jsonl")],
            "train": ["train", "--data", str(train_data), "--output-dir", str(folder), "--max-steps", "1"],
        }
        for name, argv in commands.items():
            if name == "mt-bench answer":
                os.rename(folder, folder.parent / "model_answer")  # the answers' folder is OUT/model_answer
                folder = folder.parent / "model_answer"
            assert main(argv) == 2, name
            err = capsys.readouterr().err
            assert str(folder.resolve()) in err and f"pid {pid}" in err, (name, err)
            if name == "mt-bench answer":
                os.rename(folder, tmp_path / "held")
                folder = tmp_path / "held"
        assert stub.requests == []  # every refusal came before any request

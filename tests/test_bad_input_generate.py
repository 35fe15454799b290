"""`alpaca-nb generate` on bad input and bad servers, through the real CLI (a subprocess) and the real stub
server: exit status 2, one line naming the input, no traceback, no API key anywhere, and every file
already in the output folder byte-identical afterwards. Also: bounded requests and concurrency."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_nb.errors import REDACTED, scrub_secrets
from alpaca_nb.generate import generate
from alpaca_nb.generate_config import GenerateConfig
from openai_stub import OpenAIStub, Reply, UniqueTasks

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"
SECRET = "sk-test-ECHOED-KEY-0123456789abcdef"
HTML = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>\n"


def run_cli(*args: str, key: str = SECRET, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real `alpaca-nb` in a fresh process (the test's isolated outputs and mirror in its environment)."""
    return subprocess.run([sys.executable, "-m", "alpaca_nb.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"OPENAI_API_KEY": key}, timeout=timeout)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (or the file itself) with its bytes."""
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one error line that names the input; returns that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if f"alpaca-nb {command}: error:" in line]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def earlier_run_template(tmp_path_factory) -> Path:
    """A real earlier run (1 record, its summary) and a note of the user's, made once per module."""
    out = tmp_path_factory.mktemp("earlier") / "gen"
    with pytest.MonkeyPatch.context() as env, OpenAIStub(default=UniqueTasks(per_reply=1)) as stub:
        if MIRROR.is_dir():
            env.setenv("ALPACA_NB_MIRROR", str(MIRROR))
        generate(GenerateConfig(num_instructions=1, output_dir=str(out), backend="url", base_url=stub.base_url,
                                model="stub-model", api="completions", request_batch_size=1, progress=False))
    (out / "notes.txt").write_text("my notes\n")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "regen.json", "summary.json"]
    return out


@pytest.fixture
def earlier_run(earlier_run_template, tmp_path) -> Path:
    """This test's copy of the earlier run's output folder."""
    return Path(shutil.copytree(earlier_run_template, tmp_path / "gen"))


def stub_args(stub: OpenAIStub, out: Path, *extra: str) -> list[str]:
    return ["generate", "--num-instructions", "3", "--output-dir", str(out), "--backend", "url", "--base-url",
            stub.base_url, "--model", "stub-model", "--api", "completions", "--request-batch-size", "1",
            "--max-retries", "1", "--no-progress",
            *extra]


# --- a server that answers, but not with a usable completion -----------------------------------------------

BAD_SERVERS = {  # name: (reply, extra CLI args, what the message must say)
    "choices empty": (Reply(fields={"choices": []}), (), "'choices' is []"),
    "choices null": (Reply(fields={"choices": None}), (), "'choices' is null"),
    "choices null, chat": (Reply(fields={"choices": None}), ("--api", "chat"), "'choices' is null"),
    "choice without text": (Reply(fields={"choices": [{"index": 0, "finish_reason": "stop"}]}), (), "without text"),
    "malformed JSON": (Reply(raw='{"id": "x", "choices": ['), (), "bad_reply"),
    "HTML page": (Reply(raw=HTML, content_type="text/html"), (), "not a completion"),
}


@pytest.mark.parametrize("name", list(BAD_SERVERS))
def test_unusable_replies_stop_the_run_with_one_line_and_touch_nothing(earlier_run, name):
    reply, extra, says = BAD_SERVERS[name]
    before = snapshot(earlier_run)
    with OpenAIStub(default=lambda body: reply) as stub:
        result = run_cli(*stub_args(stub, earlier_run, *extra))
    assert_one_line_error(result, "generate", "no usable reply after 1 retries", says, stub.base_url)
    # 2 instructions missing -> at most 2 requests at once, each tried twice, then the run stops
    assert 2 <= len(stub.requests) <= 4
    assert snapshot(earlier_run) == before


# --- settings and files that cannot work: refused before anything is sent or written ----------------------

BAD_SETTINGS = {  # name: (extra CLI args, what the message must say)
    "max-concurrency 0": (("--max-concurrency", "0"), "--max-concurrency 0"),
    "max-concurrency negative": (("--max-concurrency", "-3"), "--max-concurrency -3"),
    "num-instructions 0": (("--num-instructions", "0"), "--num-instructions 0"),
    "num-instructions negative": (("--num-instructions", "-5"), "--num-instructions -5"),
    "max-retries negative": (("--max-retries", "-1"), "--max-retries -1"),
    "more prompt instructions than seeds": (("--num-prompt-instructions", "176"), "--num-prompt-instructions 176"),
    "max-requests 0": (("--max-requests", "0"), "--max-requests 0"),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_settings_are_refused_before_any_request(earlier_run, name):
    extra, says = BAD_SETTINGS[name]
    before = snapshot(earlier_run)
    with OpenAIStub(default=UniqueTasks()) as stub:
        result = run_cli(*stub_args(stub, earlier_run), *extra)
    assert_one_line_error(result, "generate", says)
    assert stub.requests == [] and snapshot(earlier_run) == before


@pytest.mark.parametrize("where", ["notes.txt", "notes.txt/more"])
def test_output_dir_that_is_a_file(earlier_run, where):
    before = snapshot(earlier_run)
    with OpenAIStub(default=UniqueTasks()) as stub:
        result = run_cli(*stub_args(stub, earlier_run / where))
    assert_one_line_error(result, "generate", "--output-dir", "notes.txt", "not a folder")
    assert stub.requests == [] and snapshot(earlier_run) == before


@pytest.mark.parametrize("summary, field", [([1, 2], "JSON object"), ({"requests": "many"}, "'requests'"),
                                            ({"discarded": {"similar": -1}}, "'discarded'"),
                                            ({"sessions": "yesterday"}, "'sessions'")])
def test_summary_json_of_another_shape(earlier_run, summary, field):
    (earlier_run / "summary.json").write_text(json.dumps(summary))
    before = snapshot(earlier_run)
    with OpenAIStub(default=UniqueTasks()) as stub:
        result = run_cli(*stub_args(stub, earlier_run))
    assert_one_line_error(result, "generate", str(earlier_run / "summary.json"), field, "move the file away")
    assert stub.requests == [] and snapshot(earlier_run) == before


def test_local_backend_with_a_missing_model_folder(tmp_path):
    missing, out = tmp_path / "no-such-model", tmp_path / "gen"
    result = run_cli("generate", "--backend", "local", "--model", str(missing), "--num-instructions", "1",
                     "--output-dir", str(out), "--no-progress")
    assert_one_line_error(result, "generate", f"model folder {missing} does not exist")
    assert not missing.exists() and not list(tmp_path.rglob("server.log"))  # no server was started: no log
    assert not out.exists() or not any(out.iterdir())                    # and nothing written


def test_fetch_dest_that_is_a_file(tmp_path, mirror):
    dest = tmp_path / "seeds.txt"
    dest.write_text("not a folder\n")
    result = run_cli("fetch", "seed_tasks", "--mirror", str(mirror), "--dest", str(dest))
    assert_one_line_error(result, "fetch", "--dest", str(dest), "not a folder")
    assert dest.read_text() == "not a folder\n" and sorted(p.name for p in tmp_path.iterdir()) == ["seeds.txt"]


# --- secrets a server echoes back ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", [SECRET, "custom-proxy-token-42"])
def test_an_echoed_key_never_reaches_messages_or_files(tmp_path, key):
    out = tmp_path / "fresh"
    with OpenAIStub(default=lambda body: Reply(status=400, echo_auth=True)) as stub:
        result = run_cli(*stub_args(stub, out), key=key)
    line = assert_one_line_error(result, "generate", "refused the request (400", f"Authorization: Bearer {REDACTED}")
    assert stub.requests[0]["authorization"] == f"Bearer {key}"            # the server did get (and echo) it
    status = json.loads((out / "summary.json").read_text())["status"]      # a fresh folder records the failure
    assert status.startswith("error:") and REDACTED in status
    written = "".join(p.read_text() for p in out.iterdir()) + result.stdout + result.stderr + line
    assert key not in written


def test_scrub_secrets_removes_configured_keys_and_key_shaped_tokens(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "env-key-1234567")
    text = "env-key-1234567 / sk-proj-abcdefghijklmnop_QRS / Bearer xyz / my-proxy-key-99 / none / sk-learn"
    clean = scrub_secrets(text, ["my-proxy-key-99", "none", None])
    assert clean == f"{REDACTED} / {REDACTED} / Bearer {REDACTED} / {REDACTED} / none / sk-learn"
    assert scrub_secrets(clean) == clean


# --- a server whose replies never yield a task: bounded, in number and in concurrency ------------------------

def test_default_max_requests_is_printed_and_bounds_a_run_that_keeps_nothing(tmp_path):
    out = tmp_path / "gen"
    with OpenAIStub(default=lambda body: Reply(text="no tasks here")) as stub:
        args = ["generate", "--output-dir", str(out), "--backend", "url", "--base-url", stub.base_url, "--model",
                "stub-model", "--api", "completions", "--request-batch-size", "1", "--no-progress"]
        dry = run_cli(*args, "--num-instructions", "100", "--dry-run")
        assert dry.returncode == 0 and "(10 requests; at most 30: default 3x the estimate" in dry.stderr
        result = run_cli(*args, "--num-instructions", "2")
    assert result.returncode == 1, result.stderr                      # a run that kept nothing is a failure
    assert "nothing kept: every reply of 10 request(s) was discarded" in result.stderr
    assert "at most 10: default" in result.stderr                     # 1 request expected; at least 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped: max_requests reached" and summary["requests"] == 10 == len(stub.requests)
    assert summary["sessions"][-1]["max_requests"] == 10


def test_default_concurrency_never_exceeds_what_the_target_can_use(tmp_path):
    # Each reply carries 5 new tasks: 2 instructions need one request. Before the fix all 8 went out at once.
    with OpenAIStub(default=UniqueTasks(per_reply=5, delay=0.3)) as stub:
        result = run_cli("generate", "--num-instructions", "2", "--output-dir", str(tmp_path / "gen"), "--backend",
                         "url", "--base-url", stub.base_url, "--model", "stub-model", "--api", "completions",
                         "--request-batch-size", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert len(stub.requests) == 2                                    # at most one per missing instruction
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["kept"] == 2 and summary["requests"] == 2 and summary["beyond_target"] == 8

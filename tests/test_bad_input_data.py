"""Bad input data through the real CLI: exit status 2, one error line naming the input, no traceback, and
every file already on disk byte-identical afterwards. One row per case; add a row for a new case."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SEEDS = "self-instruct/seed_tasks.jsonl"
RECORD = {"instruction": "Name a colour.", "input": "", "output": "Blue"}


class Case(NamedTuple):
    """``setup(tmp, mirror)`` writes the inputs and returns the CLI arguments; ``error`` is a regex the error
    line must match after ``alpaca-nb CMD: error: `` ({tmp} is the case's folder); ``env`` values may use {tmp}
    and {mirror}, and ``None`` unsets a variable."""

    setup: Callable[[Path, Path], list[str]]
    error: str
    env: dict[str, str | None] = {}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _not_utf8_json(tmp: Path, mirror: Path) -> list[str]:
    _write(tmp / "data.json", b'[{"instruction": "Caf\xe9 or tea?", "input": "", "output": "Tea"}]')
    return ["diversity", str(tmp / "data.json"), "--out", str(tmp / "out")]


def _not_utf8_jsonl(tmp: Path, mirror: Path) -> list[str]:
    first = json.dumps(RECORD).encode() + b"\n"
    _write(tmp / "data.jsonl", first + b'{"instruction": "Na\xefve?", "input": "", "output": "Yes"}\n')
    return ["diversity", str(tmp / "data.jsonl"), "--out", str(tmp / "out")]


def _train(tmp: Path, data: bytes, *options: str) -> list[str]:
    """Train arguments on ``data``, into an output folder that already holds an earlier run's summary."""
    _write(tmp / "run" / "train_summary.json", b'{"steps": 42}\n')
    return ["train", "--data", str(_write(tmp / "train.json", data)), "--output-dir", str(tmp / "run"), *options]


def _not_utf8_train(tmp: Path, mirror: Path) -> list[str]:
    return _train(tmp, b'[{"instruction": "Say \xff", "input": "", "output": "ok"}]')


def _nproc(n: int) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, mirror: _train(tmp, json.dumps([RECORD] * 4).encode(), "--mode", "fsdp", "--nproc", str(n))


def _cut_seeds(tmp: Path, mirror: Path) -> list[str]:
    """The local seed file cut at a line boundary (it still parses: 100 tasks)."""
    lines = (mirror / SEEDS).read_bytes().splitlines(keepends=True)
    _write(tmp / "seeds" / SEEDS, b"".join(lines[:100]))
    return ["seed-stats", "--out", str(tmp / "out")]


def _cut_seeds_bad_mirror(tmp: Path, mirror: Path) -> list[str]:
    _write(tmp / "mirror" / SEEDS, (mirror / SEEDS).read_bytes().replace(b"breakfast", b"dinner"))
    return _cut_seeds(tmp, mirror)


def _fetch_cut_seeds_bad_mirror(tmp: Path, mirror: Path) -> list[str]:
    _cut_seeds_bad_mirror(tmp, mirror)
    return ["fetch", "--mirror", str(tmp / "mirror"), "--dest", str(tmp / "seeds"), "seed_tasks"]


SEEDS_ENV = {"ALPACA_NB_SEEDS": "{tmp}/seeds"}
CASES = {
    "diversity-json-not-utf8": Case(_not_utf8_json, r"{tmp}/data.json: byte 21 \(line 1\): not UTF-8 text"),
    "diversity-jsonl-not-utf8": Case(_not_utf8_jsonl, r"{tmp}/data.jsonl: byte 84 \(line 2\): not UTF-8 text"),
    "train-not-utf8": Case(_not_utf8_train, r"{tmp}/train.json: byte 22 \(line 1\): not UTF-8 text"),
    "train-nproc-0": Case(_nproc(0), r"--nproc 0: the number of processes must be 1 or more"),
    "train-nproc-negative": Case(_nproc(-1), r"--nproc -1: the number of processes must be 1 or more"),
    "seeds-cut-no-mirror": Case(_cut_seeds, r"{tmp}/seeds/self-instruct/seed_tasks.jsonl: sha256 differs from "
                                r"seeds/manifest.json \(seed_tasks\).* run `alpaca-nb fetch seed_tasks`",
                                SEEDS_ENV | {"ALPACA_NB_MIRROR": None}),
    "seeds-cut-bad-mirror": Case(_cut_seeds_bad_mirror, r"seed_tasks: sha256 of {tmp}/mirror/self-instruct/"
                                 r"seed_tasks.jsonl is .*; the local copy .* both copies are bad",
                                 SEEDS_ENV | {"ALPACA_NB_MIRROR": "{tmp}/mirror"}),
    "fetch-cut-seeds-bad-mirror": Case(_fetch_cut_seeds_bad_mirror, r"seed_tasks: sha256 of {tmp}/mirror/.* "
                                       r"both copies are bad; replace {tmp}/mirror/self-instruct/seed_tasks.jsonl"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_with_one_line_and_keeps_files(name, mirror, tmp_path):
    case = CASES[name]
    tmp = tmp_path / "case"
    tmp.mkdir()
    argv = case.setup(tmp, mirror)
    before = _snapshot(tmp)
    env = os.environ | {"ALPACA_NB_CACHE": str(tmp_path / "cache")}
    for key, value in case.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.format(tmp=tmp, mirror=mirror)
    proc = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    prefix = f"alpaca-nb {argv[0]}: error: "
    errors = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1 and proc.stderr.rstrip("\n").endswith(errors[0]), proc.stderr
    assert re.match(case.error.format(tmp=re.escape(str(tmp))), errors[0][len(prefix):]), errors[0]
    after = _snapshot(tmp)
    assert {k: after.get(k) for k in before} == before  # nothing already there was changed or removed

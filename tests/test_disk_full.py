"""A full disk ends a run with one line naming the file and the space it needed; files written before stay whole.

Real "no space left on device" errors: writes to Linux's ``/dev/full``, and runs on a tiny tmpfs (mounted for the
test where the machine allows it, as CI's root does).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from alpaca_nb.fileio import DiskFullError, disk_full_is_one_line
from alpaca_nb.self_instruct_files import append_jsonl
from tests.openai_stub import OpenAIStub
from tests.test_generate import UniqueTasks

REPO = Path(__file__).resolve().parents[1]


def test_a_real_enospc_becomes_one_line_naming_the_file():
    with pytest.raises(DiskFullError) as caught:
        with disk_full_is_one_line("/dev/full", 3 * 2**20), open("/dev/full", "wb", buffering=0) as f:
            f.write(b"x")
    assert str(caught.value).startswith("/dev/full: disk full: the file needs about 3.0 MiB")
    with pytest.raises(FileNotFoundError):  # other errors pass unchanged
        with disk_full_is_one_line("/nowhere/x"):
            open("/nowhere/x", "rb")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, unmounted afterwards."""
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); /dev/full covers the error path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s disk until ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "ballast").write_bytes(b"\0" * max(0, free - leave))


def test_a_generate_run_on_a_full_disk_stops_with_one_line_and_keeps_its_records(tiny_disk):
    out = tiny_disk / "gen"
    with OpenAIStub(default=UniqueTasks(per_reply=20)) as stub:
        args = [sys.executable, "-m", "alpaca_nb.cli", "generate", "--output-dir", str(out), "--backend", "url",
                "--base-url", stub.base_url, "--model", "stub", "--no-progress", "--max-concurrency", "1"]
        first = subprocess.run([*args, "--num-instructions", "20"], cwd=REPO, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        kept = json.loads((out / "regen.json").read_text())
        _fill(tiny_disk, 8 * 1024)
        full = subprocess.run([*args, "--num-instructions", "400"], cwd=REPO, capture_output=True, text=True)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert "Traceback" not in full.stderr and lines[-1].startswith("alpaca-nb generate: error: ")
    assert "disk full" in lines[-1] and str(out) in lines[-1] and "needs about" in lines[-1]
    after = json.loads((out / "regen.json").read_text())  # still whole JSON, with every earlier record
    assert after[:len(kept)] == kept
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_append_on_a_full_disk_cuts_back_to_whole_lines(tiny_disk):
    path = tiny_disk / "step.jsonl"
    append_jsonl(path, [{"instruction": "kept"}], [])
    _fill(tiny_disk, 0)
    with pytest.raises(DiskFullError, match="step.jsonl: disk full"):
        append_jsonl(path, [{"instruction": "x" * 300_000}], [])
    assert path.read_text() == '{"instruction": "kept"}\n'


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_disk, model_dir, capsys):
    from alpaca_nb.cli import main

    out = tiny_disk / "m.gguf"
    assert main(["export", "--model", str(model_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full" in err[0] and str(out) in err[0] and "MiB" in err[0]
    assert sorted(p.name for p in tiny_disk.iterdir()) == []

"""Self-Instruct's file layout in an output folder: names, reading (resumable) and appending, loading for the lesson.

yizhongw/self-instruct's scripts write, in one folder: ``machine_generated_instructions.jsonl`` (step 1),
``is_clf_or_not_<engine>_template_1.jsonl`` (step 2), ``machine_generated_instances.jsonl`` (step 3) and, from
``prepare_for_finetuning.py``, ``finetuning/all_generated_instances.jsonl`` (step 4). The records keep
upstream's keys (see :mod:`alpaca_nb.self_instruct`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import scrub_secrets
from .fileio import DataFileError, disk_full_is_one_line, read_jsonl, read_text
from .generate_config import GenerateConfig, read_summary
from .model import resolve_model

INSTRUCTIONS_FILE = "machine_generated_instructions.jsonl"
CLF_FILE = "is_clf_or_not_{engine}_template_1.jsonl"
INSTANCES_FILE = "machine_generated_instances.jsonl"
FINETUNING_FILE = "finetuning/all_generated_instances.jsonl"


def engine_name(config: GenerateConfig) -> str:
    """The model's name as it appears in step 2's file name (upstream: ``--engine``, e.g. ``davinci``)."""
    name = Path(resolve_model(config.model)).name if config.backend == "local" else (config.model or "model")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def read_step_file(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records of one step's JSONL file (``[]`` if none); each must hold the string fields ``keys``.

    A last line torn by ``kill -9`` (no final newline) is cut off the file; any other bad line raises
    :class:`AlpacaNbError` naming the file and line."""
    if not path.exists():
        return []
    text = read_text(path)
    lines = text.split("\n")
    if lines[-1]:  # torn by kill -9 in the middle of an append: cut it off; its request is sent again
        with open(path, "r+b") as f:
            f.truncate(len(text.encode("utf-8")) - len(lines[-1].encode("utf-8")))
        lines = lines[:-1]
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}: line {lineno}: malformed JSON ({e.msg}); move the file away to redo "
                                "this step") from e
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in keys):
            raise DataFileError(f"{path}: line {lineno}: expected an object with {', '.join(keys)} (Self-Instruct's "
                                "format); move the file away to redo this step")
        rows.append(row)
    return rows


def append_jsonl(path: Path, rows: list[dict], secrets: list[str]) -> None:
    """Append ``rows`` to ``path`` in one write, then fsync (secrets scrubbed). On a full disk the file is cut
    back to its earlier length (no half line) and :class:`~alpaca_nb.fileio.DiskFullError` names it."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = scrub_secrets("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), secrets).encode("utf-8")
    with disk_full_is_one_line(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)


def finish_reason(record: dict[str, Any]) -> str | None:
    """The finish reason stored with a step-3 record, where upstream's parser reads it."""
    with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
        return record["instance_metadata"]["response"]["choices"][0]["finish_reason"]
    return None


def load_outputs(out_dir: str | Path) -> dict[str, Any]:
    """Everything a Self-Instruct run wrote in ``out_dir``, for reading in the lesson: ``summary``,
    ``instructions``, ``classification`` (instruction -> record), ``instances`` (instruction -> record) and
    ``training`` (step 4's rows); missing files give empty values. The step-2 file is the one the summary names."""
    out_dir = Path(out_dir)
    summary = read_summary(out_dir, recipe="self-instruct")
    clf_name = summary.get("files", {}).get("classification")
    clf_path = out_dir / clf_name if clf_name else next(iter(sorted(out_dir.glob(CLF_FILE.format(engine="*")))), None)
    training = out_dir / FINETUNING_FILE
    return {"summary": summary,
            "instructions": read_step_file(out_dir / INSTRUCTIONS_FILE, ("instruction",)),
            "classification": {r["instruction"]: r for r in (read_step_file(clf_path, ("instruction",
                                                              "is_classification")) if clf_path else [])},
            "instances": {r["instruction"]: r for r in read_step_file(out_dir / INSTANCES_FILE,
                                                                      ("instruction", "raw_instances"))},
            "training": read_jsonl(training) if training.exists() else []}

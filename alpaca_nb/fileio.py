"""Small, safe file primitives: atomic writes and JSON/JSONL reading with precise errors."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import AlpacaNbError


class DataFileError(AlpacaNbError, ValueError):
    """A data file is missing or malformed; the message names the file (and line) and the fix."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, non-ASCII kept readable)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`DataFileError` naming it."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: line {e.lineno}, column {e.colno}: malformed JSON ({e.msg})") from e


def read_jsonl(path: str | Path) -> list[Any]:
    """Read a JSON-lines file, skipping blank lines; a bad line raises :class:`DataFileError` with its number."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataFileError(f"{path}: line {lineno}: malformed JSON ({e.msg})") from e
    return rows


def read_json_or_jsonl(path: str | Path) -> list[Any]:
    """Read a list of records from a ``.json`` array or a ``.jsonl`` file (chosen by content)."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    head = path.read_text(encoding="utf-8").lstrip()[:1]
    if head == "[":
        data = read_json(path)
        if not isinstance(data, list):
            raise DataFileError(f"{path}: expected a JSON list of records")
        return data
    return read_jsonl(path)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Atomically write ``rows`` as JSON lines."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

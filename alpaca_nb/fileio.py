"""Small, safe file primitives: atomic writes and JSON/JSONL reading with precise errors."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import AlpacaNbError, scrub_secrets


class DataFileError(AlpacaNbError, ValueError):
    """A data file is missing or malformed; the message names the file (and line) and the fix."""


class DiskFullError(AlpacaNbError, OSError):
    """A file could not be written for lack of space; the message names it and the space it needed."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


@contextlib.contextmanager
def disk_full_is_one_line(path: str | Path, needed_bytes: int | None = None):
    """Turn "no space left on device" (``ENOSPC``, ``EDQUOT``) inside the block into :class:`DiskFullError`, one
    line naming ``path``, the space it needed (``needed_bytes``, when known) and the space free. Other errors pass."""
    try:
        yield
    except OSError as e:
        if isinstance(e, DiskFullError) or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path = Path(path)
        try:
            free = f", {_mib(shutil.disk_usage(path.parent).free)} free"
        except OSError:
            free = ""
        need = f" needs about {_mib(needed_bytes)}{free}" if needed_bytes else f" could not be written{free}"
        raise DiskFullError(f"{path}: disk full: the file{need}; files written before are as they were: free some "
                            "space (or write elsewhere) and run again") from None


def ensure_dir(path: str | Path, option: str = "folder") -> Path:
    """Create the folder ``path`` (with parents) if missing and return it.

    A file where the folder (or one of its parents) should be raises :class:`DataFileError` naming
    ``option`` (e.g. ``--output-dir``) and the path, instead of an ``OSError`` traceback.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise DataFileError(f"{option} {path}: is a file (or lies under one), not a folder; pass a folder "
                            "(it is created if missing)") from e
    except OSError as e:
        raise DataFileError(f"{option} {path}: cannot create the folder ({e.strerror}); pass a writable folder") from e
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it. A full disk is
    a one-line :class:`DiskFullError` (the old file kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_full_is_one_line(path, len(data)):
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


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, secrets: Iterable[str] | None = None) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, non-ASCII kept readable).

    With ``secrets`` (may be empty), the text is first passed through :func:`alpaca_nb.errors.scrub_secrets`,
    for files that may quote a server's words (which may echo the API key)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text if secrets is None else scrub_secrets(text, secrets))


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file raises :class:`DataFileError`.

    A decoding error names the byte offset and line of the first bad byte.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read the file ({e.strerror or e})") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFileError(f"{path}: byte {e.start} (line {line}): not UTF-8 text (byte 0x{raw[e.start]:02x}, "
                            f"{e.reason}); save the file as UTF-8") from e


def text_lines(text: str) -> list[str]:
    """``text`` split into lines as a text file reads them (``\\n``, ``\\r\\n`` or ``\\r``; not ``str.splitlines``'s
    other separators, which may appear inside JSON strings)."""
    return list(io.StringIO(text, newline=None))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing, non-UTF-8 or malformed file raises :class:`DataFileError` naming it."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: line {e.lineno}, column {e.colno}: malformed JSON ({e.msg})") from e


def read_jsonl(path: str | Path) -> list[Any]:
    """Read a JSON-lines file, skipping blank lines; a bad line raises :class:`DataFileError` with its number."""
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, Any]]:
    """Like :func:`read_jsonl`, each record paired with its 1-based line number (for messages naming file:line)."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}: line {lineno}: malformed JSON ({e.msg})") from e
    return rows


def read_json_or_jsonl(path: str | Path) -> list[Any]:
    """Read a list of records from a ``.json`` array or a ``.jsonl`` file (chosen by content)."""
    path = Path(path)
    head = read_text(path).lstrip()[:1]
    if head == "[":
        data = read_json(path)
        if not isinstance(data, list):
            raise DataFileError(f"{path}: expected a JSON list of records")
        return data
    return read_jsonl(path)


def write_jsonl(path: str | Path, rows: Iterable[Any], secrets: Iterable[str] | None = None) -> Path:
    """Atomically write ``rows`` as JSON lines (with ``secrets``, scrubbed as :func:`atomic_write_json` does)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text if secrets is None else scrub_secrets(text, secrets))

"""One writer per output folder: a run that writes a resumable folder holds an exclusive lock on it.

Two runs into one folder at once lose work: both read the same resumable state, and the last writer wins
(requests already paid for vanish), or both append to one step file. Every command that writes such a folder
(generate, answer, judge, mt-bench, train) takes the lock for the whole run through :func:`output_folder_lock`
(or the :func:`locks_output_folder` decorator); a second run stops at once with :class:`FolderBusyError` naming
the folder and the process that holds it.

The lock is the ``filelock`` package's (an OS lock on ``.alpaca-nb.lock``: released by the OS when the process
dies, even by ``kill -9``, so a crashed run never leaves a stale lock). Who holds it is written beside it in
``.alpaca-nb.lock.json``; both files go when the run ends. It is re-entrant within a process, and processes a holder starts (torchrun's workers)
inherit it through the ``ALPACA_NB_HELD_FOLDERS`` environment variable; of a distributed run only rank 0 locks.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json

LOCK_FILE = ".alpaca-nb.lock"
HOLDER_FILE = ".alpaca-nb.lock.json"
INHERITED = "ALPACA_NB_HELD_FOLDERS"
_held: dict[Path, int] = {}  # folders this process holds, with their nesting depth
_guard = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])


class FolderBusyError(AlpacaNbError):
    """Another process is writing the output folder."""


def _inherited() -> set[str]:
    return set(filter(None, os.environ.get(INHERITED, "").split(os.pathsep)))


def _describe_holder(folder: Path) -> str:
    try:
        holder = read_json(folder / HOLDER_FILE)
        since = time.strftime("%H:%M:%S", time.localtime(holder["started"]))
        return f"`{holder['command']}` (pid {holder['pid']} on {holder['host']}, since {since})"
    except (AlpacaNbError, OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def output_folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the exclusive lock on ``folder`` (created if missing) for the ``with`` block; yield the folder.

    Raises :class:`FolderBusyError` at once, naming the folder and the holder (command, pid, host, start time),
    when another process holds it. ``command`` is what a second run's message calls this one.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder).resolve()
    if str(folder) in _inherited() or int(os.environ.get("RANK", "0") or 0) > 0:
        yield folder  # a worker of the run that holds it
        return
    with _guard:
        depth = _held.get(folder, 0)
        _held[folder] = depth + 1
    if depth:
        try:
            yield folder
        finally:
            with _guard:
                _held[folder] -= 1
        return
    if folder.exists() and not folder.is_dir():
        with _guard:
            del _held[folder]
        raise AlpacaNbError(f"{folder} is a file, not a folder; give an output folder (or move the file away)")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        with _guard:
            del _held[folder]
        raise FolderBusyError(f"{folder} is being written by {_describe_holder(folder)}; two runs in one folder "
                              "would lose each other's work: wait for it to finish (or stop it), or write this "
                              "run to another folder") from None
    previous = os.environ.get(INHERITED)
    try:
        atomic_write_json(folder / HOLDER_FILE, {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                                 "started": time.time()})
        os.environ[INHERITED] = os.pathsep.join(sorted(_inherited() | {str(folder)}))
        yield folder
    finally:
        if previous is None:
            os.environ.pop(INHERITED, None)
        else:
            os.environ[INHERITED] = previous
        (folder / HOLDER_FILE).unlink(missing_ok=True)
        (folder / LOCK_FILE).unlink(missing_ok=True)  # the folder is left as the run wrote it
        with _guard:
            del _held[folder]
        lock.release()
        if created and not any(folder.iterdir()):  # a run stopped by bad input before writing anything
            with contextlib.suppress(OSError):
                folder.rmdir()


def locks_output_folder(command: str, folder_of: Callable[[dict[str, Any]], str | Path | None]) -> Callable[[F], F]:
    """Decorate a function that writes a resumable folder: it runs holding :func:`output_folder_lock`.

    ``folder_of`` maps the call's bound arguments (a dict by parameter name, defaults applied) to the folder,
    or ``None`` when the call writes nothing (then no lock is taken).
    """
    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = folder_of(bound.arguments)
            if folder is None:
                return fn(*args, **kwargs)
            with output_folder_lock(folder, command):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def parent_of(argument: str) -> Callable[[dict[str, Any]], Path | None]:
    """``folder_of`` for a function whose ``argument`` is the file it writes (``None``: it writes none)."""
    return lambda arguments: None if arguments.get(argument) is None else Path(arguments[argument]).parent

"""A local OpenAI-compatible server (``transformers serve``) and the ``openai`` client for any backend.

All LLM calls in this project go through the ``openai`` client, so the same code drives
the OpenAI API, vLLM, llama.cpp, Ollama, or the local ``transformers serve`` started here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import AlpacaNbError
from .model import check_model_folder, model_identity, resolve_model
from .paths import outputs_dir

BACKENDS = ("local", "openai", "url")


class EndpointError(AlpacaNbError, ValueError):
    """A backend cannot be set up as asked (no key, no model name, no URL, unknown backend)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: ``base_url`` (ending in ``/v1``), the ``model`` name and the API key.

    ``started_here`` marks a server :func:`local_server` started for this run (its port changes every run).
    """

    base_url: str | None
    model: str
    api_key: str
    started_here: bool = False

    def client(self, timeout: float = 120.0, max_retries: int = 0):
        """An ``openai.OpenAI`` client for this endpoint (retries are left to the caller by default)."""
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=timeout, max_retries=max_retries)

    def identity(self) -> dict[str, str | None]:
        """What identifies this endpoint's answers in a cache key (never the API key): the server
        (``"local transformers serve"`` for one started here, else its URL) and :func:`model_identity`."""
        server = "local transformers serve" if self.started_here else (self.base_url or "https://api.openai.com/v1")
        return {"endpoint": server} | model_identity(self.model)

    def __repr__(self) -> str:  # never print the key
        return f"Endpoint(base_url={self.base_url!r}, model={self.model!r})"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command() -> list[str]:
    exe = Path(sys.executable).with_name("transformers")
    return [str(exe)] if exe.exists() else [shutil.which("transformers") or "transformers"]


@contextlib.contextmanager
def local_server(model: str | Path | None = None, port: int | None = None, log_path: str | Path | None = None,
                 startup_timeout: float = 180.0) -> Iterator[Endpoint]:
    """Run ``transformers serve MODEL`` on a free localhost port for the duration of the ``with`` block.

    Waits for ``/health``, yields an :class:`Endpoint`, and always stops the server on exit
    (normal, error or Ctrl-C). The server log goes to ``log_path`` (default
    ``outputs/server/transformers-serve-<port>.log``). ``model`` is a model folder, or ``None``
    for the embedded default; a folder that does not exist or holds no model is refused at once.
    """
    model_dir = str(check_model_folder(resolve_model(model)))
    port = port or free_port()
    log_path = Path(log_path) if log_path else outputs_dir("server") / f"transformers-serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*_serve_command(), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with code {proc.returncode}; see its log {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"local server did not answer /health within {startup_timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model=model_dir, api_key="local", started_here=True)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def remote_endpoint(backend: str, model: str | None = None, base_url: str | None = None,
                    api_key: str | None = None) -> Endpoint:
    """An endpoint for ``backend="openai"`` (key from ``OPENAI_API_KEY``) or ``"url"`` (any compatible ``base_url``).

    Raises :class:`EndpointError` with what to do when the key, model or URL is missing.
    """
    if backend == "openai":
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise EndpointError("backend 'openai' needs OPENAI_API_KEY in the environment "
                             "(export OPENAI_API_KEY=...), or run offline with backend 'local' "
                             "(the embedded model, no key needed)")
        if not model:
            raise EndpointError("backend 'openai' needs a model name, e.g. --model gpt-4o-mini")
        return Endpoint(base_url=base_url, model=model, api_key=key)
    if backend == "url":
        if not base_url:
            raise EndpointError("backend 'url' needs --base-url, e.g. http://localhost:8000/v1 (vLLM, llama.cpp, Ollama)")
        if not model:
            raise EndpointError("backend 'url' needs the model name the server expects (--model)")
        return Endpoint(base_url=base_url, model=model, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none")
    raise EndpointError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


@contextlib.contextmanager
def open_endpoint(backend: str = "local", model: str | None = None, base_url: str | None = None,
                  api_key: str | None = None, log_path: str | Path | None = None) -> Iterator[Endpoint]:
    """One entry point for every backend: starts (and stops) a local server when ``backend="local"``.

    A ``base_url`` given with ``backend="local"`` means "use this compatible server as is";
    ``log_path`` is where a started local server logs (see :func:`local_server`).
    """
    if backend == "local" and not base_url:
        with local_server(model, log_path=log_path) as endpoint:
            yield endpoint
    elif backend == "local":
        yield remote_endpoint("url", model=resolve_model(model), base_url=base_url, api_key=api_key)
    else:
        yield remote_endpoint(backend, model=model, base_url=base_url, api_key=api_key)

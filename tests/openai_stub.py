"""A real local HTTP server that speaks the OpenAI API, for tests.

It answers ``POST /v1/completions`` and ``POST /v1/chat/completions`` (plus ``GET /health`` and
``GET /v1/models``) on 127.0.0.1 with a free port, in a background thread, and replays a script:
one :class:`Reply` per prompt, in order, then ``default(body)`` when the script runs out. A reply
can be a normal completion, an HTTP error (429 with ``Retry-After``, 500, 401, 404, ...), a slow
answer (to trigger client timeouts), a malformed list or a truncated one (``finish_reason="length"``),
or a broken reply: fields replaced in the JSON (``fields={"choices": []}``), any raw body (``raw="<html>..."``,
``content_type="text/html"``), or an error body that echoes the request's Authorization header
(``echo_auth=True``, as some proxies do). Every request is recorded (path, JSON body, Authorization header).

    with OpenAIStub([Reply(text="..."), Reply(status=429)]) as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="test")
"""
from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable


@dataclass
class Reply:
    """One scripted answer. ``status != 200`` sends an OpenAI-style error body instead of a completion."""

    text: str = ""
    finish_reason: str = "stop"
    status: int = 200
    delay: float = 0.0                 # seconds to sleep before answering
    retry_after: float | None = None   # Retry-After header (with 429)
    prompt_tokens: int | None = None   # default: words in the prompt
    completion_tokens: int | None = None  # default: words in the text
    fields: dict[str, Any] | None = None  # replace these top-level fields of the JSON reply, e.g. {"choices": None}
    raw: str | None = None             # send this body as is instead of JSON (malformed JSON, an HTML page)
    content_type: str = "application/json"
    echo_auth: bool = False            # with status != 200: the error message repeats the Authorization header


def numbered_tasks(tasks: Iterable[tuple[str, str, str]], start: int = 4) -> str:
    """A response in the prompt's format continuing at ``start``: ``' instr\\n4. Input:\\n...\\n###\\n5. ...``."""
    items = []
    for n, (instruction, inp, output) in enumerate(tasks, start=start):
        head = f" {instruction}" if n == start else f"{n}. Instruction: {instruction}"
        items.append(f"{head}\n{n}. Input:\n{inp or '<noinput>'}\n{n}. Output:\n{output}\n")
    return "###\n".join(items)


_SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "vo", "pe", "du", "zi", "ba", "go", "fe", "xu", "ho"]


class UniqueTasks:
    """A default reply that invents ``per_reply`` tasks never seen before (made-up words, so all novel)."""

    def __init__(self, per_reply: int = 5, seed: int = 0, delay: float = 0.0) -> None:
        self.per_reply, self.delay = per_reply, delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _word(self) -> str:
        return "".join(self._rng.choice(_SYLLABLES) for _ in range(3))

    def __call__(self, body: dict) -> Reply:
        with self._lock:
            tasks = [(f"Explain the {' '.join(self._word() for _ in range(7))} briefly",
                      "", f"The {self._word()} is a {self._word()}.") for _ in range(self.per_reply)]
        return Reply(text=numbered_tasks(tasks), delay=self.delay)


class OpenAIStub:
    """Run the stub server for the ``with`` block; ``base_url`` ends in ``/v1``."""

    def __init__(self, script: Iterable[Reply] = (), default: Callable[[dict], Reply] | None = None,
                 model: str = "stub-model") -> None:
        self._script = list(script)
        self._default = default or (lambda body: Reply(text=""))
        self.model = model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "OpenAIStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, *replies: Reply) -> None:
        """Append replies to the script (thread-safe)."""
        with self._lock:
            self._script.extend(replies)

    def _next(self, body: dict) -> Reply:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return self._default(body)

    def _answer(self, path: str, body: dict, authorization: str | None = None) -> tuple[int, dict, dict | str]:
        """Status, headers and JSON (or a raw body) for one request (one scripted reply per prompt)."""
        prompts = body.get("prompt", "")
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if path.endswith("/chat/completions"):
            prompts = [" ".join(m.get("content", "") for m in body.get("messages", []))]
        replies = [self._next(body) for _ in prompts]
        time.sleep(max(r.delay for r in replies))
        failed = next((r for r in replies if r.status != 200), None)
        raw = next((r for r in replies if r.raw is not None), None)
        if raw:
            return failed.status if failed else 200, {"Content-Type": raw.content_type}, raw.raw
        if failed:
            headers = {"Retry-After": str(failed.retry_after)} if failed.retry_after is not None else {}
            echo = f"; you sent Authorization: {authorization}" if failed.echo_auth else ""
            return failed.status, headers, {"error": {"message": f"stub error {failed.status}{echo}",
                                                      "type": "stub_error", "code": failed.status}}
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        choices = []
        for i, (prompt, r) in enumerate(zip(prompts, replies)):
            usage["prompt_tokens"] += r.prompt_tokens if r.prompt_tokens is not None else len(prompt.split())
            usage["completion_tokens"] += r.completion_tokens if r.completion_tokens is not None else len(r.text.split())
            if path.endswith("/chat/completions"):
                choices.append({"index": i, "finish_reason": r.finish_reason,
                                "message": {"role": "assistant", "content": r.text}})
            else:
                choices.append({"index": i, "finish_reason": r.finish_reason, "text": r.text, "logprobs": None})
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        kind = "chat.completion" if path.endswith("/chat/completions") else "text_completion"
        fields = {k: v for r in replies for k, v in (r.fields or {}).items()}
        return 200, {}, {"id": f"stub-{next(self._ids)}", "object": kind, "created": int(time.time()),
                         "model": body.get("model", self.model), "choices": choices, "usage": usage} | fields

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, obj: dict | str, headers: dict | None = None) -> None:
                data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
                headers = {"Content-Type": "application/json"} | (headers or {})
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self) -> None:
                if self.path in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with stub._lock:
                    stub.requests.append({"path": self.path, "body": body,
                                          "authorization": self.headers.get("Authorization")})
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                status, headers, obj = stub._answer(self.path, body, self.headers.get("Authorization"))
                self._send(status, obj, headers)

        return Handler

"""Lesson 02's request layer: one request to an OpenAI-compatible endpoint, with bounded retries.

Transient failures (429, 5xx, timeouts, lost connections) and unusable replies (not JSON, an HTML page,
no ``choices``, a choice without text) are retried with exponential backoff and jitter, then raise a
clear :class:`~alpaca_nb.errors.AlpacaNbError`; failures retrying cannot fix (bad key, no access, unknown
model, bad request) raise one at once. Error messages never carry the API key (:func:`scrub_secrets`).
:func:`complete_once` is the single request of lessons 04-05 (answers, the judge), with the same checks.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import AlpacaNbError, scrub_secrets
from .generate_config import GenerateConfig

if TYPE_CHECKING:
    from .server import Endpoint


@dataclass
class RequestReply:
    """What one request brought back: per prompt its text and finish reason, the token usage, the retries."""

    index: int
    outputs: list[tuple[str, str | None]]  # (text, finish_reason) per prompt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: dict[str, int] = field(default_factory=dict)


class UnusableReply(Exception):
    """The server answered, but not with a completion for every prompt (says what it sent instead)."""


def _fatal(e: Exception, endpoint, api: str) -> AlpacaNbError | None:
    """A clear error for failures that retrying cannot fix (bad key, no access, unknown model, bad request)."""
    import openai

    where = f"{endpoint.base_url or 'https://api.openai.com/v1'} (model {endpoint.model!r}, --api {api})"
    if isinstance(e, openai.AuthenticationError):
        return AlpacaNbError(f"{where} rejected the API key (401): check OPENAI_API_KEY, or run offline with "
                             "--backend local")
    if isinstance(e, openai.PermissionDeniedError):
        return AlpacaNbError(f"{where}: no access (403): this key may not use this model; pick another --model")
    if isinstance(e, openai.NotFoundError):
        return AlpacaNbError(f"{where}: not found (404): check --model and --base-url; a chat-only model needs "
                             "--api chat")
    if isinstance(e, openai.APIStatusError) and 400 <= e.status_code < 500 and e.status_code not in (408, 409, 429):
        refused = f"the server refused the request ({e.status_code}: {_one_line(e.message)})"
        return AlpacaNbError(scrub_secrets(f"{where}: {refused}; check --max-tokens, --model and --api",
                                           [endpoint.api_key]))
    return None


def _retry_kind(e: Exception) -> str | None:
    """'429', '5xx', 'timeout', 'connection' or 'bad_reply' for failures worth retrying, else None."""
    import openai

    if isinstance(e, (UnusableReply, json.JSONDecodeError, openai.APIResponseValidationError)):
        return "bad_reply"
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection"
    if isinstance(e, openai.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500):
        return "429" if e.status_code == 429 else "5xx" if e.status_code >= 500 else str(e.status_code)
    return None


def _backoff(attempt: int, config: GenerateConfig, e: Exception) -> float:
    """Exponential backoff with jitter, at least the server's Retry-After, at most ``backoff_max``."""
    delay = config.backoff_base * 2 ** attempt * random.uniform(0.5, 1.5)
    response = getattr(e, "response", None)
    with contextlib.suppress(TypeError, ValueError):
        delay = max(delay, float(response.headers.get("retry-after") if response is not None else None))
    return min(delay, config.backoff_max)


def _call(client, endpoint, config: GenerateConfig, api: str, texts: list[str], seed: int, extra: dict) -> tuple:
    common = dict(model=endpoint.model, max_tokens=config.resolved_max_tokens, temperature=config.temperature,
                  top_p=config.top_p, stop=config.resolved_stop or None, seed=seed, extra_body=extra or None)
    if api == "chat":
        r = client.chat.completions.create(messages=[{"role": "user", "content": texts[0]}], **common)
    else:
        r = client.completions.create(prompt=texts if len(texts) > 1 else texts[0], **common)
    usage = getattr(r, "usage", None)
    return _outputs(r, api, len(texts)), _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")


def _outputs(r, api: str, n_prompts: int) -> list[tuple[str, str | None]]:
    """``(text, finish_reason)`` per prompt, in prompt order; :class:`UnusableReply` unless each has a text."""
    choices = getattr(r, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise UnusableReply(f"'choices' is {json.dumps(choices)}" if hasattr(r, "choices") else
                            f"not a completion: {str(r)[:80]!r}")
    if len(choices) != n_prompts:
        raise UnusableReply(f"{len(choices)} choices for {n_prompts} prompts")
    choices = sorted(choices, key=lambda c: c.index if isinstance(getattr(c, "index", None), int) else 0)
    if api == "chat":
        texts = [getattr(getattr(c, "message", None), "content", None) or "" for c in choices]
        if any(getattr(c, "message", None) is None for c in choices):
            raise UnusableReply("a choice without a 'message'")
    else:
        texts = [getattr(c, "text", None) for c in choices]
    if not all(isinstance(t, str) for t in texts):
        raise UnusableReply("a choice without text")
    return [(t, getattr(c, "finish_reason", None)) for t, c in zip(texts, choices)]


def _count(usage, name: str) -> int:
    """A token count from ``usage``; 0 where the server left it out or sent something else."""
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def send_request(client, endpoint, config: GenerateConfig, index: int, texts: list[str], extra: dict,
                 stop: threading.Event) -> RequestReply:
    """Send one request, retrying transient failures and unusable replies; raise AlpacaNbError when it cannot
    succeed.

    ``stop`` (set when the run ends early) cuts the backoff short and gives up."""
    api, retries = config.resolved_api, {}
    for attempt in range(config.max_retries + 1):
        try:
            outputs, p_tok, c_tok = _call(client, endpoint, config, api, texts, config.seed * 1_000_003 + index, extra)
            return RequestReply(index, [(_strip_stop(t, config.resolved_stop), f) for t, f in outputs], p_tok, c_tok, retries)
        except AlpacaNbError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into fatal / retryable / unexpected below
            fatal, kind = _fatal(e, endpoint, api), _retry_kind(e)
            if fatal:
                raise fatal from e
            if kind is None or stop.is_set():
                raise
            retries[kind] = retries.get(kind, 0) + 1
            if attempt == config.max_retries:
                where = f"request {index} to {endpoint.base_url or 'the OpenAI API'}"
                fix = ("check that --base-url is an OpenAI-compatible server (ending in /v1) that serves --api "
                       f"{api} for --model {endpoint.model}" if kind == "bad_reply" else
                       "the server may be overloaded or down: try again later (the run resumes), lower "
                       "--max-concurrency, or raise --request-timeout")
                message = f"{where}: no usable reply" if kind == "bad_reply" else f"{where} still failing"
                raise AlpacaNbError(scrub_secrets(f"{message} after {config.max_retries} retries ({kind}: "
                                                  f"{_one_line(e)}); {fix}", [endpoint.api_key])) from e
            if stop.wait(_backoff(attempt, config, e)):  # the run is ending: send nothing more
                raise
    raise AssertionError("unreachable")


def complete_once(client, endpoint, what: str, messages: list[dict] | None = None, prompt: str | None = None,
                  sink: list | None = None, **params) -> str:
    """The text of one chat (``messages``) or plain completion (``prompt``) request, for lessons 04-05.

    The client's own retries cover HTTP failures; a failed request or an unusable reply (no ``choices``, an
    HTML page, malformed JSON) raises one-line :class:`AlpacaNbError` naming the server and ``what`` (e.g.
    ``"item '12'"``). The text and the message are scrubbed of the API key (:func:`scrub_secrets`). With ``sink``
    (a list), the response object is appended to it (for its ``logprobs``)."""
    import openai

    api = "chat" if messages is not None else "completions"
    try:
        if api == "chat":
            r = client.chat.completions.create(model=endpoint.model, messages=messages, **params)
        else:
            r = client.completions.create(model=endpoint.model, prompt=prompt, **params)
        text = _outputs(r, api, 1)[0][0]
        if sink is not None:
            sink.append(r)
    except (openai.OpenAIError, json.JSONDecodeError, UnusableReply) as e:
        server = endpoint.base_url or "https://api.openai.com/v1"
        if _retry_kind(e) == "bad_reply":
            failed = "no usable reply"
            fix = f"check that it is an OpenAI-compatible server (URL ending in /v1) serving {endpoint.model!r}"
        else:
            failed = "request failed"
            fix = "check the server, the model name and the API key, or try again later (finished items are kept)"
        raise AlpacaNbError(scrub_secrets(f"{server}: {what}: {failed} ({_one_line(e)}); {fix}",
                                          [endpoint.api_key])) from e
    return scrub_secrets(text, [endpoint.api_key])


def _one_line(e: Exception | str, limit: int = 200) -> str:
    """A message on one line, cut to ``limit`` characters (servers may send whole pages)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_stop(text: str, stops: list[str]) -> str:
    """Some servers (transformers serve) keep the stop sequence at the end; OpenAI drops it."""
    for stop in stops:
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


def sampling_extra(config: GenerateConfig, endpoint) -> dict:
    """transformers serve samples only if the model's generation config says so: ask for sampling."""
    if config.backend != "local":
        return {}
    path = Path(endpoint.model) / "generation_config.json"
    gen = json.loads(path.read_text()) if path.exists() else {}
    gen = {k: v for k, v in gen.items() if not k.startswith("_") and k != "transformers_version"}
    return {"generation_config": json.dumps(gen | {"do_sample": config.temperature > 0})}


def open_session(stack: contextlib.ExitStack, config: GenerateConfig, out_dir: Path, run_id: str, max_requests: int,
                 endpoint: Endpoint | None = None) -> tuple[Endpoint, tuple[float, float] | None, dict[str, Any], Any]:
    """Open the run's endpoint on ``stack`` (or take ``endpoint``): ``(endpoint, price, session, client)``.

    ``price`` is per million input/output tokens (:func:`~alpaca_nb.generate_cost.price_for`, ``None`` when
    unknown); ``session`` is the summary's record of this session (run id, start time, backend, server, model,
    request cap, config); ``client`` an ``openai`` client that never retries on its own (the run's loop does).
    """
    from .generate_config import SERVER_LOG
    from .generate_cost import load_prices, price_for
    from .server import open_endpoint

    endpoint = endpoint or stack.enter_context(open_endpoint(
        config.backend, model=config.model, base_url=config.base_url, log_path=out_dir / SERVER_LOG))
    model = Path(endpoint.model).name if config.backend == "local" else endpoint.model
    price = price_for(endpoint.model, config.backend, load_prices(config.prices))
    session = {"run_id": run_id, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "backend": config.backend, "base_url": endpoint.base_url, "model": model, "max_requests": max_requests,
               "config": {k: v for k, v in asdict(config).items() if k != "progress"}}
    return endpoint, price, session, endpoint.client(timeout=config.request_timeout, max_retries=0)


def abort_requests(error: BaseException, stop: threading.Event, pool, client, secrets: Sequence[str]) -> str:
    """Stop a generation run's requests after ``error``: signal ``stop``, cancel what ``pool`` has not started,
    close ``client`` (aborting the requests in flight); return the status its summary records (the error's
    message with secrets scrubbed, or ``"interrupted"`` for Ctrl-C / SIGTERM)."""
    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)
    client.close()
    return scrub_secrets(f"error: {error}", secrets) if isinstance(error, Exception) else "interrupted"


def map_requests(request: Callable[[Any], Any], plans: Sequence[Any], todo: Sequence[int], results: dict[int, Any],
                 save: Callable[[], None], workers: int = 1, desc: str = "requests", progress: bool = True) -> None:
    """Fill ``results[i] = request(plans[i])`` for every ``i`` in ``todo``, ``workers`` requests at a time, with a
    progress bar (items already in ``results`` count as done); call ``save()`` after every 10 replies and once
    at the end, also when a request raises (so nothing answered before an error is lost)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(plans), initial=len(results), desc=desc, disable=not progress) as bar:
            for n, (i, reply) in enumerate(zip(todo, pool.map(request, [plans[i] for i in todo])), start=1):
                results[i] = reply
                bar.update(1)
                if n % 10 == 0:
                    save()
    finally:
        save()

"""The one exception type for problems a user can fix (bad input, missing file, bad key), and the secret scrubber."""
from __future__ import annotations

import os
import re
from typing import Iterable

REDACTED = "[REDACTED]"
# OpenAI-style keys (sk-..., sk-proj-...) and whatever follows "Bearer " (an echoed Authorization header).
_TOKEN_PATTERNS = (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), re.compile(r"(?<=Bearer )[^\s\"',;]+", re.IGNORECASE))
MIN_SECRET_LENGTH = 8  # placeholder keys such as "local" or "none" are not secrets


class AlpacaNbError(Exception):
    """A problem the user can fix. The message names the file, line or field, and says what to do.

    The command line prints it without a traceback and exits with status 2.
    """


def scrub_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret replaced by ``[REDACTED]``, for messages and files that may quote a server.

    Secrets are ``OPENAI_API_KEY`` from the environment and ``secrets`` (each at least
    ``MIN_SECRET_LENGTH`` characters), any ``sk-...`` token and any ``Bearer <token>``. Idempotent.
    """
    keys = {k for k in (os.environ.get("OPENAI_API_KEY"), *secrets) if k and len(k) >= MIN_SECRET_LENGTH}
    for key in sorted(keys, key=len, reverse=True):
        text = text.replace(key, REDACTED)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text

"""Notebook outputs made safe to publish: no script from model text runs on a course page.

A lesson's outputs can carry HTML that a model wrote (an answer in a table). nbconvert copies ``text/html`` outputs
into the page as they are, so ``<script>`` or ``<img onerror=...>`` in an answer would run in every reader's
browser. :func:`sanitise_outputs` cleans every HTML and Markdown output with ``nh3`` (the Python binding of the
Rust ``ammonia`` sanitiser): script elements and event-handler attributes go, ``javascript:`` links lose their
target, tables, their CSS (pandas' Styler writes a ``<style>`` block and ``class``/``id``/``style`` attributes) and
inline ``data:`` images stay. Outputs that exist only to run code (``application/javascript``, widget views) are
dropped.
"""
from __future__ import annotations

from typing import Any

ACTIVE_MIMETYPES = ("application/javascript", "text/javascript", "application/vnd.jupyter.widget-view+json")
HTML_MIMETYPES = ("text/html", "text/markdown")


def clean_html(text: str) -> str:
    """``text`` with active content removed (see the module docstring); formatting and tables kept."""
    import nh3

    attributes = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes["*"] = set(attributes.get("*", ())) | {"class", "id", "style"}
    return nh3.clean(text, tags=set(nh3.ALLOWED_TAGS) | {"style"}, attributes=attributes,
                     clean_content_tags={"script"}, url_schemes=set(nh3.ALLOWED_URL_SCHEMES) | {"data"})


def sanitise_outputs(nb: Any) -> int:
    """Clean every code cell's outputs of ``nb`` (an nbformat notebook) in place; return how many were changed."""
    changed = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            for mime in [m for m in data if m in ACTIVE_MIMETYPES]:
                del data[mime]
                changed += 1
            for mime in HTML_MIMETYPES:
                if mime in data:
                    text = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
                    cleaned = clean_html(text)
                    changed += cleaned != text
                    data[mime] = cleaned
            if not data:
                data["text/plain"] = "(active content removed)"
    return changed

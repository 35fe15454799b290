"""A static site of the executed lessons: ``alpaca-nb site`` / ``make site``.

Reads the executed copies ``run-notebooks`` writes (``<profile root>/notebooks/NN_*.ipynb`` and
``notebooks/solutions/NN_solutions.ipynb``), renders each to HTML with nbconvert's ``lab`` template, and writes
an ``index.html`` in lesson order with each page's profile, run date, run time and status, to
``<profile root>/site/`` (``outputs/site/`` for the demo). Pages read offline: figures are inline (base64
images, as the notebook holds them), the CSS is inlined, and the script tags the template would load from a
CDN (require.js, MathJax, mermaid, the widget manager) are left out, so nothing is fetched to read a page.
"""
from __future__ import annotations

import html
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import AlpacaNbError
from .fileio import atomic_write_text, ensure_dir, read_text
from .notebooks import DEMO_PROFILE, executed_profile, profile_outputs_root

INDEX = "index.html"
SITE_FOLDER = "site"
LESSON_GLOB = "[0-9][0-9]_*.ipynb"
SOLUTION_GLOB = "solutions/[0-9][0-9]_solutions.ipynb"

# nbconvert's lab page without the <script src="https://..."> tags: nothing but the page itself is needed.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block body_header -%}{{ super() }}
<p style="padding: 0 1em"><a href="index.html">&larr; all lessons</a></p>
{%- endblock body_header -%}
"""

_INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ text-align: left; padding: .4em .6em; }}
tr:nth-child(even) {{ background: #f4f4f4; }} .failed {{ color: #b00; }} small {{ color: #666; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Executed copies of the lessons, rendered by <code>alpaca-nb site</code> from <code>{source}</code>.
Each page shows the parameters of the profile it ran with (papermill's <em>injected-parameters</em> cell).</p>
<table>
<tr><th>#</th><th>lesson</th><th>profile</th><th>run</th><th>run time</th><th>status</th><th>solutions</th></tr>
{rows}
</table>
<p><small>Built {built}.</small></p>
</body></html>
"""


def executed_notebooks(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """The executed lessons and solutions in ``folder``, each in lesson order."""
    folder = Path(folder)
    return sorted(folder.glob(LESSON_GLOB)), sorted(folder.glob(SOLUTION_GLOB))


def page_info(path: str | Path) -> dict[str, Any]:
    """What the index shows of one executed notebook: ``title`` (its first ``# `` heading, else the file
    name), ``profile`` (recorded by ``run-notebooks``; ``None`` when not), ``start_time`` and ``duration``
    (papermill's metadata; ``None`` when the notebook was not run by papermill), and ``exception``."""
    path = Path(path)
    try:
        nb = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise AlpacaNbError(f"{path}: line {e.lineno}: not a notebook (malformed JSON: {e.msg}); run it again "
                            "with `alpaca-nb run-notebooks`") from e
    if not isinstance(nb, dict):
        raise AlpacaNbError(f"{path}: not a notebook (a JSON {type(nb).__name__}, not an object); run it again "
                            "with `alpaca-nb run-notebooks`")
    heading = next((m.group(1) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
                    for m in [re.search(r"^# (.+)$", "".join(c.get("source", "")), re.MULTILINE)] if m), path.stem)
    papermill = (nb.get("metadata") or {}).get("papermill") or {}
    return {"file": path.name, "stem": path.stem, "title": heading.strip(), "profile": executed_profile(nb),
            "start_time": papermill.get("start_time"), "duration": papermill.get("duration"),
            "exception": papermill.get("exception")}


def render_page(path: str | Path, out_path: str | Path) -> Path:
    """Render one executed notebook to a self-contained HTML page at ``out_path``, its outputs sanitised
    (:mod:`alpaca_nb.page_safety`). An unreadable notebook raises :class:`AlpacaNbError` naming it."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    from .page_safety import sanitise_outputs

    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="offline.html.j2", embed_images=True)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat's NotJSONError, a validation error, an unreadable file
        raise AlpacaNbError(f"{path}: not a readable notebook ({type(e).__name__}: {str(e)[:120]}); run it again "
                            "with `alpaca-nb run-notebooks`, or move it out of the folder") from None
    sanitise_outputs(nb)  # model text in outputs never runs as script on the page
    page, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(Path(path).parent)}})
    return _publish(atomic_write_text(out_path, page))


def _publish(path: Path) -> Path:
    """Make a written page world-readable (atomic writes create 0600 files), so any web server can serve it."""
    path.chmod(0o644)
    return path


def _when(iso: str | None) -> str:
    if not iso:
        return "not run by papermill"
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return html.escape(str(iso))


def _duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return "" if seconds is None else html.escape(str(seconds))
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _row(info: dict[str, Any], solution: dict[str, Any] | None) -> str:
    status = ('<span class="failed">failed</span>' if info["exception"] else "ok") if info["start_time"] else ""
    link = f'<a href="{html.escape(solution["stem"])}.html">{html.escape(solution["title"])}</a>' if solution else ""
    cells = [html.escape(info["stem"][:2]),
             f'<a href="{html.escape(info["stem"])}.html">{html.escape(info["title"])}</a>',
             html.escape(info["profile"] or "unknown"), _when(info["start_time"]), _duration(info["duration"]),
             status, link]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def build_site(notebooks_dir: str | Path | None = None, out_dir: str | Path | None = None,
               profile: str = DEMO_PROFILE) -> Path:
    """Render ``notebooks_dir`` (default: ``profile``'s ``notebooks/``) into ``out_dir`` (default: ``profile``'s
    ``site/``): one page per executed lesson and solution, and ``index.html``, whose path is returned.

    A folder without executed lessons raises :class:`AlpacaNbError` saying to run the lessons first.
    """
    root = profile_outputs_root(profile)
    source = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    lessons, solutions = executed_notebooks(source) if source.is_dir() else ([], [])
    if not lessons:
        command = "make demo" if profile == DEMO_PROFILE else f"alpaca-nb run-notebooks --profile {profile}"
        raise AlpacaNbError(f"{source}: no executed lessons (NN_*.ipynb) to render; run `{command}` first")
    out = ensure_dir(Path(out_dir) if out_dir else root / SITE_FOLDER, "--out")
    solved = {}
    for path in solutions:
        render_page(path, out / f"{path.stem}.html")
        solved[path.stem[:2]] = page_info(path)
    rows = []
    for path in lessons:
        render_page(path, out / f"{path.stem}.html")
        rows.append(_row(page_info(path), solved.get(path.stem[:2])))
    index = _INDEX_TEMPLATE.format(title="alpaca-notebooks: the executed lessons", source=html.escape(str(source)),
                                   rows="\n".join(rows), built=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    return _publish(atomic_write_text(out / INDEX, index))

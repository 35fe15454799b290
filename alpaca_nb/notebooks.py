"""Run the lessons headlessly with papermill, in order, with a named parameter profile.

Profiles live in ``notebooks/profiles.yaml`` (``demo``: the notebooks' own defaults; ``smoke``: the
fastest run that still executes every cell). Each profile has its own outputs root, so a smoke run never
replaces the demo's products: ``demo`` writes to ``outputs/``, any other profile to ``outputs/<profile>/``
(under ``$ALPACA_NB_OUTPUTS`` when set). Executed copies go to ``notebooks/`` in that root, the solutions'
to ``notebooks/solutions/``; each records its profile in its metadata (``alpaca_nb.profile``, beside papermill's
own ``papermill`` record of parameters, start time and duration), which ``alpaca-nb site`` shows.

The solutions to the lessons' exercises (``notebooks/solutions/NN_solutions.ipynb``) are notebooks like the
lessons, with their own keys (their stems, e.g. ``04_solutions``) in the same profiles; they are never part of a
plain run (``make demo``): ``run_notebooks(solutions=True)`` / ``alpaca-nb run-notebooks --solutions`` runs them.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import AlpacaNbError
from .paths import PACKAGE_DIR, outputs_dir

NOTEBOOKS_DIR = PACKAGE_DIR.parent / "notebooks"
SOLUTIONS_DIR = NOTEBOOKS_DIR / "solutions"
PROFILES_FILE = NOTEBOOKS_DIR / "profiles.yaml"
METADATA_KEY = "alpaca_nb"  # executed copies: metadata.alpaca_nb.profile


class NotebookFailed(AlpacaNbError):
    """A notebook raised during a headless run; the message names the notebook and the cell."""


def list_notebooks() -> list[Path]:
    """The lessons in order (``NN_name.ipynb`` in ``notebooks/``)."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def list_solutions() -> list[Path]:
    """The exercises' solutions in lesson order (``NN_solutions.ipynb`` in ``notebooks/solutions/``)."""
    return sorted(SOLUTIONS_DIR.glob("[0-9][0-9]_solutions.ipynb"))


def load_profiles() -> dict[str, dict[str, dict[str, Any]]]:
    """All profiles: ``{profile: {notebook_stem: {parameter: value}}}``."""
    import yaml

    return yaml.safe_load(PROFILES_FILE.read_text(encoding="utf-8"))


def profile_parameters(profile: str, stem: str) -> dict[str, Any]:
    """The parameters ``profile`` injects into notebook ``stem`` (empty: the notebook's own defaults)."""
    profiles = load_profiles()
    if profile not in profiles:
        raise AlpacaNbError(f"unknown profile {profile!r} in {PROFILES_FILE}; choose one of {', '.join(profiles)}")
    return dict(profiles[profile].get(stem) or {})


def select_notebooks(names: Iterable[str] | None = None, solutions: bool = False) -> list[Path]:
    """Resolve names like ``03``, ``03_diversity`` or ``notebooks/03_diversity.ipynb`` (all when empty);
    with ``solutions``, among the solutions (``04``, ``04_solutions``)."""
    available = list_solutions() if solutions else list_notebooks()
    if not names:
        return available
    chosen = []
    for name in names:
        key = Path(name).stem
        hits = [nb for nb in available if nb.stem == key or nb.stem.split("_", 1)[0] == key]
        if len(hits) != 1:
            raise AlpacaNbError(f"no single notebook matches {name!r}; available: "
                                f"{', '.join(nb.stem for nb in available)}")
        chosen.append(hits[0])
    return sorted(set(chosen))


DEMO_PROFILE = "demo"  # the profile that writes straight into the outputs root


def profile_outputs_root(profile: str) -> Path:
    """Where ``profile`` writes (an absolute path: the kernel runs in ``notebooks/``): the outputs root
    (``$ALPACA_NB_OUTPUTS``, else ``outputs/``) for ``demo``, ``<root>/<profile>/`` for any other profile."""
    base = outputs_dir().resolve()
    return base if profile == DEMO_PROFILE else base / profile


@contextlib.contextmanager
def profile_outputs(profile: str):
    """Point ``ALPACA_NB_OUTPUTS`` (inherited by papermill's kernel) at ``profile``'s root for the ``with``
    block, then restore the environment as it was."""
    before = os.environ.get("ALPACA_NB_OUTPUTS")
    os.environ["ALPACA_NB_OUTPUTS"] = str(profile_outputs_root(profile))
    try:
        yield Path(os.environ["ALPACA_NB_OUTPUTS"])
    finally:
        if before is None:
            os.environ.pop("ALPACA_NB_OUTPUTS", None)
        else:
            os.environ["ALPACA_NB_OUTPUTS"] = before


def run_notebook(notebook: Path, profile: str = "demo", out_dir: str | Path | None = None) -> Path:
    """Execute one notebook with papermill (cwd ``notebooks/``) and return the executed copy's path.

    The notebook writes under :func:`profile_outputs_root` (``ALPACA_NB_OUTPUTS`` is set for its kernel);
    the executed copy goes to ``out_dir`` (default: ``notebooks/`` in that root, ``notebooks/solutions/`` for a
    notebook in :data:`SOLUTIONS_DIR`) and records ``profile`` in its metadata (:func:`executed_profile`).
    Raises :class:`NotebookFailed` naming the notebook, the failing cell and the error.
    """
    params = profile_parameters(profile, notebook.stem)
    with profile_outputs(profile):
        default = outputs_dir("notebooks/solutions" if notebook.parent == SOLUTIONS_DIR else "notebooks")
        return _execute(notebook, params, Path(out_dir) if out_dir else default, profile)


def executed_profile(nb: Any) -> str | None:
    """The profile an executed copy (a notebook node or JSON dict) was run with, when it says so."""
    return ((nb.get("metadata") or {}).get(METADATA_KEY) or {}).get("profile")


def _record_profile(executed: Path, profile: str) -> None:
    import nbformat

    from .fileio import atomic_write_text

    if executed.is_file():
        nb = nbformat.read(executed, as_version=4)
        nb.metadata[METADATA_KEY] = {"profile": profile}
        atomic_write_text(executed, nbformat.writes(nb))


def _execute(notebook: Path, params: dict[str, Any], out_dir: Path, profile: str = DEMO_PROFILE) -> Path:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, cwd=str(NOTEBOOKS_DIR),
                            kernel_name="python3", progress_bar=True)
    except PapermillExecutionError as e:
        _record_profile(executed, profile)
        first_line = next((line for line in e.source.splitlines() if line.strip()), "")
        raise NotebookFailed(f"{notebook.name} failed at cell {e.cell_index} (execution count {e.exec_count}, "
                             f"starting `{first_line[:80]}`): {e.ename}: {e.evalue}. "
                             f"The executed copy with the full traceback is {executed}") from None
    _record_profile(executed, profile)
    return executed


def run_notebooks(names: Iterable[str] | None = None, profile: str = "demo",
                  out_dir: str | Path | None = None, solutions: bool = False) -> list[Path]:
    """Run the selected lessons (with ``solutions``: the selected solutions) in order; stop at the first
    failure (see :func:`run_notebook`). Prints each notebook's wall time as it finishes."""
    import time

    executed = []
    for notebook in select_notebooks(names, solutions=solutions):
        print(f"== {notebook.name} (profile {profile}, outputs in {profile_outputs_root(profile)})", flush=True)
        start = time.perf_counter()
        executed.append(run_notebook(notebook, profile=profile, out_dir=out_dir))
        print(f"   {notebook.name} done in {time.perf_counter() - start:.1f} s", flush=True)
    return executed

"""Where things live: the repo's `outputs/` and `seeds/`, and the user cache.

Every location can be moved with an environment variable, so tests, CI and
papermill runs can write somewhere else without touching code:

- ``ALPACA_NB_HOME``: the project root (default: the checkout this package sits in,
  else the current directory).
- ``ALPACA_NB_OUTPUTS``: where runs write (default ``<home>/outputs``).
- ``ALPACA_NB_SEEDS``: where fetched upstream data lives (default ``<home>/seeds``).
- ``ALPACA_NB_CACHE``: converted models and parse caches (default ``~/.cache/alpaca-nb``).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The project root: ``$ALPACA_NB_HOME``, else the checkout holding this package, else cwd."""
    if os.environ.get("ALPACA_NB_HOME"):
        return Path(os.environ["ALPACA_NB_HOME"]).resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").exists() and (checkout / "seeds").is_dir():
        return checkout
    return Path.cwd()


def outputs_dir(stage: str | None = None) -> Path:
    """``outputs/`` (or ``outputs/<stage>/``), created on demand."""
    base = Path(os.environ.get("ALPACA_NB_OUTPUTS") or project_root() / "outputs")
    path = base / stage if stage else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def seeds_dir() -> Path:
    """The folder holding the manifest's fetched files (``seeds/`` by default)."""
    return Path(os.environ.get("ALPACA_NB_SEEDS") or project_root() / "seeds")


def manifest_path() -> Path:
    """The data manifest shipped with the project (always the one in the checkout's ``seeds/``)."""
    return PACKAGE_DIR.parent / "seeds" / "manifest.json"


def cache_dir() -> Path:
    """Per-user cache for converted models and parse caches, created on demand."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alpaca-nb"
    path = Path(os.environ.get("ALPACA_NB_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path

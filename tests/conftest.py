"""Shared fixtures: the real embedded model, a real `transformers serve` endpoint, isolated outputs."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path_factory, monkeypatch) -> Path:
    """Each test writes to its own outputs folder; missing data comes from the ../shared/data mirror."""
    out = tmp_path_factory.mktemp("outputs")
    monkeypatch.setenv("ALPACA_NB_OUTPUTS", str(out))
    if MIRROR.is_dir():
        monkeypatch.setenv("ALPACA_NB_MIRROR", str(MIRROR))
    return out


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local mirror of the upstream data (CI keeps it at ../shared/data)."""
    if not MIRROR.is_dir():
        pytest.skip(f"no data mirror at {MIRROR}")
    return MIRROR


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain Hugging Face folder (converted once, cached)."""
    from alpaca_nb.model import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def local_endpoint(model_dir, tmp_path_factory):
    """A real `transformers serve` on the embedded model, shared by the whole session."""
    from alpaca_nb.server import local_server

    log = tmp_path_factory.mktemp("server") / "serve.log"
    with local_server(model_dir, log_path=log) as endpoint:
        yield endpoint

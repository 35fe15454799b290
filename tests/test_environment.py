"""pyproject.toml and environment.yml pin the same packages, and nothing pulls a CUDA torch."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _normalise(spec: str) -> str:
    name, _, version = spec.partition("==")
    return re.sub(r"[-_.]+", "-", name.lower()) + "==" + version


def test_pyproject_and_environment_yml_pin_the_same_set():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {_normalise(s) for s in project["dependencies"] + project["optional-dependencies"]["test"]}
    conda = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert {_normalise(s) for s in pip_section} == pinned


def test_every_dependency_is_pinned_and_torch_is_the_cpu_release():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in d for d in deps), [d for d in deps if "==" not in d]
    assert "torch==2.13.0" in deps

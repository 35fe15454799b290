"""The lessons: committed clean, parameterised by profile, and all run headlessly with papermill."""
import ast
import hashlib
import os
from pathlib import Path

import nbformat
import pytest

from alpaca_nb import notebooks
from alpaca_nb.cli import main
from alpaca_nb.fileio import read_json

NOTEBOOKS = notebooks.list_notebooks()
SOLUTIONS = notebooks.list_solutions()


def _parameters_cell(nb) -> dict:
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_lessons_are_present_in_order():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]
    assert NOTEBOOKS[0].stem == "01_seed_tasks"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_demo_defaults_match_profile(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    defaults = _parameters_cell(nb)
    demo = notebooks.profile_parameters("demo", path.stem)
    assert {k: defaults.get(k) for k in demo} == demo, "profiles.yaml demo must equal the parameters cell"
    assert set(notebooks.profile_parameters("smoke", path.stem)) <= set(defaults), "smoke sets unknown parameters"


def test_failure_names_notebook_and_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(notebooks.NotebookFailed, match=r"99_broken.ipynb failed at cell 1 .*raise ValueError.*boom"):
        notebooks.run_notebook(path, profile="smoke", out_dir=tmp_path / "out")


def test_unknown_names_and_profiles_are_clear(capsys):
    assert main(["run-notebooks", "--profile", "nope", "01"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert main(["run-notebooks", "42"]) == 2
    assert "no single notebook matches '42'" in capsys.readouterr().err


def _probe_notebook(folder: Path) -> Path:
    """A one-cell lesson that writes a marker into its stage folder under ``outputs_dir``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from alpaca_nb.paths import outputs_dir\n"
                                          "(outputs_dir('99_probe') / 'marker.txt').write_text('written')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "99_probe.ipynb"
    nbformat.write(nb, path)
    return path


def test_each_profile_has_its_own_outputs_root(tmp_path, isolated_outputs, monkeypatch):
    """A smoke run after the demo must not replace the demo's products: demo writes to the outputs root,
    any other profile under <root>/<profile>/; the caller's environment is restored afterwards."""
    probe = _probe_notebook(tmp_path)
    demo = notebooks.run_notebook(probe, profile="demo")
    assert demo == isolated_outputs / "notebooks" / "99_probe.ipynb"
    assert notebooks.executed_profile(nbformat.read(demo, as_version=4)) == "demo"  # what `alpaca-nb site` shows
    assert (isolated_outputs / "99_probe" / "marker.txt").read_text() == "written"
    (isolated_outputs / "99_probe" / "marker.txt").write_text("the demo's")
    smoke = notebooks.run_notebook(probe, profile="smoke")
    assert smoke == isolated_outputs / "smoke" / "notebooks" / "99_probe.ipynb"
    assert notebooks.executed_profile(nbformat.read(smoke, as_version=4)) == "smoke"
    assert (isolated_outputs / "smoke" / "99_probe" / "marker.txt").read_text() == "written"
    assert (isolated_outputs / "99_probe" / "marker.txt").read_text() == "the demo's"
    assert os.environ["ALPACA_NB_OUTPUTS"] == str(isolated_outputs)
    monkeypatch.delenv("ALPACA_NB_OUTPUTS")
    monkeypatch.setenv("ALPACA_NB_HOME", str(tmp_path))  # no variable set: the root is <home>/outputs
    assert notebooks.profile_outputs_root("smoke") == tmp_path / "outputs" / "smoke"
    with notebooks.profile_outputs("smoke"):
        assert os.environ["ALPACA_NB_OUTPUTS"] == str(tmp_path / "outputs" / "smoke")
    assert "ALPACA_NB_OUTPUTS" not in os.environ


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_lesson_runs_headlessly_with_the_smoke_profile(isolated_outputs, model_dir):
    """The whole course, in order, as `make test` and CI run it: each stage reads the previous one's outputs.
    Lesson 04's one smoke step really trains: the saved model is not the embedded one it started from."""
    assert main(["run-notebooks", "--profile", "smoke"]) == 0
    root = isolated_outputs / "smoke"  # the smoke profile's own outputs root
    for path in NOTEBOOKS:
        executed = nbformat.read(root / "notebooks" / path.name, as_version=4)
        assert executed.metadata["papermill"]["exception"] is None
        stage = root / path.stem
        assert stage.is_dir() and any(stage.iterdir()), f"{path.stem} wrote nothing"
    assert (root / "01_seed_tasks" / "lengths.png").stat().st_size > 1000
    finetune = root / "04_finetune"
    assert read_json(finetune / "train_summary.json")["weights_changed"] is True
    assert _sha256(finetune / "model" / "model.safetensors") != _sha256(Path(model_dir) / "model.safetensors")



def test_solutions_are_not_lessons_and_every_solved_lesson_ends_with_its_exercises():
    """`make demo` runs list_notebooks(), which never holds a solution; each solution belongs to a lesson whose
    last cell is "## Exercises" pointing at it, and states measured results (no placeholder left)."""
    assert SOLUTIONS and not any(p.parent == notebooks.SOLUTIONS_DIR for p in NOTEBOOKS)
    assert notebooks.select_notebooks(["04"], solutions=True) == [notebooks.SOLUTIONS_DIR / "04_solutions.ipynb"]
    lessons = {p.stem[:2]: p for p in NOTEBOOKS}
    for solution in SOLUTIONS:
        last = nbformat.read(lessons[solution.stem[:2]], as_version=4).cells[-1]
        assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), lessons[solution.stem[:2]].name
        assert f"solutions/{solution.name}" in last.source
        cells = nbformat.read(solution, as_version=4).cells
        exercises = [c for c in cells if c.cell_type == "markdown" and c.source.startswith("## Exercise ")]
        seen = [c for c in cells if c.cell_type == "markdown" and c.source.startswith("### What you should have seen")]
        assert 2 <= len(exercises) == len(seen) <= 4, solution.name
        assert all("MEASURED" not in c.source and "measured" in c.source.lower() for c in seen), solution.name


def test_every_solution_runs_headlessly_with_the_smoke_profile(isolated_outputs, model_dir):
    """`alpaca-nb run-notebooks --solutions --profile smoke`: each solution runs green on its own (no lesson has
    run in this outputs root) and really trains and judges what its exercises compare."""
    assert main(["run-notebooks", "--solutions", "--profile", "smoke"]) == 0
    root = isolated_outputs / "smoke"
    for path in SOLUTIONS:
        executed = nbformat.read(root / "notebooks" / "solutions" / path.name, as_version=4)
        assert executed.metadata["papermill"]["exception"] is None
        assert notebooks.executed_profile(executed) == "smoke"
    assert not (root / "notebooks" / "01_seed_tasks.ipynb").exists()
    heldout = read_json(root / "04_solutions" / "heldout.json")
    assert set(heldout) == {"base", "masked", "train_on_inputs", "gpt4_teacher"}
    assert read_json(root / "04_solutions" / "train_on_inputs" / "resolved_config.json")["train_on_inputs"] is True
    both = read_json(root / "05_solutions" / "annotations_both.json")
    assert both and all(sorted(j["first"] for j in a["judgements"]) == [1, 2] for a in both)

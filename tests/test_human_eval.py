"""Lesson 05: the blind human sheet (CSV + separate key) and scoring a filled sheet."""
from __future__ import annotations

import csv
import json

import pytest

from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import atomic_write_json, read_json
from alpaca_nb.human_eval import export_sheet, fresh_sheet_path, key_path_for, score_sheet

N = 8


def _outputs(generator: str, tag: str) -> list[dict]:
    return [{"instruction": f"Task {i}: say something, with a comma", "output": f"{tag} answer {i}\nsecond line",
             "generator": generator, "dataset": "selfinstruct"} for i in range(N)]


def _read(sheet):
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _fill(sheet, labels: dict[str, str]) -> None:
    rows = _read(sheet)
    for row in rows:
        row["label"] = labels.get(row["item"], "")
    with open(sheet, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def exported(tmp_path):
    model, reference = _outputs("my-model", "MODEL"), _outputs("text_davinci_003", "REF")
    return export_sheet(model, reference[::-1], tmp_path / "sheet.csv", seed=3)


def test_sheet_is_blind_and_randomised(exported):
    sheet, key_path = exported
    assert key_path.name == "sheet.key.json"
    text = sheet.read_text(encoding="utf-8-sig")
    assert "my-model" not in text and "text_davinci_003" not in text  # no model names on the sheet
    rows, key = _read(sheet), read_json(key_path)
    assert [r["item"] for r in rows] == [str(i) for i in range(1, N + 1)]
    assert all(r["label"] == "" for r in rows)
    assert (key["model"], key["reference"]) == ("my-model", "text_davinci_003")
    sides = [key["items"][r["item"]]["A"] for r in rows]
    assert {"my-model", "text_davinci_003"} == set(sides)  # the model is sometimes A, sometimes B
    for row in rows:  # the key tells the truth about each side, and answers are paired by instruction
        a_is_model = key["items"][row["item"]]["A"] == "my-model"
        assert row["output_A"].startswith("MODEL" if a_is_model else "REF")
        assert row["output_A"].split()[2] == row["output_B"].split()[2] == row["instruction"].split()[1][:-1]


def test_score_a_filled_sheet(exported):
    sheet, key_path = exported
    key = read_json(key_path)["items"]
    model_side = {item: ("A" if k["A"] == "my-model" else "B") for item, k in key.items()}
    other = {"A": "b", "B": "a"}
    labels = {"1": model_side["1"], "2": model_side["2"].lower(), "3": f" {model_side['3']} ",  # 3 wins
              "4": other[model_side["4"]],                                                      # 1 loss
              "5": "tie", "6": " Tie "}                                                         # 2 ties; 7, 8 blank
    _fill(sheet, labels)
    score = score_sheet(sheet)
    assert (score["wins"], score["ties"], score["losses"], score["unlabeled"]) == (3, 2, 1, 2)
    assert score["win_rate"] == pytest.approx((3 + 0.5 * 2) / 6 * 100)
    assert (score["model"], score["reference"]) == ("my-model", "text_davinci_003")


def test_bad_label_names_the_row(exported):
    sheet, _ = exported
    _fill(sheet, {"1": "A", "4": "C"})
    with pytest.raises(AlpacaNbError, match=r"row 5 \(item 4\): label 'C' is not A, B or tie"):
        score_sheet(sheet)


def test_sheet_from_another_study_is_refused(exported, tmp_path):
    sheet, _ = exported
    other_key = atomic_write_json(tmp_path / "other.key.json", {"model": "m", "reference": "r", "items": {"1": {}}})
    with pytest.raises(AlpacaNbError, match="not in the key"):
        score_sheet(sheet, other_key)


def test_same_generator_on_both_sides_is_refused(tmp_path):
    with pytest.raises(AlpacaNbError, match="both sides are named"):
        export_sheet(_outputs("m", "X"), _outputs("m", "Y"), tmp_path / "s.csv")


def test_cli_round_trip(tmp_path, capsys):
    model = atomic_write_json(tmp_path / "model_outputs.json", _outputs("my-model", "MODEL"))
    reference = atomic_write_json(tmp_path / "reference.json", _outputs("ref", "REF"))
    assert main(["human-sheet", "--model-outputs", str(model), "--reference", str(reference),
                 "--out", str(tmp_path / "h.csv")]) == 0
    paths = json.loads(capsys.readouterr().out)
    key = read_json(paths["key"])["items"]
    _fill(paths["sheet"], {item: "A" if k["A"] == "my-model" else "B" for item, k in key.items()})
    assert main(["human-score", "--sheet", paths["sheet"]]) == 0
    score = json.loads(capsys.readouterr().out)
    assert (score["wins"], score["losses"], score["win_rate"]) == (N, 0, 100.0)
    _fill(paths["sheet"], {"2": "maybe"})
    assert main(["human-score", "--sheet", paths["sheet"]]) == 2
    assert "row 3 (item 2)" in capsys.readouterr().err


def test_export_never_replaces_a_labelled_sheet_or_its_key_unless_forced(tmp_path):
    model, reference = _outputs("my-model", "MODEL"), _outputs("text_davinci_003", "REF")
    sheet, key_path = export_sheet(model, reference, tmp_path / "sheet.csv", seed=3)
    assert export_sheet(model, reference, sheet, seed=4) == (sheet, key_path)  # a blank sheet is replaced
    assert read_json(key_path)["seed"] == 4
    export_sheet(model, reference, sheet, seed=3)
    key = key_path.read_bytes()
    _fill(sheet, {"2": "A"})
    filled = sheet.read_bytes()
    with pytest.raises(AlpacaNbError, match="has 1 label"):
        export_sheet(model, reference, sheet, seed=3)
    assert (sheet.read_bytes(), key_path.read_bytes()) == (filled, key)
    export_sheet(model, reference, sheet, seed=4, force=True)
    assert all(r["label"] == "" for r in _read(sheet)) and read_json(key_path)["seed"] == 4
    not_a_sheet = tmp_path / "notes.csv"
    not_a_sheet.write_text("name,score\nx,1\n")
    with pytest.raises(AlpacaNbError, match="is not a blind sheet"):
        export_sheet(model, reference, not_a_sheet)


def test_export_never_replaces_another_sheets_key_unless_forced(tmp_path):
    model, reference = _outputs("my-model", "MODEL"), _outputs("text_davinci_003", "REF")
    sheet, key_path = export_sheet(model, reference, tmp_path / "sheet.csv", seed=3)
    _fill(sheet, {"1": "A"})
    key = key_path.read_bytes()
    with pytest.raises(AlpacaNbError, match="already holds a key and its sheet .*new.csv does not exist"):
        export_sheet(model, reference, tmp_path / "new.csv", key_path=key_path, seed=4)
    assert key_path.read_bytes() == key and not (tmp_path / "new.csv").exists()
    export_sheet(model, reference, tmp_path / "new.csv", key_path=key_path, seed=4, force=True)
    assert read_json(key_path)["seed"] == 4


def test_fresh_sheet_path_steps_beside_a_filled_sheet(tmp_path):
    model, reference = _outputs("my-model", "MODEL"), _outputs("text_davinci_003", "REF")
    path = tmp_path / "human_sheet.csv"
    assert fresh_sheet_path(path) == path  # nothing there yet
    export_sheet(model, reference, path)
    assert fresh_sheet_path(path) == path  # a blank sheet with its key: replaced
    _fill(path, {"3": "tie"})
    second = fresh_sheet_path(path)
    assert second == tmp_path / "human_sheet_2.csv"
    export_sheet(model, reference, second)  # the lesson's new sheet: allowed without force
    assert fresh_sheet_path(path) == second  # a blank one left by an earlier run is reused
    _fill(second, {"1": "A"})
    key_path_for(tmp_path / "human_sheet_3.csv").write_text("{}")  # a stray key: this name is not free either
    assert fresh_sheet_path(path) == tmp_path / "human_sheet_4.csv"


def test_key_entry_must_name_the_model(exported):
    sheet, key_path = exported
    key = read_json(key_path)
    key["items"]["1"] = {"A": "someone", "B": "else"}
    atomic_write_json(key_path, key)
    _fill(sheet, {"1": "A"})
    with pytest.raises(AlpacaNbError, match=r"sheet.key.json: item 1: expected"):
        score_sheet(sheet)

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


# --- the judge against the sheet (alpaca_nb.agreement) and the scripted rater ---------------------------------

# item: (the rater's verdict, the judge's preference); M model wins, T tie, R reference wins, None blank / null.
AGREEMENT_CASE = {1: ("M", 2.0), 2: ("M", 1.75), 3: ("M", 1.0), 4: ("T", 1.5), 5: ("T", 2.0), 6: ("R", 1.0),
                  7: ("R", 1.0), 8: ("R", 1.5), 9: (None, 2.0), 10: ("M", None)}


def _agreement_case(tmp_path):
    """A sheet of 10 items filled per AGREEMENT_CASE, its key, and the judge's annotations of the same items."""
    model = [{"instruction": f"Task {i}: say something", "output": f"MODEL answer {i}", "generator": "my-model"}
             for i in range(10)]
    reference = [m | {"output": f"REF answer {i}", "generator": "text_davinci_003"} for i, m in enumerate(model)]
    sheet, key_path = export_sheet(model, reference, tmp_path / "sheet.csv", seed=1)
    key = read_json(key_path)["items"]
    labels = {}
    for item, (human, _) in AGREEMENT_CASE.items():
        model_side = "A" if key[str(item)]["A"] == "my-model" else "B"
        labels[str(item)] = {"M": model_side, "R": "AB".replace(model_side, ""), "T": "tie", None: ""}[human]
    _fill(sheet, labels)
    annotations = [{"instruction": m["instruction"], "output_1": r["output"], "generator_1": r["generator"],
                    "output_2": m["output"], "generator_2": m["generator"], "annotator": "judge-x",
                    "preference": AGREEMENT_CASE[i + 1][1]} for i, (m, r) in enumerate(zip(model, reference))]
    return sheet, key_path, atomic_write_json(tmp_path / "annotations.json", annotations[::-1])


def test_agreement_with_the_judge_on_a_hand_made_case(tmp_path):
    from alpaca_nb.agreement import agreement_with_judge

    sheet, _, annotations = _agreement_case(tmp_path)
    result = agreement_with_judge(sheet, annotations)
    # Compared: items 1-8 (9 is blank on the sheet, 10 unparseable for the judge; 2's 1.75 reads as a model win).
    # Rows human, columns judge (M, T, R):  M: 2 0 1 | T: 1 1 0 | R: 0 1 2
    assert result["confusion"] == {"model_wins": {"model_wins": 2, "tie": 0, "reference_wins": 1},
                                   "tie": {"model_wins": 1, "tie": 1, "reference_wins": 0},
                                   "reference_wins": {"model_wins": 0, "tie": 1, "reference_wins": 2}}
    assert (result["n_items"], result["n_compared"], result["unlabeled_by_human"],
            result["unparseable_by_judge"]) == (10, 8, 1, 1)
    p_observed = (2 + 1 + 2) / 8
    p_chance = (3 * 3 + 2 * 2 + 3 * 3) / 8 ** 2  # human row totals 3 2 3 times judge column totals 3 2 3
    assert result["agreement"] == pytest.approx(p_observed)
    assert result["cohen_kappa"] == pytest.approx((p_observed - p_chance) / (1 - p_chance))
    assert result["cohen_kappa"] == pytest.approx(3 / 7)
    assert (result["agreement_without_ties"], result["n_without_ties"]) == (pytest.approx(4 / 5), 5)  # 1 2 3 6 7
    # AlpacaEval 2: 1 - mean |p_human - p_judge|; |2-1.75| + |2-1| + |1.5-2| + |1-1.5| = 2.25 over 8 items
    assert result["alpaca_eval_agreement"] == pytest.approx(1 - 2.25 / 8)
    assert (result["model"], result["reference"], result["judge"]) == ("my-model", "text_davinci_003", "judge-x")
    assert agreement_with_judge(sheet, read_json(annotations)) == result  # the judge's list, as judge.judge returns


def test_kappa_is_undefined_when_both_always_say_the_same():
    from alpaca_nb.agreement import cohen_kappa

    assert cohen_kappa([("tie", "tie")] * 3) is None
    assert cohen_kappa([]) is None
    assert cohen_kappa([("model_wins", "reference_wins"), ("reference_wins", "model_wins")]) == pytest.approx(-1)


def test_cli_human_score_with_judge_annotations(tmp_path, capsys):
    sheet, key_path, annotations = _agreement_case(tmp_path)
    assert main(["human-score", "--sheet", str(sheet), "--key", str(key_path),
                 "--judge-annotations", str(annotations)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["wins"], result["ties"], result["losses"], result["unlabeled"]) == (4, 2, 3, 1)
    assert result["agreement_with_judge"]["cohen_kappa"] == pytest.approx(3 / 7)
    assert result["agreement_with_judge"]["confusion"]["tie"] == {"model_wins": 1, "tie": 1, "reference_wins": 0}


def test_judge_annotations_of_another_model_or_other_items_are_refused(tmp_path, capsys):
    sheet, _, annotations = _agreement_case(tmp_path)
    rows = read_json(annotations)
    atomic_write_json(annotations, [r | {"generator_2": "other-model"} for r in rows])
    assert main(["human-score", "--sheet", str(sheet), "--judge-annotations", str(annotations)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{annotations} holds annotations of model 'other-model'" in err
    atomic_write_json(annotations, rows[1:])  # the judge never saw item 10
    assert main(["human-score", "--sheet", str(sheet), "--judge-annotations", str(annotations)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not judge 1 of the 10 items" in err and "item 10" in err
    atomic_write_json(annotations, [rows[0] | {"output_2": "an answer from another run"}] + rows[1:])
    assert main(["human-score", "--sheet", str(sheet), "--judge-annotations", str(annotations)]) == 2
    assert "the model's answer (output_2) to item 10" in capsys.readouterr().err


def test_scripted_rater_fills_a_marked_copy(tmp_path):
    from alpaca_nb.human_eval import scripted_rater

    model = [m | {"output": "MODEL " + "long " * i} for i, m in enumerate(_outputs("my-model", "MODEL"))]
    reference = [r | {"output": "REF!! " + "long " * 3} for r in _outputs("text_davinci_003", "REF")]  # = item 4
    sheet, key_path = export_sheet(model, reference, tmp_path / "sheet.csv", seed=3)
    blank = sheet.read_bytes()
    copy = scripted_rater(sheet, tmp_path / "scripted.csv", rule="longer")
    assert sheet.read_bytes() == blank  # the sheet itself is untouched
    rows = _read(copy)
    assert {r["rater"] for r in rows} == {"scripted: longer"}
    for r in rows:  # the longer answer wins
        a, b = len(r["output_A"]), len(r["output_B"])
        assert r["label"] == ("A" if a > b else "B" if b > a else "tie")
    score = score_sheet(copy, key_path)
    assert score["wins"] + score["ties"] + score["losses"] == N and score["unlabeled"] == 0
    assert (score["wins"], score["ties"], score["losses"]) == (4, 1, 3)  # longer than the reference's: items 5-8
    coin = [r["label"] for r in _read(scripted_rater(sheet, tmp_path / "coin.csv", rule="coin", seed=5))]
    assert set(coin) == {"A", "B"}
    assert coin == [r["label"] for r in _read(scripted_rater(sheet, tmp_path / "coin.csv", rule="coin", seed=5))]
    with pytest.raises(AlpacaNbError, match="is the sheet itself"):
        scripted_rater(sheet, sheet)
    with pytest.raises(AlpacaNbError, match="is not a scripted copy"):
        scripted_rater(copy, tmp_path / "sheet.csv")  # a people's sheet is never written over
    with pytest.raises(AlpacaNbError, match="unknown scripted rule"):
        scripted_rater(sheet, tmp_path / "x.csv", rule="shortest")

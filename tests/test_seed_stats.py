"""Lesson 01's report: counts, tables and figures from the real seed tasks."""
import json

from alpaca_nb import seed_stats
from alpaca_nb.cli import main
from alpaca_nb.data import load_seed_tasks


def test_summary_counts_and_kinds():
    summary = seed_stats.summarize(load_seed_tasks())
    assert (summary["tasks"], summary["with_input"], summary["classification"]) == (175, 125, 26)
    assert sum(summary["kinds"].values()) == 175 and summary["kinds"]["classification"] == 26
    assert summary["length_words"]["input"]["non_empty"] == 125
    assert 5 <= summary["length_words"]["instruction"]["median"] <= 20


def test_cli_writes_summary_table_and_figures(tmp_path, capsys):
    assert main(["seed-stats", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "summary.json").read_text()) == printed
    for name in ("lengths.png", "lengths.svg", "kinds.png", "kinds.svg", "examples.csv"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert (tmp_path / "lengths.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "examples.csv").read_text().splitlines()
    assert table[0] == "kind,instruction,input,output" and len(table) == 1 + 3 * 3

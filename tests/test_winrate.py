"""Lesson 05: AlpacaEval's leaderboard columns on a hand-made annotations file, and ROUGE-L."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import atomic_write_json
from alpaca_nb.winrate import leaderboard, plot_win_rates, read_annotations, rouge_l, summary

# preference (AlpacaEval: 1 = output_1 wins, 2 = output_2 wins, 1.5 or 0 = draw, None = unparseable), len(output_2)
HAND_MADE = [(2, 10), (2, 20), (1, 30), (1.5, 40), (0, 50), (2, 60), (None, 70), (1, 80)]


def _annotations():
    return [{"instruction": f"task {i}", "output_1": "reference answer", "generator_1": "ref",
             "output_2": "x" * length, "generator_2": "model", "preference": pref}
            for i, (pref, length) in enumerate(HAND_MADE)]


def test_leaderboard_matches_the_hand_computation():
    board = leaderboard(_annotations())
    # Parsed items score 1, 1, 0, .5, .5, 1, 0 for output_2 (the None is left out): 4 points over 7 items.
    assert board["win_rate"] == pytest.approx(400 / 7)
    # Deviations from 4/7: three of 3/7, two of -4/7, two of -1/14 -> sum of squares 119/98;
    # sample variance 119/98/6, standard error sqrt(119/588/7) = sqrt(119/4116).
    assert board["standard_error"] == pytest.approx(100 * math.sqrt(119 / 4116))
    assert board["standard_error"] == pytest.approx(100 * pd.Series([1, 1, 0, .5, .5, 1, 0]).sem())  # AlpacaEval's sem
    assert (board["n_wins"], board["n_wins_base"], board["n_draws"], board["n_total"]) == (3, 2, 2, 7)
    assert board["n_unparseable"] == 1
    assert board["avg_length"] == 45  # mean of 10..80 over all eight outputs


def test_leaderboard_edge_cases():
    assert leaderboard([{"output_2": "ab", "preference": None}])["win_rate"] is None
    one = leaderboard([{"output_2": "ab", "preference": 2}])
    assert one["win_rate"] == 100 and one["standard_error"] is None
    assert leaderboard([{"output_2": "", "preference": float("nan")}])["n_unparseable"] == 1


def test_winrate_cli_prints_one_json_object(tmp_path, capsys):
    path = atomic_write_json(tmp_path / "annotations.json", _annotations())
    assert main(["winrate", "--annotations", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(leaderboard(read_annotations(path)))
    assert {"win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"} <= set(printed)
    assert main(["winrate", "--annotations", str(path), "--rouge-l"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["rouge_l"] <= 1


def test_bad_annotations_name_the_record(tmp_path, capsys):
    rows = _annotations()
    rows[3]["preference"] = "output_2"
    path = atomic_write_json(tmp_path / "bad.json", rows)
    with pytest.raises(AlpacaNbError, match="annotation 3: preference 'output_2'"):
        read_annotations(path)
    assert main(["winrate", "--annotations", str(path)]) == 2
    assert "annotation 3" in capsys.readouterr().err


def test_rouge_l_against_the_reference():
    scores = rouge_l(["The cat sat on the mat.", "the cat sat", "dogs bark loudly"],
                     ["the cat sat on the mat", "the cat sat on the mat", "the cat sat on the mat"])
    # identical (case and punctuation ignored); an exact prefix: P = 3/3, R = 3/6, F = 2/3; nothing in common.
    assert scores == pytest.approx([1.0, 2 / 3, 0.0])
    assert summary(_annotations()[:2])["rouge_l"] == 0.0


def test_plot_win_rates(tmp_path):
    from alpaca_nb.plots import save_figure

    table = {"base": leaderboard(_annotations()), "empty": leaderboard([{"output_2": "", "preference": None}])}
    fig = plot_win_rates(table, title="demo")
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([400 / 7, 0])
    png, _ = save_figure(fig, tmp_path, "win_rates")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not fig.axes[0].texts[len(table):]  # no caveat box on a reliable figure


def test_plot_win_rates_says_on_the_figure_when_it_is_not_evidence(tmp_path):
    from alpaca_nb.judge_check import caveats

    table = {"base": leaderboard(_annotations())}
    check = {"passed": False, "reasons": ["position bias 96% > 70%"]}
    notes = caveats(table, check)
    fig = plot_win_rates(table, title="demo", caveats=notes)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("judge FAILED its sanity check (position bias 96% > 70%)" in t for t in texts)
    assert any("small sample: 7 decided verdicts" in t for t in texts)
    assert all(b.get_hatch() == "//" for b in fig.axes[0].patches)


def test_rouge_l_needs_the_reference_answer(tmp_path):
    rows = [{"output_2": "x", "preference": 2}]
    with pytest.raises(AlpacaNbError, match="annotation 0: ROUGE-L needs 'output_1'"):
        summary(rows)
    path = atomic_write_json(tmp_path / "a.json", rows)
    assert read_annotations(path) == rows  # the leaderboard alone does not need it
    with pytest.raises(AlpacaNbError, match=r"a.json: annotation 0: ROUGE-L needs 'output_1'"):
        read_annotations(path, rouge_l=True)

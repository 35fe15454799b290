"""Lesson 05: AlpacaEval's leaderboard columns on a hand-made annotations file, and ROUGE-L."""
from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest

from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import atomic_write_json
from alpaca_nb.length_control import length_controlled_winrate, read_instruction_difficulty
from alpaca_nb.winrate import leaderboard, plot_win_rates, plot_raw_vs_lc, preference_score, read_annotations, \
    rouge_l, summary

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


# --- AlpacaEval's reading of every preference value (alpaca_eval.metrics: get_winrate, describe_head2head) -------

def test_every_preference_value_is_read_as_alpaca_eval_reads_it():
    prefs = [1.25, 0.5, 0, 1.5, 2.5, 3, -1, None, float("nan"), 1.75, 2, 1]
    board = leaderboard([{"output_2": "x", "preference": p} for p in prefs])
    # win_rate keeps [1, 2] (0 read as 1.5): .25 .5 .5 1 .75 0 -> 3 points over 6; 0.5, 2.5, 3, -1, None, NaN dropped
    assert board["win_rate"] == pytest.approx(50.0)
    assert board["standard_error"] == pytest.approx(100 * pd.Series([.25, .5, .5, .75, 1, 0]).sem())
    assert (board["n_wins"], board["n_wins_base"], board["n_draws"], board["n_total"]) == (2, 2, 2, 6)
    assert (board["n_dropped"], board["n_unparseable"]) == (6, 2)
    # discrete: 1.5 -> 0, rounded half to even: 1.25->1 (0), 0.5->0 (draw), 0 (draw), 1.5 (draw), 2.5->2 (1),
    # 1.75->2 (1), 2 (1), 1 (0); 3 and -1 dropped -> 4.5 points over 8
    assert board["discrete_win_rate"] == pytest.approx(56.25)
    assert preference_score(0.5) is None and preference_score(1.25) == 0.25 and preference_score(0) == 0.5


@pytest.mark.parametrize("bad", [True, "2", float("inf"), [2]])
def test_preferences_alpaca_eval_cannot_read_are_refused(bad, tmp_path, capsys):
    rows = _annotations()
    rows[5]["preference"] = bad
    with pytest.raises(AlpacaNbError, match=r"annotation 5: preference .* is refused"):
        leaderboard(rows)
    path = atomic_write_json(tmp_path / "bad.json", rows) if not isinstance(bad, float) else None
    if path:
        assert main(["winrate", "--annotations", str(path)]) == 2
        assert "annotation 5: preference" in capsys.readouterr().err


# --- AlpacaEval 2's published row and its length-controlled win rate ---------------------------------------

@pytest.fixture
def alpaca_7b_annotations(mirror):
    from alpaca_nb.data import ensure

    return ensure("alpaca_eval2_alpaca_7b_annotations")


def test_alpaca_eval2_published_row(alpaca_7b_annotations, capsys):
    start = time.perf_counter()
    assert main(["winrate", "--annotations", str(alpaca_7b_annotations)]) == 0
    assert time.perf_counter() - start < 5  # the LC fit is fast
    row = json.loads(capsys.readouterr().out)
    # AlpacaEval 2's leaderboard row for alpaca-7b (weighted_alpaca_eval_gpt4_turbo vs gpt4_1106_preview)
    assert row["win_rate"] == pytest.approx(2.5915, abs=5e-5)
    assert row["standard_error"] == pytest.approx(0.4871, abs=5e-5)
    assert (row["n_wins"], row["n_wins_base"], row["n_draws"], row["n_total"]) == (17, 785, 3, 805)
    assert row["discrete_win_rate"] == pytest.approx(2.2981, abs=5e-5)
    # alpaca_eval 0.6.6's get_length_controlled_winrate(df, glm_name="length_controlled_minimal") gives 19.549;
    # the published 5.8755 is length_controlled_v1 (instruction difficulty, regularised to gamed baselines)
    assert row["length_controlled_winrate"] == pytest.approx(19.549, abs=0.05)
    assert row["lc_glm"] == "length_controlled_minimal"
    assert row["lc_standard_error"] == pytest.approx(0, abs=1e-9)  # one prediction for all: nothing varies
    assert (row["n_dropped"], row["avg_length"]) == (0, 396)


def test_instruction_difficulty_switches_the_formula(alpaca_7b_annotations, tmp_path, capsys):
    annotations = read_annotations(alpaca_7b_annotations)
    scores = [preference_score(a["preference"]) for a in annotations]
    hard = [1.0 if s > 0.5 else -1.0 for s in scores]  # a difficulty that explains the wins
    csv = tmp_path / "instruction_difficulty.csv"
    csv.write_text("index,instruction_difficulty\n" + "".join(f"{i},{d}\n" for i, d in enumerate(hard)))
    assert main(["winrate", "--annotations", str(alpaca_7b_annotations), "--instruction-difficulty", str(csv)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["lc_glm"] == "length_controlled_noreg"
    assert row["length_controlled_winrate"] != pytest.approx(19.549, abs=0.5)
    assert row["lc_standard_error"] > 0  # predictions now vary with the instruction
    gamed = tmp_path / "df_gamed.csv"
    gamed.write_text("index,instruction_difficulty,not_gamed_baseline,std_delta_len,preference\n" + "".join(
        f"{i},{d},False,{(-1) ** i},{0.9 if i % 2 else 0.1}\n" for i, d in enumerate(hard)))
    v1 = length_controlled_winrate(annotations, scores, read_instruction_difficulty(gamed))
    assert v1["lc_glm"] == "length_controlled_v1" and 0 < v1["length_controlled_winrate"] < 100
    csv.write_text("index,instruction_difficulty\n0,0.5\n")
    with pytest.raises(AlpacaNbError, match="no difficulty for annotation 1"):
        leaderboard(annotations, read_instruction_difficulty(csv))


def test_length_control_removes_a_pure_length_effect():
    # The judge prefers the longer answer; the model's answers are mostly longer than the reference's.
    offsets = [10, 40, 90, 160, 250]
    lengths = [100 + d for d in offsets] * 4 + [100 - d // 2 for d in offsets]
    rows = [{"output_1": "r" * 100, "output_2": "m" * n, "generator_1": "ref", "generator_2": "model",
             "preference": 1.9 if n > 100 else 1.1} for n in lengths]
    board = leaderboard(rows)
    assert board["win_rate"] == pytest.approx(74)
    assert board["length_controlled_winrate"] < board["win_rate"] - 10  # length explains most of the advantage
    same = leaderboard([r | {"generator_2": "ref"} for r in rows])
    assert same["length_controlled_winrate"] == 50  # a model against itself, as AlpacaEval defines it
    for verdict, rate in ((1, 0.0), (2, 100.0), (1.5, 50.0)):  # nothing to fit: the raw rate
        assert leaderboard([r | {"preference": verdict} for r in rows])["length_controlled_winrate"] == rate
    few = leaderboard(rows[:4])  # fewer than 5 kept: cannot cross-validate
    assert few["length_controlled_winrate"] is None and few["win_rate"] is not None


def test_plot_raw_vs_lc(tmp_path):
    from alpaca_nb.plots import save_figure

    rows = _annotations()
    table = {"model": leaderboard(rows)}
    fig = plot_raw_vs_lc(table, {"model": rows}, title="demo")
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([table["model"]["win_rate"],
                                                            table["model"]["length_controlled_winrate"]])
    png, svg = save_figure(fig, tmp_path, "raw_vs_lc")
    assert png.read_bytes()[:4] == b"\x89PNG" and svg.stat().st_size > 0

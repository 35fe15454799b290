"""The judge's sanity check: known pairs in both orders, agreement and position bias, against the stub server."""
from __future__ import annotations

import json
import re

import pytest

from alpaca_nb import judge_check
from alpaca_nb.cli import main
from alpaca_nb.server import Endpoint
from tests.openai_stub import OpenAIStub, Reply


def _shown(prompt: str) -> tuple[str, str]:
    m = re.search(r"## Output \(a\)\n(.*)\n\n## Output \(b\)\n(.*)\n\n## Verdict", prompt, re.S)
    return m.group(1), m.group(2)


def _stub(reply):
    return OpenAIStub(default=lambda body: Reply(text=reply(body["messages"][-1]["content"])), model="scripted")


def _prefers_longer(prompt: str) -> str:
    a, b = _shown(prompt)
    return "Output (a)" if len(a) >= len(b) else "Output (b)"


def test_known_pairs_are_clear_wins_for_the_stronger_answer():
    weak, strong = judge_check.known_pairs(24, seed=0)
    assert len(weak) == len(strong) == 24
    assert [w["instruction"] for w in weak] == [s["instruction"] for s in strong]
    assert {w["generator"] for w in weak} == {"alpaca-7b"} and {s["generator"] for s in strong} == {"gpt4_1106_preview"}
    assert all(len(w["instruction"]) + len(w["output"]) + len(s["output"]) <= 2500 for w, s in zip(weak, strong))
    assert judge_check.known_pairs(24, seed=0) == (weak, strong)  # seeded
    with pytest.raises(Exception, match="--n must be between"):
        judge_check.known_pairs(0)


def test_a_judge_that_always_answers_a_fails_through_position_bias(tmp_path):
    with _stub(lambda prompt: "Output (a)") as stub:
        result = judge_check.run_judge_check(Endpoint(stub.base_url, stub.model, "none"), n=12, out_dir=tmp_path,
                                             progress=False)
        assert len(stub.requests) == 24  # both orders
    assert result["position_bias"] == 1.0 and result["agreement"] == 0.5 and result["unparseable"] == 0
    assert result["passed"] is False
    assert any("position bias" in r for r in result["reasons"])
    assert json.loads((tmp_path / "judge_check.json").read_text())["passed"] is False
    assert "FAILED" in judge_check.summary_line(result) and "not evidence" in judge_check.summary_line(result)


def test_a_judge_that_prefers_the_longer_answer_passes(tmp_path):
    weak, strong = judge_check.known_pairs(12)
    longer_is_strong = sum(len(s["output"]) > len(w["output"]) for w, s in zip(weak, strong)) / 12
    with _stub(_prefers_longer) as stub:
        result = judge_check.run_judge_check(Endpoint(stub.base_url, stub.model, "none"), n=12, progress=False)
    assert result["agreement"] == pytest.approx(longer_is_strong) and result["agreement"] >= 0.8
    assert 0.3 <= result["position_bias"] <= 0.7
    assert result["passed"] is True and result["reasons"] == []


def test_unparseable_judge_fails_and_caveats_mark_the_figure():
    with _stub(lambda prompt: "I cannot decide, both have merits") as stub:
        result = judge_check.run_judge_check(Endpoint(stub.base_url, stub.model, "none"), n=4, progress=False)
    assert result["passed"] is False and result["unparseable"] == 1.0 and result["agreement"] is None
    table = {"m": {"n_total": 16, "win_rate": 60.0}}
    notes = judge_check.caveats(table, result)
    assert any("FAILED" in n for n in notes) and any("small sample" in n for n in notes)
    assert judge_check.mark_leaderboard(table, result)["m"] | {} == {"n_total": 16, "win_rate": 60.0,
                                                                       "judge_check": "failed", "evidence": False}
    assert judge_check.caveats({"m": {"n_total": 200}}, {"passed": True, "reasons": []}) == []


def test_cli_prints_one_line_and_exits_0_even_when_the_judge_fails(tmp_path, capsys):
    with _stub(lambda prompt: "Output (a)") as stub:
        rc = main(["judge-check", "--backend", "url", "--base-url", stub.base_url, "--model", "scripted",
                   "--n", "6", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("judge check FAILED")
    saved = json.loads((tmp_path / "judge_check.json").read_text())
    assert {"agreement", "position_bias", "unparseable", "n", "passed"} <= set(saved) and saved["n"] == 6


def test_the_embedded_judges_weighted_verdicts_agree_on_at_least_65_percent_of_the_known_pairs(local_endpoint,
                                                                                              tmp_path, capsys):
    """The issue's measurement, through the real CLI and the real model: reading p(a) vs p(b) after "Output (" and
    averaging p(stronger) over both orders agrees with AlpacaEval 2's judge on 17 of 24 pairs (71 %); text
    verdicts on the same requests are a coin (52 %). Short replies (--max-tokens 2): the weighted reading does not
    depend on them."""
    from alpaca_nb.cli import main

    assert main(["judge-check", "--backend", "url", "--base-url", local_endpoint.base_url, "--model",
                 local_endpoint.model, "--max-tokens", "2", "--out", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads((tmp_path / "judge_check.json").read_text())
    assert result["method"] == "weighted" and "weighted verdicts" in line
    assert result["weighted"]["agreement"] >= 0.65, result["weighted"]
    assert result["weighted"]["n_decided"] == 24 and result["weighted"]["unparseable"] == 0
    assert 0.5 < result["weighted"]["calibration"] < 1
    assert set(result["text"]) >= {"agreement", "position_bias", "passed"}  # both methods, side by side
    assert f"agreement {result['weighted']['agreement']:.0%}" in line
    # the lesson's figure of the two methods, from this real result: both fail, the figure says so on each
    fig = judge_check.plot_methods(result)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["text\nFAILED", "weighted\nFAILED"]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    # two-token replies leave the text method no decided verdict: its agreement is None and its bar empty
    assert heights[:2] == [round(100 * (result[m]["agreement"] or 0), 6) for m in ("text", "weighted")]
    assert any("small sample: 24 pairs" in t.get_text() for t in ax.texts)

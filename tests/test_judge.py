"""Lesson 05: verdict parsing, blind randomised order, annotations, resuming, and a real local judge run."""
from __future__ import annotations

import contextlib
import json
import re

import pytest

from alpaca_nb.errors import REDACTED, AlpacaNbError
from alpaca_nb.fileio import read_json
from alpaca_nb.judge import (JUDGE_TEMPLATE, count_unparseable, judge, parse_verdict, presentation_orders,
                             verdict_to_preference)
from alpaca_nb.server import Endpoint
from alpaca_nb.winrate import leaderboard
from tests.openai_stub import OpenAIStub, Reply

TRICKY = [
    ("Output (a)", "a"), ("output (B)", "b"), ("**Output (b)**", "b"), ("B", "b"), ("a", "a"), ("b.", "b"),
    ("[[A]]", "a"), ("Verdict: [[B]]", "b"), ("[[C]]", "tie"), ("Answer: B", "b"), ("ANSWER:   a", "a"),
    ("Verdict: Output (a) is better.", "a"), ("### Verdict\nOutput (b)", "b"), ("  \n**Verdict:** Tie\n", "tie"),
    ("Tie", "tie"), ("It is a tie.", "tie"), ("Draw", "tie"), ("Both outputs are equally good.", "tie"),
    ("Both Output (a) and Output (b) are equally helpful.", "tie"),
    ("I think Output (b) is better than Output (a) because it is concise.", "b"),
    ("Output (b) is better than Output (a).", "b"), ("After careful thought, my final answer: A", "a"),
    ("I prefer output (a).", "a"), ("I would pick Output (b).", "b"), ("The better output is (a).", "a"),
    ("Response A is better.", "a"), ("Option B", "b"), ("Answer: A is better", "a"),
    ("B\n\nExplanation: Output (a) misses the point.", "b"), ("`Output (b)`", "b"),
    # no clear winner: counted as unparseable, never guessed
    ("", None), (None, None), ("   ", None), ("I cannot decide.", None), ("The capital of France is Paris.", None),
    ("A good answer would mention Paris.", None), ("Answer: a detailed comparison follows", None),
    ("Output (a) and Output (b) both have issues.", None), ("[[A]] or [[B]]", None),
    ("Output (c) is better than Output (a) because", None), ("It is clearly better than Output (b).", None),
    ("Overall I lean to Output (b), it is more complete", "b"),
]


# A label counts only where the reply says it wins: loser-first replies, negations and comparatives, read as a
# person reads them; what a person could read two ways is unparseable (None), never guessed.
LOSER_FIRST = [
    ("Output (a) has errors, so Output (b) is better.", "b"), ("Output (a) is worse than Output (b).", "b"),
    ("Verdict: Output (a) loses.", "b"), ("Output (a) is not as good as Output (b).", "b"),
    ("Output (a) isn't as helpful as Output (b).", "b"), ("Output (a) is inferior to Output (b).", "b"),
    ("Output (a) is less helpful than Output (b).", "b"), ("Output (b) is less helpful than Output (a).", "a"),
    ("Output (b) is worse.", "a"), ("**Output (a)** is clearly the weaker answer.", "b"),
    ("Output (b) loses to Output (a).", "a"), ("Output (a) falls short of Output (b).", "b"),
    ("Response B is superior to Response A.", "b"), ("Output (b) outperforms Output (a).", "b"),
    ("Output (a) is the better response; Output (b) is worse.", "a"),
    ("Output (a) is more verbose but Output (b) is more accurate.", "b"),
    ("Output (a) is less accurate, so I prefer Output (b).", "b"),
    ("I prefer Output (b) because Output (a) is wrong.", "b"), ("I would choose Output (a) over Output (b).", "a"),
    ("Output (a) fails to follow the instruction; Output (b) is correct.", "b"),
    ("Output (b) is the winner because Output (a) has errors", "b"), ("No, Output (b) is better", "b"),
    ("Output (a) is worse than Output (b), so the verdict is Output (b).", "b"), ("The answer is B.", "b"),
    # a tie word conceded before the verdict, and a bare "(b)": the judge check's hidden phrasing (issue 21)
    ("Both are bad, but (b) is slightly better.", "b"), ("Both are good, but Output (a) is more detailed.", "a"),
    ("Both are equally good, however (a) is better.", "a"),
    # ambiguous or unreadable: None
    ("Output (a) is not better than Output (b).", None), ("Output (b) is not better.", None),
    ("Neither Output (a) nor Output (b) is better.", None), ("I do not prefer Output (a).", None),
    ("Output (b) doesn't follow the instruction.", None), ("Verdict: Output (b) is not the better one.", None),
    ("Output (a) is better. Actually no, Output (a) is not better.", None),
    ("Output (a) is better than Output (b), but Output (a) is worse.", None),
    ("Output (a) is more detailed, but Output (b) is more accurate.", None),
    ("Output (a), which has errors, is worse than Output (b).", None), ("It is worse than Output (a).", None),
    ("Output (a) is better, it is a tie.", None), ("Output (c) is worse than Output (a).", None),
]


@pytest.mark.parametrize("reply, expected", TRICKY + LOSER_FIRST)
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


def test_verdict_to_preference_undoes_the_order():
    assert [verdict_to_preference(v, 1) for v in ("a", "b", "tie", None)] == [1.0, 2.0, 1.5, None]
    assert [verdict_to_preference(v, 2) for v in ("a", "b", "tie", None)] == [2.0, 1.0, 1.5, None]


def test_presentation_order_is_seeded_per_item_and_balanced():
    instructions = [f"instruction {i}" for i in range(400)]
    firsts = [presentation_orders(x, "random", seed=0)[0] for x in instructions]
    assert firsts == [presentation_orders(x, "random", seed=0)[0] for x in instructions]  # reproducible
    assert 150 < firsts.count(1) < 250  # both orders, about half each
    assert firsts != [presentation_orders(x, "random", seed=1)[0] for x in instructions]
    assert presentation_orders("x", "both") == [1, 2] and presentation_orders("x", "fixed") == [1]
    with pytest.raises(AlpacaNbError, match="unknown judge order"):
        presentation_orders("x", "alphabetical")


# --- a scripted judge: the shared OpenAI stub (a real local HTTP server) answering from the prompt ---------

@pytest.fixture
def scripted():
    """``scripted(reply)`` starts a stub whose answer to each judge prompt is ``reply(prompt)`` (``None``: HTTP 500)."""
    with contextlib.ExitStack() as stack:
        def make(reply):
            def answer(body: dict) -> Reply:
                text = reply(body["messages"][-1]["content"])
                return Reply(status=500) if text is None else Reply(text=text)

            return stack.enter_context(OpenAIStub(default=answer, model="scripted-judge"))

        yield make


def _endpoint(stub: OpenAIStub) -> Endpoint:
    return Endpoint(stub.base_url, stub.model, "none")


def _prompts(stub: OpenAIStub) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in stub.requests]


def _shown(prompt: str) -> tuple[str, str]:
    m = re.search(r"## Output \(a\)\n(.*)\n\n## Output \(b\)\n(.*)\n\n## Verdict", prompt, re.S)
    return m.group(1), m.group(2)


def _pairs(n: int = 12):
    model = [{"instruction": f"task {i}", "output": f"GOOD answer {i}", "generator": "my-model",
              "dataset": "selfinstruct"} for i in range(n)]
    reference = [{"instruction": f"task {i}", "output": f"plain answer {i}", "generator": "text_davinci_003",
                  "dataset": "selfinstruct"} for i in reversed(range(n))]
    return model, reference


def _prefers_good(prompt: str) -> str:
    if "task 3\n" in prompt:
        return "Hmm, hard to say."  # one unparseable verdict
    a, _ = _shown(prompt)
    return "**Output (a)**" if "GOOD" in a else "Verdict: [[B]]"


def test_judge_is_blind_randomised_and_undoes_the_order(scripted, tmp_path):
    judge_server = scripted(_prefers_good)
    model, reference = _pairs()
    out = tmp_path / "annotations.json"
    annotations = judge(model, reference, _endpoint(judge_server), order="random", seed=0, out_path=out,
                        progress=False)
    assert read_json(out) == annotations
    assert all("my-model" not in p and "text_davinci_003" not in p for p in _prompts(judge_server))  # blind
    firsts = [a["judgements"][0]["first"] for a in annotations]
    assert {1, 2} == set(firsts)  # both orders were shown
    for a, prompt in zip(annotations, _prompts(judge_server)):
        assert (a["output_1"], a["generator_1"], a["output_2"], a["generator_2"]) == \
            (f"plain answer {a['instruction'][5:]}", "text_davinci_003", f"GOOD answer {a['instruction'][5:]}",
             "my-model")
        assert _shown(prompt)[0] == (a["output_1"] if a["judgements"][0]["first"] == 1 else a["output_2"])
        assert a["preference"] == (None if a["instruction"] == "task 3" else 2.0)  # the GOOD model always wins
    assert count_unparseable(annotations) == 1
    board = leaderboard(annotations)
    assert (board["win_rate"], board["n_total"], board["n_unparseable"]) == (100.0, 11, 1)


def test_both_orders_cancel_a_position_biased_judge(scripted):
    biased = scripted(lambda prompt: "Output (a)")
    model, reference = _pairs(4)
    annotations = judge(model, reference, _endpoint(biased), order="both", progress=False)
    assert len(biased.requests) == 8  # two requests per item
    assert [a["preference"] for a in annotations] == [1.5] * 4  # always-first averages out to a draw
    assert leaderboard(annotations)["n_draws"] == 4


def test_judge_resumes_and_keeps_progress_on_errors(scripted, tmp_path):
    out = tmp_path / "annotations.json"
    model, reference = _pairs(12)
    down = {"task 11"}  # the server fails on this item until it recovers
    server = scripted(lambda prompt: None if any(f"{t}\n" in prompt for t in down) else _prefers_good(prompt))
    with pytest.raises(AlpacaNbError, match="judge request for instruction 'task 11': request failed"):
        judge(model, reference, _endpoint(server), out_path=out, progress=False)
    assert len(read_json(out)) == 11  # everything judged before the failure is on disk
    down.clear()
    asked_before = len(server.requests)
    annotations = judge(model, reference, _endpoint(server), out_path=out, progress=False)
    assert len(server.requests) - asked_before == 1 and len(annotations) == 12  # only the missing item was asked
    assert annotations == read_json(out)


@pytest.mark.parametrize("key", ["sk-test-ECHOED-KEY-0123456789abcdef", "custom-proxy-token-42"])
def test_an_echoed_key_never_reaches_messages_or_files(key, tmp_path, monkeypatch):
    """A proxy that repeats the API key in its replies, then in a 401 error: the key is in neither the message
    nor the annotations saved before the failure."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model, reference = _pairs(3)
    out = tmp_path / "annotations.json"
    echoes = [Reply(text=f"Output (a). (proxy: you sent {key})")] * 2
    with OpenAIStub(echoes, default=lambda body: Reply(status=401, echo_auth=True), model="judge") as stub:
        with pytest.raises(AlpacaNbError) as failed:
            judge(model, reference, Endpoint(stub.base_url, stub.model, key), out_path=out, progress=False)
    assert stub.requests[-1]["authorization"] == f"Bearer {key}"  # the server did get (and echo) it
    message, saved = str(failed.value), out.read_text()
    assert key not in message + saved
    assert "'task 2': request failed (Error code: 401" in message and f"Bearer {REDACTED}" in message
    assert len(read_json(out)) == 2 and REDACTED in saved


def test_missing_reference_is_an_error(scripted):
    model, reference = _pairs(3)
    with pytest.raises(AlpacaNbError, match="no reference output"):
        judge(model, reference[:1], _endpoint(scripted(_prefers_good)), progress=False)


def test_prompt_wording_is_the_projects_own():
    assert "Output (a)" in JUDGE_TEMPLATE and "Tie" in JUDGE_TEMPLATE
    assert "{instruction}" in JUDGE_TEMPLATE and "{output_a}" in JUDGE_TEMPLATE and "{output_b}" in JUDGE_TEMPLATE


def test_end_to_end_on_the_local_default_judge(local_endpoint, tmp_path, capsys):
    """`alpaca-nb judge` with the embedded model served by `transformers serve`; every verdict is accounted for."""
    from alpaca_nb.answers import load_eval_set, reference_outputs
    from alpaca_nb.cli import main
    from alpaca_nb.fileio import atomic_write_json

    shortest = sorted(load_eval_set("user_oriented"), key=lambda it: len(it.instruction + it.input + it.output))[:2]
    reference = reference_outputs(shortest)
    model = [r | {"output": r["output"][: len(r["output"]) // 2], "generator": "truncated"} for r in reference]
    path = atomic_write_json(tmp_path / "model_outputs.json", model)
    assert main(["judge", "--model-outputs", str(path), "--base-url", local_endpoint.base_url,
                 "--judge-model", local_endpoint.model, "--max-tokens", "8", "--out", str(tmp_path / "a.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    annotations = read_json(tmp_path / "a.json")
    assert len(annotations) == 2 and printed["n_total"] + printed["n_unparseable"] == 2
    assert printed == {"annotations": str(tmp_path / "a.json")} | leaderboard(annotations)
    for a in annotations:
        assert (a["annotator"], a["generator_1"], a["generator_2"]) == ("SmolLM2-135M-Instruct", "text_davinci_003",
                                                                        "truncated")
        j = a["judgements"][0]  # the default, weighted verdict: the local judge's own label probabilities
        assert a["verdict_method"] == "weighted" and 1.0 < a["preference"] < 2.0
        assert a["preference"] == pytest.approx(1 + (j["p_b"] if j["first"] == 1 else j["p_a"]))
        assert j["p_a"] + j["p_b"] == pytest.approx(1.0) and 0 < j["mass"] <= 1
        assert j["verdict"] == parse_verdict(j["raw_completion"])  # the text verdict is kept beside it


# --- caches keyed by everything that changes a verdict; one annotations file per model -------------------------

def test_rerun_with_other_settings_judges_again(scripted, tmp_path):
    """Raising max_tokens (or changing temperature or server) must ask again, not reuse the old verdicts."""
    model, reference = _pairs(3)
    out = tmp_path / "annotations.json"
    first = scripted(_prefers_good)
    judge(model, reference, _endpoint(first), max_tokens=4, out_path=out, progress=False)
    judge(model, reference, _endpoint(first), max_tokens=4, out_path=out, progress=False)
    assert len(first.requests) == 3  # same settings: all reused
    for settings in ({"max_tokens": 64}, {"max_tokens": 64, "temperature": 0.7}):
        annotations = judge(model, reference, _endpoint(first), out_path=out, progress=False, **settings)
        assert [r["body"]["max_tokens"] for r in first.requests[-3:]] == [settings["max_tokens"]] * 3
        assert [a["judge_settings"]["max_tokens"] for a in read_json(out)] == [settings["max_tokens"]] * 3
    assert len(first.requests) == 9 and first.requests[-1]["body"]["temperature"] == 0.7
    other_server = scripted(_prefers_good)
    annotations = judge(model, reference, _endpoint(other_server), out_path=out, max_tokens=64, temperature=0.7,
                        progress=False)
    assert len(other_server.requests) == 3 and annotations == read_json(out)
    assert {a["judge_settings"]["endpoint"] for a in annotations} == {other_server.base_url}


def test_a_subset_rerun_keeps_the_other_items(scripted, tmp_path):
    model, reference = _pairs(6)
    out = tmp_path / "annotations.json"
    server = scripted(_prefers_good)
    judge(model, reference, _endpoint(server), out_path=out, progress=False)
    judge(model[:2], reference, _endpoint(server), max_tokens=8, out_path=out, progress=False)
    saved = read_json(out)
    assert sorted(a["instruction"] for a in saved) == sorted(m["instruction"] for m in model)  # nothing dropped
    assert sorted(a["judge_settings"]["max_tokens"] for a in saved) == [8, 8, 32, 32, 32, 32]


def test_cli_judges_each_model_into_its_own_file(scripted, tmp_path, isolated_outputs, capsys):
    from alpaca_nb.cli import main
    from alpaca_nb.fileio import atomic_write_json

    server = scripted(_prefers_good)
    model, reference = _pairs(3)
    ref_path = atomic_write_json(tmp_path / "reference.json", reference)
    for name in ("model-a", "model-b"):
        path = atomic_write_json(tmp_path / f"{name}.json", [m | {"generator": name} for m in model])
        assert main(["judge", "--model-outputs", str(path), "--reference", str(ref_path), "--backend", "url",
                     "--base-url", server.base_url, "--judge-model", server.model]) == 0
        assert json.loads(capsys.readouterr().out)["annotations"] == \
            str(isolated_outputs / "05_evaluate" / f"annotations_{name}.json")
    for name in ("model-a", "model-b"):
        saved = read_json(isolated_outputs / "05_evaluate" / f"annotations_{name}.json")
        assert [a["generator_2"] for a in saved] == [name] * 3


def test_mixed_generators_are_refused(scripted):
    model, reference = _pairs(2)
    with pytest.raises(AlpacaNbError, match="mix 2 generators"):
        judge([model[0], model[1] | {"generator": "other"}], reference, _endpoint(scripted(_prefers_good)),
              progress=False)


# --- weighted verdicts: the labels' probabilities, as AlpacaEval 2's weighted judge ----------------------------

def _logprob_choice(text: str, p: dict[str, float]) -> dict:
    """A chat choice with OpenAI-style logprobs: the label token after "Output (" carries ``p`` as top_logprobs."""
    import math

    def token(t: str, alts: dict[str, float]) -> dict:
        return {"token": t, "logprob": math.log(max(alts.values())), "bytes": None,
                "top_logprobs": [{"token": k, "logprob": math.log(v), "bytes": None} for k, v in alts.items()]}

    content = [token("Output", {"Output": 0.99}), token(" (", {" (": 0.98}), token("a", p), token(")", {")": 0.99})]
    return {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text},
            "logprobs": {"content": content}}


def test_weighted_verdict_reads_the_servers_logprobs_in_both_orders(tmp_path):
    model, reference = _pairs(2)
    probs = {"a": 0.7, "b": 0.2, "A": 0.05, "Tie": 0.05}  # "A" is the same label as "a": summed, as AlpacaEval

    def answer(body: dict) -> Reply:
        return Reply(fields={"choices": [_logprob_choice("Output (a)", probs)]})

    with OpenAIStub(default=answer, model="logprob-judge") as stub:
        annotations = judge(model, reference, _endpoint(stub), order="both", progress=False)
    assert all(r["body"]["logprobs"] is True and r["body"]["top_logprobs"] == 5 for r in stub.requests)
    assert len(stub.requests) == 4  # no more requests than the text verdict: one per order
    p_a = 0.75 / 0.95
    for a in annotations:
        assert a["verdict_method"] == "weighted"
        # order 1: output_2 shown as (b) -> p(output_2) = p_b; order 2: shown as (a) -> p_a; the mean of 1 + p
        assert a["preference"] == pytest.approx(1 + ((1 - p_a) + p_a) / 2)
        assert [j["p_a"] for j in a["judgements"]] == pytest.approx([p_a, p_a])


def test_a_server_without_logprobs_falls_back_to_the_text_verdict_and_says_so(scripted):
    model, reference = _pairs(3)
    annotations = judge(model, reference, _endpoint(scripted(_prefers_good)), order="fixed", progress=False)
    parsed = [a for a in annotations if a["preference"] is not None]
    assert parsed and all(a["verdict_method"] == "text (no logprobs)" for a in annotations)
    assert {a["preference"] for a in parsed} == {2.0}  # the text verdict: GOOD (the model's) wins
    text = judge(model, reference, _endpoint(scripted(_prefers_good)), order="fixed", progress=False,
                 verdict="text")
    assert all(a["verdict_method"] == "text" for a in text)

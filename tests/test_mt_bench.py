"""Lesson 06, MT-bench: two-turn answers (history, FastChat's format, caching), single-answer grades (score parsing,
reference answers, caching), per-category/per-turn statistics and the figure, and bad input through the real CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alpaca_nb import mt_bench, mt_bench_judge, mt_bench_results
from alpaca_nb.answers import LocalModel, load_local_model
from alpaca_nb.cli import main
from alpaca_nb.fileio import read_jsonl, write_jsonl
from alpaca_nb.server import Endpoint
from tests.openai_stub import OpenAIStub, Reply


def _reply_naming_the_last_question(body: dict) -> Reply:
    """A stub chat model: it answers "reply <n>: <start of the last user message>" (n = messages it was sent)."""
    messages = body["messages"]
    return Reply(text=f"reply {len(messages)}: {messages[-1]['content'][:30]}")


def _answer_args(stub: OpenAIStub, out: Path, *extra: str) -> list[str]:
    return ["mt-bench", "answer", "--backend", "url", "--base-url", stub.base_url, "--model", "chat-model",
            "--out", str(out), *extra]


# --- answering ---------------------------------------------------------------------------------------------------

def test_turn_two_is_asked_with_turn_one_and_the_models_own_answer(tmp_path, capsys):
    questions = mt_bench.load_questions(categories=["writing", "math"], per_category=1)
    assert [q["question_id"] for q in questions] == [81, 111]  # the first of each category, in file order
    with OpenAIStub(default=_reply_naming_the_last_question) as stub:
        assert main(_answer_args(stub, tmp_path, "--category", "writing", "--category", "math",
                                 "--per-category", "1", "--workers", "1")) == 0
        sent = [r["body"]["messages"] for r in stub.requests]
    out = tmp_path / "model_answer" / "chat-model.jsonl"
    assert json.loads(capsys.readouterr().out)["answers"] == str(out)
    records = {r["question_id"]: r for r in read_jsonl(out)}
    assert sorted(records) == [81, 111]
    for q in questions:
        record = records[q["question_id"]]
        assert set(record) >= {"question_id", "answer_id", "model_id", "choices", "tstamp"}  # FastChat's model_answer
        assert record["model_id"] == "chat-model" and record["choices"][0]["index"] == 0
        a1, a2 = record["choices"][0]["turns"]
        q1, q2 = q["turns"]
        assert [{"role": "user", "content": q1}] in sent
        assert [{"role": "user", "content": q1}, {"role": "assistant", "content": a1},
                {"role": "user", "content": q2}] in sent  # turn 2 sees turn 1 and the model's own answer
        assert a1.startswith("reply 1: ") and a2 == f"reply 3: {q2[:30]}"
    assert len(sent) == 4
    table = mt_bench.answer_table(list(records.values()), questions)
    assert list(table.columns) == ["question_id", "category", "question_1", "answer_1", "question_2", "answer_2"]
    assert table.loc[1, "question_2"] == questions[1]["turns"][1]


def test_answers_are_cached_by_settings_and_fastchat_temperatures_are_a_named_option(tmp_path, capsys):
    with OpenAIStub(default=_reply_naming_the_last_question) as stub:
        args = _answer_args(stub, tmp_path, "--category", "writing", "--category", "math", "--per-category", "1")
        assert main(args) == 0
        assert main(args) == 0  # the same settings: nothing asked again
        assert len(stub.requests) == 4
        assert main(args + ["--max-new-tokens", "64"]) == 0  # another length: answered again
        assert len(stub.requests) == 8 and {r["body"]["max_tokens"] for r in stub.requests[4:]} == {64}
        assert {r["body"]["temperature"] for r in stub.requests} == {0.0}  # greedy by default
        assert main(args + ["--max-new-tokens", "64", "--temperature", "fastchat"]) == 0
        by_question = {r["body"]["messages"][0]["content"][:20]: r["body"]["temperature"] for r in stub.requests[8:]}
    questions = mt_bench.load_questions(categories=["writing", "math"], per_category=1)
    # writing is sampled at 0.7 and asked again; math stays at 0 (greedy), so its answer is reused
    assert by_question == {questions[0]["turns"][0][:20]: 0.7}
    records = read_jsonl(tmp_path / "model_answer" / "chat-model.jsonl")
    assert {r["answer_settings"]["temperature"] for r in records} == {0.7, 0.0}
    assert main(["mt-bench", "answer", "--out", str(tmp_path), "--model-id", "chat-model", "--per-category", "1",
                 "--category", "writing"]) == 2  # the embedded model under another model's answers: refused
    assert "one file per model" in capsys.readouterr().err


def test_the_local_model_renders_the_two_turn_history_with_its_chat_template(model_dir, tmp_path):
    real = load_local_model(model_dir)
    seen: list[str] = []

    class RecordingTokenizer:  # the real tokenizer; records every prompt text it is asked to tokenize
        def __call__(self, texts, **kwargs):
            if not kwargs:
                seen.extend(texts)
            return real.tokenizer(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(real.tokenizer, name)

    lm = LocalModel(real.model, RecordingTokenizer(), real.name, real.path)
    questions = mt_bench.load_questions(categories=["writing", "math"], per_category=1)
    records = mt_bench.answer_questions(questions, model=lm, out_path=tmp_path / "a.jsonl", max_new_tokens=4,
                                        progress=False)
    for q, record in zip(questions, records):
        a1, _ = record["choices"][0]["turns"]
        history = [{"role": "user", "content": q["turns"][0]}, {"role": "assistant", "content": a1},
                   {"role": "user", "content": q["turns"][1]}]
        assert real.tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True) in seen
    assert len(seen) == 4 and records[0]["answer_settings"]["max_new_tokens"] == 4


# --- grading -------------------------------------------------------------------------------------------------------

SCORES = [
    ("Helpful and correct.\nRating: [[7]]", 7.0), ("[[7.5]]", 7.5), ("Rating: [[ 9 ]]", 9.0), ("[[8/10]]", 8.0),
    ("Rating: 7", 7.0), ("rating: 6/10", 6.0), ("**Score:** 4", 4.0), ("Score: 9 out of 10", 9.0),
    ("I would give it 7/10.", 7.0), ("Overall 3 out of 10", 3.0), ("Final: [5]", 5.0), ("10/10", 10.0),
    ("Rating: [[6]] though some would say 9/10", 6.0),  # the formal [[N]] decides
    # no usable score: null, never guessed
    ("", None), (None, None), ("The answer is good.", None), ("Rating: [[N]]", None), ("[[12]]", None),
    ("Rating: [[0]]", None), ("Rating: 3/5", None), ("[[7]] ... on reflection [[4]]", None), ("17/100", None),
    ("Rating: -3", None), ("Score: 11", None),
]


@pytest.mark.parametrize("reply, expected", SCORES)
def test_parse_score(reply, expected):
    score, note = mt_bench_judge.parse_score(reply)
    assert score == expected
    assert (note is None) == (expected is not None)


def _answers(question_ids: list[int], model: str = "my-model") -> list[dict]:
    return [{"question_id": qid, "answer_id": str(qid), "model_id": model,
             "choices": [{"index": 0, "turns": [f"first answer {qid}", f"second answer {qid}"]}], "tstamp": 0}
            for qid in question_ids]


def test_grades_are_parsed_from_the_reply_and_the_reference_is_shown_for_math_only(tmp_path):
    questions = mt_bench.load_questions()
    references = mt_bench.load_references() | {81: ["WRITING REFERENCE 1", "WRITING REFERENCE 2"]}
    script = ["Fine. Rating: [[7]]", "Rating: 6", "I'd give it 8/10.", "[[7.5]]", "It is a good answer.", "[[11]]"]
    with OpenAIStub([Reply(text=t) for t in script], model="judge-model") as stub:
        judgments = mt_bench_judge.grade_answers(_answers([81, 111, 91]), questions, Endpoint(stub.base_url,
                                                 stub.model, "none"), references, out_path=tmp_path / "j.jsonl",
                                                 progress=False)
        sent = [r["body"]["messages"] for r in stub.requests]
    assert [(j["question_id"], j["turn"], j["score"]) for j in judgments] == [
        (81, 1, 7.0), (81, 2, 6.0), (111, 1, 8.0), (111, 2, 7.5), (91, 1, None), (91, 2, None)]
    assert [j["score_note"] for j in judgments[4:]] == ["no score", "score 11 outside 1-10"]
    assert read_jsonl(tmp_path / "j.jsonl") == sorted(judgments, key=lambda j: (j["question_id"], j["turn"]))
    for j, messages in zip(judgments, sent):
        assert set(j) >= {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
        assert messages[1]["content"] == j["user_prompt"] and j["judge"][0] == "judge-model"
    writing_1, writing_2, math_1, math_2 = (m[1]["content"] for m in sent[:4])
    ref_1, ref_2 = references[111]
    assert ref_1 in math_1 and ref_2 not in math_1  # turn 1: the first reference answer
    assert ref_1 in math_2 and ref_2 in math_2  # turn 2: both
    assert "Reference" not in writing_1 + writing_2 and "first answer 81" in writing_1  # writing: never referenced
    q81 = next(q for q in questions if q["question_id"] == 81)
    for text in (*q81["turns"], "first answer 81", "second answer 81"):  # turn 2 is graded on the whole conversation
        assert text in writing_2
    assert "second question" in sent[1][0]["content"] and "second question" not in sent[0][0]["content"]


def test_grades_are_cached_by_settings(tmp_path):
    questions = mt_bench.load_questions()
    out = tmp_path / "j.jsonl"
    with OpenAIStub(default=lambda body: Reply(text="Rating: [[5]]")) as stub:
        endpoint = Endpoint(stub.base_url, stub.model, "none")
        mt_bench_judge.grade_answers(_answers([81, 82]), questions, endpoint, out_path=out, progress=False)
        mt_bench_judge.grade_answers(_answers([81, 82]), questions, endpoint, out_path=out, progress=False)
        assert len(stub.requests) == 4  # nothing graded twice
        changed = _answers([81, 82])
        changed[1]["choices"][0]["turns"][1] = "a new second answer"
        mt_bench_judge.grade_answers(changed, questions, endpoint, out_path=out, progress=False)
        assert len(stub.requests) == 5  # only the changed turn
        mt_bench_judge.grade_answers(_answers([81]), questions, endpoint, max_tokens=64, out_path=out, progress=False)
        assert len(stub.requests) == 7 and stub.requests[-1]["body"]["max_tokens"] == 64
    assert len(read_jsonl(out)) == 4  # question 82's grades kept


# --- results ---------------------------------------------------------------------------------------------------------

def _judgment(qid: int, category: str, turn: int, score, model: str = "m", judge: str = "gpt-4") -> dict:
    return {"question_id": qid, "model": model, "judge": [judge, "p"], "user_prompt": "", "judgment": "",
            "score": score, "turn": turn, "tstamp": 0, "category": category, "judge_settings": {"model": judge}}


def _sem(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def test_scores_per_category_and_turn_with_standard_errors_and_the_figure(tmp_path):
    judgments = [_judgment(81, "writing", 1, 2), _judgment(82, "writing", 1, 4), _judgment(83, "writing", 1, 9),
                 _judgment(81, "writing", 2, 8), _judgment(82, "writing", 2, None), _judgment(83, "writing", 2, -1),
                 _judgment(111, "math", 1, 1), _judgment(111, "math", 2, 5), _judgment(112, "math", 2, 6)]
    path = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    result = mt_bench_results.show(path, tmp_path / "figure")
    table = result["table"].set_index(["category", "turn"])
    assert table.loc[("writing", 1), "mean"] == pytest.approx(5.0)
    assert table.loc[("writing", 1), "standard_error"] == pytest.approx(_sem([2, 4, 9]))
    assert (table.loc[("writing", 2), "n"], table.loc[("writing", 2), "n_null"]) == (1, 2)  # FastChat's -1 is null
    assert table.loc[("math", 2), "standard_error"] == pytest.approx(_sem([5, 6]))
    assert table.loc[("overall", "both"), "mean"] == pytest.approx(sum([2, 4, 9, 8, 1, 5, 6]) / 7)
    assert table.loc[("overall", 1), "standard_error"] == pytest.approx(_sem([2, 4, 9, 1]))
    model = result["models"]["m"]
    assert model["turn_2"]["mean"] == pytest.approx(19 / 3) and model["turn_2"]["n_null"] == 2
    assert model["categories"]["math"]["standard_error"] == pytest.approx(_sem([1, 5, 6]))
    assert list(model["categories"]) == ["writing", "math"]  # the MT-bench paper's order
    for name in ("mt_bench_categories.png", "mt_bench_categories.svg", "mt_bench_scores.json"):
        assert (tmp_path / "figure" / name).stat().st_size > 1000 or name.endswith(".json")
    saved = json.loads((tmp_path / "figure" / "mt_bench_scores.json").read_text())
    assert saved["models"]["m"]["overall"]["n"] == 7
    assert saved["caveats"] == ["small sample: 3 scores in a category (< 10)"]


def test_the_figure_says_when_the_judge_is_the_embedded_model():
    embedded = [_judgment(q, c, t, 5, judge="/cache/models/SmolLM2-135M-Instruct")
                for q, c in ((81, "writing"), (111, "math")) for t in (1, 2)]
    assert any("NOT evidence" in note for note in mt_bench_results.caveats(embedded))
    assert not any("NOT evidence" in note for note in mt_bench_results.caveats(
        [j | {"judge_settings": {"model": "gpt-4"}} for j in embedded]))


def test_answer_judge_show_through_the_cli(tmp_path, capsys):
    with OpenAIStub(default=_reply_naming_the_last_question) as answerer:
        assert main(_answer_args(answerer, tmp_path, "--per-category", "1", "--category", "coding")) == 0
    answers = tmp_path / "model_answer" / "chat-model.jsonl"
    with OpenAIStub(default=lambda body: Reply(text="Rating: [[6]]"), model="judge-model") as judge:
        assert main(["mt-bench", "judge", "--answers", str(answers), "--backend", "url", "--base-url",
                     judge.base_url, "--judge-model", "judge-model", "--max-tokens", "16"]) == 0
        assert "Reference answer" in judge.requests[0]["body"]["messages"][1]["content"]  # coding: referenced
    capsys.readouterr()
    judgments = tmp_path / "model_judgment" / "judge-model_single.jsonl"
    assert main(["mt-bench", "show", "--judgments", str(judgments)]) == 0
    printed = capsys.readouterr().out
    assert "coding" in printed and "6.00" in printed
    assert (tmp_path / "model_judgment" / "mt_bench_categories.png").exists()


# --- bad input: the real CLI exits 2 with one line naming the file and line; nothing already there is lost ----------

def test_bad_input_names_the_file_and_line(tmp_path, capsys):
    good = _judgment(81, "writing", 1, 5)
    cases = []
    bad_json = tmp_path / "bad_json.jsonl"
    bad_json.write_text(json.dumps(good) + "\n{not json\n")
    cases.append((["mt-bench", "show", "--judgments", str(bad_json)], f"{bad_json}: line 2: malformed JSON"))
    bad_turn = tmp_path / "bad_turn.jsonl"
    bad_turn.write_text(json.dumps(good) + "\n\n" + json.dumps(good | {"turn": 3}) + "\n")
    cases.append((["mt-bench", "show", "--judgments", str(bad_turn)], f"{bad_turn}: line 3: not a single-grading"))
    bad_score = tmp_path / "bad_score.jsonl"
    bad_score.write_text(json.dumps(good | {"score": "seven"}) + "\n")
    cases.append((["mt-bench", "show", "--judgments", str(bad_score)], f"{bad_score}: line 1: 'score' 'seven'"))
    bad_answers = tmp_path / "answers.jsonl"
    write_jsonl(bad_answers, _answers([81]) + [{"question_id": 82, "model_id": "m", "choices": []}])
    judge_args = ["--backend", "url", "--base-url", "http://127.0.0.1:9/v1", "--judge-model", "j"]
    cases.append((["mt-bench", "judge", "--answers", str(bad_answers), *judge_args],
                  f"{bad_answers}: line 2: not a FastChat answer"))
    unknown = tmp_path / "unknown.jsonl"
    write_jsonl(unknown, _answers([999]))
    cases.append((["mt-bench", "judge", "--answers", str(unknown), *judge_args], "question 999 has no question"))
    cases.append((["mt-bench", "answer", "--out", str(tmp_path), "--questions", "arena_hard"],
                  "unknown question set 'arena_hard'; choose one of mt_bench, vicuna_bench"))
    cases.append((["mt-bench", "answer", "--out", str(tmp_path), "--category", "poetry"],
                  "unknown category 'poetry'"))
    bad_questions = tmp_path / "questions.jsonl"
    write_jsonl(bad_questions, [{"question_id": 1, "category": "x", "turns": ["q"]},
                                {"question_id": 2, "category": "x", "turns": []}])
    cases.append((["mt-bench", "answer", "--out", str(tmp_path), "--questions", str(bad_questions)],
                  f"{bad_questions}: line 2: 'turns' must be a list of 1 or 2"))
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("alpaca-nb mt-bench: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not (tmp_path / "model_answer").exists() and not (tmp_path / "model_judgment").exists()

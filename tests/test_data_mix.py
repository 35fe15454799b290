"""Lesson 06 data mixing (Koala): PATH:WEIGHT entries, seeded weighted draws, realised counts in the summary."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from alpaca_nb import cli, sft
from alpaca_nb.conversations import Conversation
from alpaca_nb.data_mix import (DataSource, allocate, describe_data_mix, load_training_data, mix_sources,
                                parse_data_spec, parse_data_specs)
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import read_json
from alpaca_nb.train_config import resolve_config

CONVERSATION = {"id": "c", "conversations": [{"from": "human", "value": "Hi there"},
                                             {"from": "gpt", "value": "Hello! How can I help?"}]}


def alpaca_rows(n: int, tag: str) -> list[dict]:
    return [{"instruction": f"{tag} task {i}", "input": "", "output": f"{tag} answer {i}"} for i in range(n)]


@pytest.mark.parametrize("spec,expected", [
    ("a.json", DataSource("a.json")),
    ("a.json:0.7", DataSource("a.json", 0.7)),
    ("data/b.jsonl:3", DataSource("data/b.jsonl", 3.0)),
    ("C:\\data\\a.json", DataSource("C:\\data\\a.json")),          # a Windows drive is not a weight
    ("C:/data/a.json", DataSource("C:/data/a.json")),
    ("C:\\data\\a.json:0.25", DataSource("C:\\data\\a.json", 0.25)),
    ("runs:v2/a.json", DataSource("runs:v2/a.json")),              # a colon inside a folder name
])
def test_only_a_final_number_is_a_weight(spec, expected):
    assert parse_data_spec(spec) == expected


def test_an_existing_file_with_a_colon_in_its_name_is_a_path(tmp_path):
    odd = tmp_path / "notes:v2"
    odd.write_text("[]")
    assert parse_data_spec(str(odd)) == DataSource(str(odd))


@pytest.mark.parametrize("spec,says", [
    ("a.json:-1", "weight must be a positive number"),
    ("a.json:0", "weight must be a positive number"),
    ("a.json:inf", "weight must be a positive number"),
    ("a.json:x", "'x' after the last ':' is not a weight"),
    ("a.json:", "'' after the last ':' is not a weight"),
])
def test_bad_weights_are_refused_by_the_cli_before_any_loading(spec, says, tmp_path, capsys):
    with pytest.raises(AlpacaNbError, match=says):
        parse_data_spec(spec)
    with pytest.raises(AlpacaNbError, match=says):  # TrainConfig entries too, before anything is loaded
        resolve_config("cpu-demo", data=[spec], output_dir=str(tmp_path / "out"))
    assert cli.main(["train", "--data", spec, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"alpaca-nb train: error: --data {spec!r}: ") and says in err and "\n" not in err


def test_weights_for_all_or_none_and_each_file_once():
    with pytest.raises(AlpacaNbError, match=r"give a weight to every file or to none \(no weight: b.json\)"):
        parse_data_specs(["a.json:0.5", "b.json"])
    with pytest.raises(AlpacaNbError, match="a.json given more than once"):
        parse_data_specs(["a.json:0.5", "a.json:0.5"])
    assert [s.weight for s in parse_data_specs(["a.json", "b.json"])] == [None, None]


def test_allocation_sums_to_the_total_and_follows_the_weights():
    assert allocate([0.7, 0.3], 1000) == [700, 300]
    assert allocate([1, 1, 1], 10) == [4, 3, 3]
    assert sum(allocate([0.2, 0.5, 0.3], 7)) == 7


def test_weights_are_realised_on_1000_draws_and_the_seed_fixes_the_draw():
    big = [(DataSource("a", 0.7), alpaca_rows(800, "a")), (DataSource("b", 0.3), alpaca_rows(600, "b"))]
    mixed, report = mix_sources(big, mix_size=1000, seed=7)
    by_source = Counter(r["instruction"].split()[0] for r in mixed)
    assert len(mixed) == 1000
    assert abs(by_source["a"] / 1000 - 0.7) <= 0.05 and abs(by_source["b"] / 1000 - 0.3) <= 0.05
    assert {p: r["drawn"] for p, r in report.items()} == {"a": by_source["a"], "b": by_source["b"]}
    assert not any(r["with_replacement"] for r in report.values())
    assert len({r["instruction"] for r in mixed}) == 1000  # no record twice when every source is big enough
    assert mix_sources(big, mix_size=1000, seed=7)[0] == mixed
    assert mix_sources(big, mix_size=1000, seed=8)[0] != mixed
    # a source smaller than its share: every record repeats, and the report says so
    small = [(DataSource("a", 0.5), alpaca_rows(800, "a")), (DataSource("b", 0.5), alpaca_rows(50, "b"))]
    mixed, report = mix_sources(small, mix_size=1000, seed=7)
    assert report["b"]["drawn"] == 500 and report["b"]["with_replacement"] is True
    assert set(Counter(r["instruction"] for r in mixed if r["instruction"].startswith("b")).values()) == {10}
    assert "b: 500 of 50 records (weight 0.5 -> 50%; 500 alpaca); smaller than its share: records repeat" \
        in describe_data_mix(report)


def test_plain_paths_keep_their_meaning(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(alpaca_rows(3, "a")))
    b.write_text(json.dumps(alpaca_rows(2, "b")))
    records, report = load_training_data([str(a), str(b)])
    assert [r.instruction for r in records] == [f"a task {i}" for i in range(3)] + [f"b task {i}" for i in range(2)]
    assert [(r["weight"], r["drawn"]) for r in report.values()] == [(None, 3), (None, 2)]
    with pytest.raises(AlpacaNbError, match="--mix-size needs weighted sources"):
        load_training_data([str(a)], mix_size=4)


def test_alpaca_records_and_conversations_mix_in_one_training_set(model_dir, mirror, tmp_path):
    from transformers import AutoTokenizer

    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps(alpaca_rows(30, "t")))
    dummy = mirror / "fastchat" / "data_dummy_conversation.json"
    records, report = load_training_data([f"{teacher}:0.5", f"{dummy}:0.5"], mix_size=40, seed=3)
    assert report[str(teacher)]["kinds"] == {"alpaca": 20, "conversation": 0}
    assert report[str(dummy)]["kinds"] == {"alpaca": 0, "conversation": 20}
    assert sum(isinstance(r, Conversation) for r in records) == 20
    examples = sft.preprocess(records, AutoTokenizer.from_pretrained(model_dir), max_length=512)
    assert examples.conversation_examples == 20 and len(examples) == 40
    assert examples.boundary_by_offsets + examples.boundary_by_prefix == 20  # the Alpaca ones


def test_cli_trains_one_step_on_a_weighted_mix_and_the_summary_keeps_the_counts(model_dir, tmp_path, capsys):
    """The real CLI, a tiny LLaMA with the embedded tokenizer: --data a:0.7 --data b:0.3 --mix-size 10."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    tiny = tmp_path / "tiny"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(tiny)
    tok.save_pretrained(tiny)
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    a.write_text(json.dumps(alpaca_rows(20, "a")))
    b.write_text("\n".join(json.dumps(CONVERSATION | {"id": f"c{i}"}) for i in range(2)) + "\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", f"{a}:0.7", "--data", f"{b}:0.3", "--mix-size", "10", "--model", str(tiny),
                     "--output-dir", str(out), "--max-steps", "1", "--micro-batch-size", "2",
                     "--effective-batch-size", "2", "--max-length", "64"]) == 0
    summary = read_json(out / "train_summary.json")
    assert summary["data_mix"] == {
        str(a): {"weight": 0.7, "share": 0.7, "available": 20, "drawn": 7, "with_replacement": False,
                 "kinds": {"alpaca": 7, "conversation": 0}},
        str(b): {"weight": 0.3, "share": 0.3, "available": 2, "drawn": 3, "with_replacement": True,
                 "kinds": {"alpaca": 0, "conversation": 3}}}
    assert summary["num_examples"] == 10 and summary["conversation_examples"] == 3
    assert '"data_mix"' in capsys.readouterr().out  # the printed summary shows it too
    assert read_json(out / "resolved_config.json")["data"] == [f"{a}:0.7", f"{b}:0.3"]

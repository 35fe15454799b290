"""Lesson 06 data: ShareGPT conversations — the assistant-only mask, splitting at turn boundaries, bad input."""
from __future__ import annotations

import json
import re

import pytest

from alpaca_nb import cli, sft
from alpaca_nb.conversations import (IGNORE_INDEX, Conversation, ConversationCounts, VICUNA_SYSTEM,
                                     conversation_examples, conversation_from_row, load_dummy_conversations,
                                     tokenize_conversation)
from alpaca_nb.errors import AlpacaNbError

ROW = {"id": "three-turns", "conversations": [
    {"from": "system", "value": "You answer in one short sentence."},
    {"from": "human", "value": "What is the capital of France?"},
    {"from": "gpt", "value": "Paris is the capital of France."},
    {"from": "human", "value": "And of Italy?"},
    {"from": "gpt", "value": " Rome, since 1871."},  # a leading space: may merge with the header's last token
    {"from": "human", "value": "Thanks!"},
    {"from": "gpt", "value": "You're welcome!\n"},
]}


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def chat_ids(tokenizer, messages, generation_prompt=False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_chat_template_mask_is_exact_token_by_token(tokenizer):
    """Independent of the offsets the implementation uses: the expected mask comes from the token counts of
    the chat template's own tokenised prefixes (messages before each assistant turn + its header, and through
    it): trained = that turn's tokens up to and including its first <|im_end|>, nothing else."""
    conv = conversation_from_row(ROW, "row")
    messages = [{"role": {"system": "system", "human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
                for t in ROW["conversations"]]
    full = chat_ids(tokenizer, messages)
    expected = [False] * len(full)
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(chat_ids(tokenizer, messages[:k], generation_prompt=True))
            end = full.index(tokenizer.convert_tokens_to_ids("<|im_end|>"), start) + 1
            assert end <= len(chat_ids(tokenizer, messages[:k + 1]))
            expected[start:end] = [True] * (end - start)
            assert tokenizer.decode(full[start:end]) == m["content"] + "<|im_end|>"
    example = tokenize_conversation(conv, tokenizer, "auto")
    assert example["input_ids"] == full
    trained = [label != IGNORE_INDEX for label in example["labels"]]
    assert trained == expected
    assert all(label in (IGNORE_INDEX, tid) for tid, label in zip(example["input_ids"], example["labels"]))
    rows = sft.label_mask_table(example, tokenizer)  # the same table as for Alpaca records
    assert [r["trained"] for r in rows] == expected and "".join(r["token"] for r in rows) == tokenizer.decode(full)


def test_vicuna_template_trains_each_reply_and_its_eos_only(tokenizer):
    """FastChat's vicuna_v1.1 rendering built by hand; a token merging the separator's space with the reply's
    first word is trained (it holds reply characters), the rest of the prompt never is."""
    conv = conversation_from_row({"conversations": ROW["conversations"][1:]}, "row")  # no system turn
    eos = tokenizer.eos_token
    text = (f"{VICUNA_SYSTEM} USER: What is the capital of France? ASSISTANT: Paris is the capital of France.{eos}"
            f"USER: And of Italy? ASSISTANT:  Rome, since 1871.{eos}USER: Thanks! ASSISTANT: You're welcome!\n{eos}")
    example = tokenize_conversation(conv, tokenizer, "vicuna_v1.1")
    assert example["input_ids"] == tokenizer(text)["input_ids"]
    runs, current = [], None
    for tid, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE_INDEX:
            current = current if current is not None else []
            current.append(tid)
        elif current is not None:
            runs.append(tokenizer.decode(current))
            current = None
    runs += [tokenizer.decode(current)] if current else []
    # " Paris": the separator's space merged into the reply's first token; "  Rome": the separator's space is a
    # token of its own (masked) and the reply's " Rome" is trained
    assert runs == [f" Paris is the capital of France.{eos}", f" Rome, since 1871.{eos}", f" You're welcome!\n{eos}"]
    assert "USER" not in "".join(runs) and "ASSISTANT" not in "".join(runs)


def test_long_conversations_split_at_turn_boundaries(tokenizer):
    """Three pairs, room for two: two pieces, each the system turn + whole pairs, rendered exactly as the chat
    template renders those messages; nothing is cut mid-turn."""
    conv = conversation_from_row(ROW, "row")
    one_pair = len(tokenize_conversation(conv, tokenizer, pairs=conv.pairs[:1])["input_ids"])
    two_pairs = len(tokenize_conversation(conv, tokenizer, pairs=conv.pairs[:2])["input_ids"])
    whole = len(tokenize_conversation(conv, tokenizer)["input_ids"])
    assert one_pair < two_pairs < whole
    counts = ConversationCounts()
    pieces = conversation_examples(conv, tokenizer, max_length=two_pairs, counts=counts)
    assert (counts.examples, counts.split, counts.dropped, counts.truncated) == (2, 1, 0, 0)
    system = [{"role": "system", "content": ROW["conversations"][0]["value"]}]
    for piece, pairs in zip(pieces, (conv.pairs[:2], conv.pairs[2:])):
        messages = system + [m for h, g in pairs for m in ({"role": "user", "content": h},
                                                           {"role": "assistant", "content": g})]
        assert len(piece["input_ids"]) <= two_pairs
        assert tokenizer.decode(piece["input_ids"]) == tokenizer.apply_chat_template(messages, tokenize=False)
        assert sum(label != IGNORE_INDEX for label in piece["labels"]) > 0
    assert len(conversation_examples(conv, tokenizer, max_length=whole)) == 1  # fits: never split


def test_a_turn_pair_longer_than_max_length_is_dropped_unless_truncation_is_asked_for(tokenizer):
    long_reply = " ".join(["word"] * 200)
    conv = conversation_from_row({"conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Say word 200 times."}, {"from": "gpt", "value": long_reply}]}, "row")
    counts = ConversationCounts()
    kept = conversation_examples(conv, tokenizer, max_length=80, counts=counts)
    assert len(kept) == 1 and (counts.dropped, counts.truncated) == (1, 0)
    assert "word word" not in tokenizer.decode(kept[0]["input_ids"])
    counts = ConversationCounts()
    kept = conversation_examples(conv, tokenizer, max_length=80, truncate_long_turns=True, counts=counts)
    assert len(kept) == 2 and (counts.dropped, counts.truncated) == (0, 1)
    assert len(kept[1]["input_ids"]) == 80 and "word word" in tokenizer.decode(kept[1]["input_ids"])
    examples = sft.preprocess([conv], tokenizer, max_length=80)  # the counters the train summary reports
    assert (len(examples), examples.dropped_examples, examples.conversation_examples) == (1, 1, 1)
    examples = sft.preprocess([conv], tokenizer, max_length=80, truncate_long_turns=True)
    assert (len(examples), examples.truncated_examples, examples.split_conversations) == (2, 1, 1)


def test_a_file_may_hold_alpaca_records_and_conversations(tokenizer, tmp_path):
    path = tmp_path / "mixed.jsonl"
    alpaca = {"instruction": "Name a fruit.", "input": "", "output": "Apple."}
    path.write_text(json.dumps(alpaca) + "\n\n" + json.dumps(ROW) + "\n")
    records = sft.load_records([path])
    assert [type(r).__name__ for r in records] == ["Example", "Conversation"]
    assert isinstance(records[1], Conversation) and records[1].system == ROW["conversations"][0]["value"]
    examples = sft.preprocess(records, tokenizer, max_length=256)
    assert len(examples) == 2 and examples.conversation_examples == 1
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(AlpacaNbError, match=r"mixed.jsonl: line 2: missing or empty 'output'"):
        sft.load_records([path])


def turns(*pairs):
    return [{"from": role, "value": value} for role, value in pairs]


BAD = [  # (conversation turns, where the error points, what it says)
    (turns(("human", "Hi"), ("human", "Hello?"), ("gpt", "Hi!")), "conversations[1]",
     r"roles must alternate human, gpt.*a 'human' turn comes where a 'gpt' turn belongs"),
    (turns(("human", "Hi"), ("gpt", "  ")), "conversations[1]", "empty gpt turn"),
    (turns(("human", "Hi"), ("bot", "Hello")), "conversations[1]", "unknown role 'bot'"),
    (turns(("human", "Hi"), ("gpt", "Hello"), ("system", "Be nice.")), "conversations[2]",
     "'system' turn may only come first"),
    (turns(("human", "Hi")), "", "no 'gpt' turn"),
]


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "json"])
@pytest.mark.parametrize("bad_turns,where,says", BAD, ids=["alternation", "empty", "role", "system", "no-gpt"])
def test_bad_conversations_name_the_record_through_the_cli(jsonl, bad_turns, where, says, tmp_path, capsys):
    """The second record is bad: the real CLI exits 2 with one line naming file:line (JSONL) or record index."""
    rows = [ROW, {"id": "bad", "conversations": bad_turns}]
    path = tmp_path / ("data.jsonl" if jsonl else "data.json")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows, indent=1))
    assert cli.main(["train", "--data", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alpaca-nb train: error: ") and "\n" not in err
    record = "line 2" if jsonl else "record 1"
    assert f"{path}: {record}: {where + ': ' if where else ''}" in err
    assert re.search(says, err)
    assert not (tmp_path / "out").exists()


def test_vicuna_7b_preset_is_fastchats_recipe(tmp_path, capsys):
    """FastChat's "Fine-tuning Vicuna-7B with Local GPUs": 4 GPUs x micro-batch 2 x accumulation 16 = 128,
    lr 2e-5, 3 epochs, 2048 tokens, weight decay 0, warmup 3%, cosine, gradient checkpointing; and
    --estimate-memory sizes it under FSDP on 4 GPUs without loading anything."""
    from alpaca_nb.train import training_arguments
    from alpaca_nb.train_config import resolve_config

    config = resolve_config("vicuna-7b", data=["sharegpt.json"], output_dir=str(tmp_path))
    args = training_arguments(config, 1, "LlamaDecoderLayer")  # (FSDP's own wrapping: tests/test_train.py)
    assert (args.per_device_train_batch_size, config.accumulation_steps(4), config.max_length) == (2, 16, 2048)
    assert (args.learning_rate, args.num_train_epochs, args.weight_decay, args.warmup_steps) == (2e-5, 3, 0.0, 0.03)
    assert (args.lr_scheduler_type.value, args.train_sampling_strategy, args.save_steps) == ("cosine", "random", 1200)
    assert config.gradient_checkpointing is True and config.conversation_template == "auto"
    assert cli.main(["train", "--preset", "vicuna-7b", "--mode", "fsdp", "--nproc", "4", "--model", "llama-7b",
                     "--estimate-memory"]) == 0
    assert "fsdp on 4 GPU(s)" in (out := capsys.readouterr().out) and "2 x 2048 tokens" in out
    assert "gradient checkpointing on" in out


def test_fastchats_dummy_conversations_load_and_fit_the_embedded_model(mirror, tokenizer):
    conversations = load_dummy_conversations()
    assert len(conversations) == 500 and all(isinstance(c, Conversation) for c in conversations)
    examples = sft.preprocess(conversations, tokenizer, max_length=2048)
    assert (len(examples), examples.split_conversations, examples.dropped_examples) == (500, 0, 0)

"""Held-out measurement: teacher-forced loss with the training mask, greedy-answer metrics, cache, CLI."""
from __future__ import annotations

import json
import math
import os

import pytest

from alpaca_nb import heldout
from alpaca_nb.answers import load_local_model
from alpaca_nb.cli import main
from alpaca_nb.sft import IGNORE_INDEX, format_prompt, preprocess


@pytest.fixture(scope="module")
def tiny_model(model_dir, tmp_path_factory):
    """A 2-layer random LLaMA with the embedded model's tokenizer (fast, and its numbers are its own)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_loss_masks_the_prompt_exactly_and_matches_per_example_losses(tiny_model):
    lm = load_local_model(tiny_model)
    tasks = heldout.heldout_tasks(6, seed=1)
    result = heldout.teacher_forced_loss(lm, tasks, max_length=2048, batch_size=4, bf16=False, progress=False)
    # known count: the tokens of prompt + reference (one text, as stanford_alpaca) after the prompt's own, + EOS
    prompts = [format_prompt(t.instruction, t.input) for t in tasks]
    expected_tokens = sum(len(lm.tokenizer(p + t.output)["input_ids"]) - len(lm.tokenizer(p)["input_ids"]) + 1
                          for p, t in zip(prompts, tasks))
    assert result["n_tokens"] == expected_tokens and result["n_scored"] == 6
    # the same number one example at a time, through the model's own (mean) loss
    import torch

    total = count = 0
    for ex in preprocess(tasks, lm.tokenizer, 2048):
        n = sum(label != IGNORE_INDEX for label in ex["labels"])
        with torch.no_grad():
            loss = lm.model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]])).loss
        total, count = total + float(loss) * n, count + n
    assert result["loss"] == pytest.approx(total / count, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"])) and result["precision"] == "fp32"
    fast = heldout.teacher_forced_loss(lm, tasks, max_length=2048, batch_size=4, bf16=True, progress=False)
    assert fast["precision"] == "bf16" and fast["n_tokens"] == expected_tokens
    assert fast["loss"] == pytest.approx(result["loss"], rel=0.02)  # bf16 autocast: the same number, roughly


def test_answer_metrics_count_leaks_stops_words_and_rouge():
    answers = ["Dear Sam, see you at noon.", "Sure.\n\n### Instruction:\nWrite more", "ok ### response: again"]
    refs = ["Dear Sam, see you at noon.", "Sure thing", "fine"]
    m = heldout.answer_metrics(answers, refs, [True, False, True])
    assert (m["n_answers"], m["template_leaks"], m["clean_stops"]) == (3, 2, 2)
    assert m["mean_words"] == pytest.approx((6 + 5 + 4) / 3) and m["reference_mean_words"] == pytest.approx(9 / 3)
    assert 1 / 3 <= m["rouge_l"] < 1


def test_measure_is_cached_by_weights_and_settings(tiny_model, tmp_path):
    settings = dict(num_tasks=4, num_answers=2, max_new_tokens=4, max_length=256, progress=False)
    first = heldout.measure_cached(tiny_model, tmp_path, "after", **settings)
    assert set(heldout.METRIC_KEYS) <= set(first) and first["n_tasks"] == 4 and first["n_answers"] == 2
    assert all(len(a["answer"]) >= 0 and isinstance(a["stopped"], bool) for a in first["answers"])
    assert heldout.measure_cached(tiny_model, tmp_path, "after", **settings)["seconds"] == first["seconds"]
    changed = heldout.measure_cached(tiny_model, tmp_path, "after", **settings | {"max_new_tokens": 5})
    assert changed["seconds"] != first["seconds"]
    weights = next(tiny_model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    again = heldout.measure_cached(tiny_model, tmp_path, "after", **settings | {"max_new_tokens": 5})
    assert again["seconds"] != changed["seconds"]  # new weights: measured again


def test_cli_writes_before_after_json_answers_and_figure(tiny_model, tmp_path, capsys):
    out = tmp_path / "h"
    assert main(["heldout", "--model", str(tiny_model), "--baseline", str(tiny_model), "--out", str(out),
                 "--num-tasks", "3", "--num-answers", "2", "--max-new-tokens", "3", "--max-length", "256"]) == 0
    results = json.loads((out / "heldout.json").read_text())
    assert list(results) == ["before", "after"]
    assert all(set(heldout.METRIC_KEYS) <= set(r) for r in results.values())
    assert results["before"]["loss"] == pytest.approx(results["after"]["loss"])  # same model twice
    rows = json.loads((out / "heldout_answers.json").read_text())
    assert len(rows) == 2 and {"instruction", "reference", "before", "after"} <= set(rows[0])
    assert (out / "heldout.png").stat().st_size and (out / "heldout.svg").stat().st_size
    printed = json.loads(capsys.readouterr().out)
    assert printed["after"]["n_answers"] == 2


def test_heldout_checks_both_models_before_measuring_either(tmp_path, capsys):
    import time

    empty = tmp_path / "empty-config"
    empty.mkdir()
    (empty / "config.json").write_text("")
    for bad, expected in ((tmp_path / "nonexistent", "does not exist"), (empty, "empty or not a JSON object")):
        start = time.perf_counter()
        assert main(["heldout", "--model", str(bad), "--out", str(tmp_path / "h")]) == 2  # baseline: embedded
        err = capsys.readouterr().err
        assert str(bad) in err and expected in err and time.perf_counter() - start < 5
        assert not (tmp_path / "h" / "heldout.json").exists()


def test_the_loss_panel_says_how_many_tasks_were_scored():
    import matplotlib

    matplotlib.use("Agg")
    result = {"loss": 1.4, "n_tasks": 252, "n_scored": 242, "n_answers": 4, "template_leaks": 0, "clean_stops": 1,
              "rouge_l": 0.2, "settings": {"max_length": 256}}
    fig = heldout.plot_heldout({"before": result | {"loss": 1.7}, "after": result})
    title = fig.axes[0].get_title()
    assert title.startswith("loss on 242 of 252 tasks\n(10 prompts over 256 tokens dropped)")
    whole = heldout.plot_heldout({"after": result | {"n_scored": 252}}).axes[0].get_title()
    assert whole.startswith("loss on 252 tasks\n")

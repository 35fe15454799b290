"""Lesson 04 data: Alpaca's templates, the exact label mask, pad-token resizing, bad input, length grouping."""
from __future__ import annotations

import json

import pytest

from alpaca_nb import data, sft
from alpaca_nb.errors import AlpacaNbError

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well."},
    {"instruction": "Translate the sentence into French.", "input": "Good morning, my friend.",
     "output": "Bonjour, mon ami."},
]


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))


def test_templates_are_alpacas_verbatim():
    assert sft.format_prompt("Name a fruit.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName a fruit.\n\n### Response:")
    assert sft.format_prompt("Sum them.", "2, 3") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSum them.\n\n"
        "### Input:\n2, 3\n\n### Response:")


def test_alpaca_lora_template_is_verbatim():
    """tloen/alpaca-lora @ 8d58d37, templates/alpaca.json: as Stanford's, with a newline after the header."""
    assert sft.format_prompt("Name a fruit.", template="alpaca-lora") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName a fruit.\n\n### Response:\n")
    assert sft.format_prompt("Sum them.", "2, 3", template="alpaca-lora") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSum them.\n\n"
        "### Input:\n2, 3\n\n### Response:\n")
    with pytest.raises(AlpacaNbError, match="unknown template 'vicuna'"):
        sft.format_prompt("x", template="vicuna")


CORPUS = ["Below is an instruction that describes a task. Write a response that appropriately completes the request.",
          "### Instruction: Name the capital of France. ### Response: Paris is the capital of France.",
          "Give three tips for staying healthy. Eat well, move, sleep."] * 3
CAPITAL = {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."}


def llama_style_tokenizer(corpus: list[str]):
    """A LLaMA-like SentencePiece tokenizer built offline: BPE, Metaspace (prepend "▁" to every text), BOS first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                        initial_alphabet=list("\n#:")))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("template", ["stanford", "alpaca-lora"])
def test_sentencepiece_response_is_tokenised_as_part_of_the_whole_text(template):
    """A SentencePiece tokenizer gives a text's first word a leading "▁": tokenised alone, "Paris" would be
    "▁Paris", a token the original (which tokenises prompt + output together) never trained on."""
    tok = llama_style_tokenizer(CORPUS)
    prompt = sft.format_prompt(CAPITAL["instruction"], template=template)
    examples = sft.preprocess([CAPITAL], tok, template=template)
    ids, labels = examples[0]["input_ids"], examples[0]["labels"]
    assert ids == tok(prompt + CAPITAL["output"])["input_ids"] + [tok.eos_token_id] and ids[0] == tok.bos_token_id
    trained = tok.convert_ids_to_tokens([i for i, label in zip(ids, labels) if label != -100])
    assert trained[:2] == ["Pa", "ris"] and trained[-1] == "</s>"
    assert tok.convert_ids_to_tokens(tok(CAPITAL["output"], add_special_tokens=False)["input_ids"])[0] == "▁Paris"
    assert (examples.boundary_by_offsets, examples.boundary_by_prefix) == (1, 0)  # the offsets rule decided
    assert labels.count(-100) == len(tok(prompt)["input_ids"])


def test_a_token_straddling_the_boundary_falls_back_to_the_prompts_own_length():
    """Trained on "Response:Paris", the tokenizer merges across the boundary: no exact split exists, so the
    prompt is as many tokens as it has alone (stanford_alpaca's rule) and the straddling token is masked."""
    tok = llama_style_tokenizer(CORPUS + ["### Response:Paris is the capital of France."] * 5)
    prompt = sft.format_prompt(CAPITAL["instruction"])
    examples = sft.preprocess([CAPITAL], tok)
    ids, labels = examples[0]["input_ids"], examples[0]["labels"]
    n = len(tok(prompt)["input_ids"])
    assert (examples.boundary_by_offsets, examples.boundary_by_prefix) == (0, 1)  # the prefix rule decided
    assert tok.convert_ids_to_tokens(ids[n - 1]) == "▁Response:Paris" and labels[:n] == [-100] * n
    assert -100 not in labels[n:]


def test_train_on_inputs_trains_on_every_token(tokenizer):
    examples = sft.preprocess(RECORDS, tokenizer, template="alpaca-lora", train_on_inputs=True)
    for record, ex in zip(RECORDS, examples):
        prompt = sft.format_prompt(record["instruction"], record["input"], "alpaca-lora")
        assert ex["labels"] == ex["input_ids"]
        assert ex["input_ids"] == tokenizer(prompt + record["output"])["input_ids"] + [tokenizer.eos_token_id]
    # a prompt that fills max_length still trains (on the prompt), as alpaca-lora keeps it
    assert len(sft.preprocess(RECORDS, tokenizer, max_length=5, train_on_inputs=True)) == 2


def test_validation_split_is_seeded_and_leaves_training_records():
    records = [data.Example(f"task {i}", "", "out", "test") for i in range(10)]
    train, val = sft.split_validation(records, 3, seed=42)
    assert len(train) == 7 and len(val) == 3 and sorted(train + val, key=records.index) == records
    assert (train, val) == sft.split_validation(records, 3, seed=42)
    assert val != sft.split_validation(records, 3, seed=1)[1]
    assert sft.split_validation(records, 0) == (records, [])
    with pytest.raises(AlpacaNbError, match="--val-size 10 leaves no training records"):
        sft.split_validation(records, 10)


def test_labels_mask_exactly_the_prompt(tokenizer):
    examples = sft.preprocess(RECORDS, tokenizer, max_length=512)
    assert len(examples) == len(RECORDS)
    for record, ex in zip(RECORDS, examples):
        prompt = sft.format_prompt(record["instruction"], record["input"])
        n = len(tokenizer(prompt)["input_ids"])
        ids, labels = ex["input_ids"], ex["labels"]
        assert len(ids) == len(labels)
        assert labels[:n] == [-100] * n and -100 not in labels[n:]
        assert labels[n:] == ids[n:]
        assert tokenizer.decode(ids[:n]) == prompt
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[n:-1]) == record["output"]
        assert ids == tokenizer(prompt + record["output"])["input_ids"] + [tokenizer.eos_token_id]  # one text
    assert (examples.boundary_by_offsets, examples.boundary_by_prefix) == (2, 0)
    assert examples.truncated_examples == examples.dropped_examples == 0


def test_truncation_keeps_the_mask_and_drops_prompt_only_examples(tokenizer):
    full = sft.preprocess(RECORDS, tokenizer)
    n_prompt = [ex["labels"].count(-100) for ex in full]
    cut = sft.preprocess(RECORDS, tokenizer, max_length=n_prompt[0] + 3)
    assert len(cut[0]["input_ids"]) == n_prompt[0] + 3
    assert cut[0]["labels"][n_prompt[0]:] == full[0]["input_ids"][n_prompt[0]:n_prompt[0] + 3]
    # the second prompt is longer than the limit: nothing to learn, so it is dropped
    assert n_prompt[1] >= n_prompt[0] + 3 and len(cut) == 1
    assert (cut.truncated_examples, cut.dropped_examples) == (1, 1)  # the kept one lost its EOS
    assert cut[0]["input_ids"][-1] != tokenizer.eos_token_id
    exact = sft.preprocess(RECORDS[:1], tokenizer, max_length=len(full[0]["input_ids"]))  # EOS just fits
    assert exact.truncated_examples == 0 and exact[0]["input_ids"][-1] == tokenizer.eos_token_id
    assert sft.preprocess(RECORDS[:1], tokenizer, max_length=len(full[0]["input_ids"]) - 1).truncated_examples == 1
    with pytest.raises(AlpacaNbError, match="max_length"):
        sft.preprocess(RECORDS, tokenizer, max_length=5)


def test_pad_token_is_added_with_mean_embedding(model_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.pad_token is None
    model = tiny_llama(len(tok))
    old = model.get_input_embeddings().weight.detach().clone()
    assert sft.add_pad_token(tok, model) == 1
    assert tok.pad_token == sft.DEFAULT_PAD_TOKEN and tok.pad_token_id == len(tok) - 1
    new = model.get_input_embeddings().weight
    assert new.shape[0] == len(tok) == old.shape[0] + 1
    torch.testing.assert_close(new[-1], old.mean(dim=0))
    torch.testing.assert_close(model.get_output_embeddings().weight[-1], model.lm_head.weight[:-1].mean(dim=0))
    assert sft.add_pad_token(tok, model) == 0  # idempotent
    ex = sft.preprocess(RECORDS[:1], tok)[0]
    assert tok.pad_token_id not in ex["input_ids"] and ex["input_ids"][-1] == tok.eos_token_id


def test_bad_records_name_the_index(tokenizer, tmp_path):
    with pytest.raises(AlpacaNbError, match="record 1: missing or empty 'output'"):
        sft.preprocess([RECORDS[0], {"instruction": "x", "input": ""}], tokenizer)
    with pytest.raises(AlpacaNbError, match="record 0: missing or empty 'instruction'"):
        sft.preprocess([{"instruction": " ", "output": "y"}], tokenizer)
    with pytest.raises(AlpacaNbError, match="no training records"):
        sft.preprocess([], tokenizer)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([RECORDS[0], {"input": "x", "output": "y"}]))
    with pytest.raises(AlpacaNbError, match="record 1"):
        sft.load_records([bad])
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(AlpacaNbError, match="no records"):
        sft.load_records([empty])
    with pytest.raises(AlpacaNbError, match="not found"):
        sft.load_records([tmp_path / "missing.json"])


def test_length_grouping_wastes_little_on_padding(tokenizer, tmp_path):
    """On an Alpaca-like length distribution (AlpacaEval's 805 text-davinci-003 answers + the 175 seeds),
    the Trainer's length-grouped micro-batches are >= 95% real tokens; random ones are far from it."""
    from alpaca_nb.train import build_trainer, non_pad_fraction
    from alpaca_nb.train_config import resolve_config

    records = data.load_alpaca_eval("text_davinci_003") + data.load_seed_tasks()
    dataset = sft.preprocess(records, tokenizer, max_length=512)
    model = tiny_llama(len(tokenizer))
    fractions = {}
    for batching in ("grouped", "random"):
        config = resolve_config("alpaca-7b", data=[], output_dir=str(tmp_path / batching), batching=batching,
                                effective_batch_size=32)
        fractions[batching] = non_pad_fraction(build_trainer(config, model, tokenizer, dataset)
                                               .get_train_dataloader())
    assert fractions["grouped"] >= 0.95
    assert fractions["random"] < 0.8

"""Lesson 04 training: full on the embedded model, resume, 8-bit LoRA (+ merge), 8-bit AdamW, FSDP over gloo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_nb import cli
from alpaca_nb.errors import AlpacaNbError
from alpaca_nb.fileio import read_json, read_jsonl
from alpaca_nb.train import train
from alpaca_nb.train_config import TrainConfig, capped_warmup_steps, resolve_config

REPO = Path(__file__).resolve().parents[1]
RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, move, sleep."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
]
SUMMARY_KEYS = {"mode", "steps", "train_loss_first", "train_loss_last", "tokens_seen", "non_pad_fraction",
                "tokens_per_second", "peak_memory_bytes", "wall_seconds"}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def tiny_model(model_dir, tmp_path_factory) -> Path:
    """A 2-layer LLaMA built from a config, with the embedded model's tokenizer (saves minutes per test)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def config(data_file, out, model, **overrides):
    """A fixed-batch config: all four records in every optimizer step, constant learning rate."""
    values = dict(data=[data_file], output_dir=out, model=str(model), micro_batch_size=2, effective_batch_size=4,
                  max_steps=3, learning_rate=1e-3, warmup_ratio=0.0, lr_scheduler="constant", max_length=64)
    return resolve_config("cpu-demo", **(values | overrides))


def test_full_on_embedded_model(data_file, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, two = tmp_path / "run", tmp_path / "two.json"
    two.write_text(json.dumps(RECORDS[2:]))  # one fixed micro-batch of two short records, every step
    summary = train(config(two, out, model_dir, learning_rate=1e-4, max_steps=2, effective_batch_size=2))
    assert SUMMARY_KEYS <= set(summary) and summary == read_json(out / "train_summary.json")
    assert summary["mode"] == "full" and summary["steps"] == 2
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["tokens_seen"] > 0 and 0.5 < summary["non_pad_fraction"] <= 1
    assert [e["step"] for e in read_jsonl(out / "loss_log.jsonl")] == [1, 2]
    assert (out / "loss_curve.png").stat().st_size > 0
    assert read_json(out / "resolved_config.json")["gradient_accumulation_steps"] == 1
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.num_parameters() == summary["parameters"]
    assert AutoTokenizer.from_pretrained(out / "model").eos_token == "<|im_end|>"


def test_one_step_with_warmup_changes_the_saved_weights(data_file, model_dir, tmp_path):
    """cpu-demo's warmup ratio 0.03 of 1 step is ceil(0.03) = 1 warmup step: that step would run at learning
    rate 0 and save the base model unchanged. The cap leaves no warmup in a 1-step run."""
    from safetensors.torch import load_file

    out = tmp_path / "one"
    summary = train(resolve_config("cpu-demo", data=[data_file], output_dir=out, model=str(model_dir), max_steps=1,
                                   micro_batch_size=1, effective_batch_size=1, max_length=64))
    assert summary["steps"] == 1 and summary["warmup_steps"] == 0 and summary["weights_changed"] is True
    assert read_jsonl(out / "loss_log.jsonl")[0]["learning_rate"] > 0
    base, saved = load_file(model_dir / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert any(not base[k].equal(saved[k]) for k in base.keys() & saved.keys())


@pytest.mark.parametrize("warmup, total, expected", [(0.03, 1, 0), (0.03, 2, 1), (0.03, 100, 3), (100, 50, 49),
                                                    (100, 500, 100), (0, 1, 0)])
def test_warmup_leaves_at_least_one_step_at_a_nonzero_rate(warmup, total, expected):
    assert capped_warmup_steps(warmup, total) == expected


def test_a_run_that_leaves_the_weights_unchanged_says_so(data_file, tiny_model, tmp_path, capsys):
    out = tmp_path / "lr0"
    summary = train(config(data_file, out, tiny_model, max_steps=1, learning_rate=0.0))
    assert summary["weights_changed"] is False and read_json(out / "train_summary.json")["weights_changed"] is False
    assert "warning: the trainable weights did not change (steps: 1, learning rate: 0.0" in capsys.readouterr().err


def test_resume_after_interruption_matches_an_uninterrupted_run(data_file, tiny_model, tmp_path):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    straight = train(config(data_file, tmp_path / "a", tiny_model, max_steps=4, save_steps=2))
    run = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(config(data_file, run, tiny_model, max_steps=4, save_steps=2), callbacks=[Interrupt()])
    assert (run / "checkpoints" / "checkpoint-2").is_dir() and not (run / "model").exists()
    with pytest.raises(AlpacaNbError, match="--resume"):
        train(config(data_file, run, tiny_model, max_steps=4, save_steps=2))
    resumed = train(config(data_file, run, tiny_model, max_steps=4, save_steps=2, resume=True))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    log = read_jsonl(run / "loss_log.jsonl")
    expected = read_jsonl(tmp_path / "a" / "loss_log.jsonl")
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert [e["loss"] for e in log] == pytest.approx([e["loss"] for e in expected], rel=1e-4)
    assert resumed["train_loss_last"] < straight["train_loss_first"]


def test_8bit_lora_saves_adapter_and_merges(data_file, tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    summary = train(config(data_file, out, tiny_model, mode="8bit", learning_rate=1e-2, merge_lora=True))
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["trainable_parameters"] < summary["parameters"] / 10 and summary["weights_changed"] is True
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 16, 0.05)
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(base.state_dict()[q], merged.state_dict()[q])
    k = "model.layers.0.self_attn.k_proj.weight"  # not a LoRA target: untouched
    torch.testing.assert_close(base.state_dict()[k], merged.state_dict()[k])


def test_full_with_8bit_adamw(data_file, tiny_model, tmp_path):
    summary = train(config(data_file, tmp_path / "adam8", tiny_model, optim="adamw_8bit", max_steps=4))
    assert summary["train_loss_last"] < summary["train_loss_first"]


def test_fsdp_two_processes_over_gloo(data_file, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "alpaca_nb.cli", "train", "--mode", "fsdp", "--nproc", "2", "--data",
           str(data_file), "--model", str(tiny_model), "--output-dir", str(out), "--max-steps", "3",
           "--micro-batch-size", "1", "--effective-batch-size", "4", "--lr", "1e-3", "--max-length", "64"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = read_json(out / "train_summary.json")
    assert summary["world_size"] == 2 and summary["gradient_accumulation_steps"] == 2
    assert summary["wrapped_as"].startswith("FSDP") and summary["weights_changed"] is True
    assert summary["processes_that_read_the_weights"] == 1  # rank 1 got its shards by broadcast from rank 0
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert AutoModelForCausalLM.from_pretrained(out / "model").num_parameters() == summary["parameters"]


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert cli.main(["train", "--data", str(empty), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no records" in capsys.readouterr().err
    out = str(tmp_path / "o")
    assert cli.main(["train", "--data", str(empty), "--output-dir", out, "--preset", "gpt-5"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(empty), "--output-dir", out, "--micro-batch-size", "3"]) == 2
    assert "not a multiple" in capsys.readouterr().err
    assert cli.main(["train", "--mode", "fsdp", "--nproc", "3", "--data", str(empty), "--output-dir", out]) == 2
    assert "not a multiple" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_finished_run_is_replaced_only_with_overwrite(data_file, tiny_model, tmp_path):
    out = tmp_path / "done"
    train(config(data_file, out, tiny_model, max_steps=1))
    files = lambda: {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}  # noqa: E731
    kept = files()
    with pytest.raises(AlpacaNbError, match=r"holds a finished run \(train_summary.json, model\).*--overwrite"):
        train(config(data_file, out, tiny_model, max_steps=2))
    assert files() == kept  # summary, config and model untouched
    second = train(config(data_file, out, tiny_model, max_steps=2, overwrite=True))  # what lesson 04 passes
    assert second["steps"] == 2 and read_json(out / "train_summary.json") == second
    assert read_json(out / "resolved_config.json")["max_steps"] == 2


def test_precision_auto_picks_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    import torch

    from alpaca_nb.train_config import resolve_config, use_bf16

    config = resolve_config("cpu-demo", data=["x.json"], output_dir="out")
    for name, value in (("_is_avx512_bf16_supported", True), ("_is_amx_tile_supported", False)):
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
    assert use_bf16(config, cuda=False, world_size=1)            # e.g. AMD Zen 4 / Intel Sapphire Rapids
    assert not use_bf16(config, cuda=False, world_size=2)        # FSDP over gloo stays fp32
    assert not use_bf16(resolve_config("cpu-demo", data=["x"], output_dir="o", mode="8bit"), False, 1)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not use_bf16(config, cuda=False, world_size=1)        # older CPUs: bf16 would only be emulated
    # a V100/T4 "supports" bf16 only by emulation: auto must not pick it; an A100 does natively
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not use_bf16(config, cuda=True, world_size=4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert use_bf16(config, cuda=True, world_size=4)
    forced = resolve_config("cpu-demo", data=["x"], output_dir="o", precision="fp32")
    assert not use_bf16(forced, cuda=True, world_size=1)
    assert use_bf16(resolve_config("cpu-demo", data=["x"], output_dir="o", precision="bf16"), False, 1)
    with pytest.raises(AlpacaNbError, match="unknown precision 'fp8'"):
        resolve_config("cpu-demo", data=["x"], output_dir="o", precision="fp8")


def test_presets_sample_prompt_and_validate_as_the_recipes_they_claim(tmp_path):
    """alpaca-7b/-13b: stanford_alpaca (random batches, prompt masked, its template, no validation split);
    alpaca-lora-7b: tloen/alpaca-lora's finetune.py defaults; cpu-demo alone groups by length, for speed."""
    from alpaca_nb.train import training_arguments

    def resolved(preset, **overrides):
        config = resolve_config(preset, data=["x.json"], output_dir=str(tmp_path / preset), **overrides)
        return config, training_arguments(config, 1, None)

    for preset in ("alpaca-7b", "alpaca-13b"):
        config, args = resolved(preset)
        assert (config.batching, config.template, config.train_on_inputs, config.val_size) == \
            ("random", "stanford", False, 0)
        assert args.train_sampling_strategy == "random" and args.eval_strategy == "no"
    config, args = resolved("alpaca-lora-7b")
    assert (config.batching, config.template, config.train_on_inputs, config.val_size) == \
        ("random", "alpaca-lora", True, 2000)
    assert (args.train_sampling_strategy, args.eval_strategy, args.eval_steps, args.save_steps) == \
        ("random", "steps", 200, 200)
    assert (args.logging_steps, args.save_total_limit, args.warmup_steps) == (10, 3, 100)
    config, args = resolved("cpu-demo")
    assert (config.batching, config.template, config.train_on_inputs, config.val_size) == \
        ("grouped", "stanford", False, 0)
    assert args.train_sampling_strategy == "group_by_length"
    assert resolved("alpaca-lora-7b", batching="grouped")[1].train_sampling_strategy == "group_by_length"
    bare = TrainConfig(data=["x.json"], output_dir=str(tmp_path / "bare"))  # no preset: batch as the originals
    assert (bare.batching, training_arguments(bare, 1, None).train_sampling_strategy) == ("random", "random")
    with pytest.raises(AlpacaNbError, match="unknown template 'vicuna'"):
        resolved("cpu-demo", template="vicuna")
    with pytest.raises(AlpacaNbError, match="--val-size -1"):
        resolved("cpu-demo", val_size=-1)


def test_cli_trains_as_alpaca_lora_with_a_validation_split(data_file, tiny_model, tmp_path, capsys):
    """--template alpaca-lora --train-on-inputs --val-size: one record held out, its loss evaluated every step
    into the loss log; --max-length 20 cuts every example's EOS (the prompts alone are longer): all counted."""
    out = tmp_path / "lora-style"
    assert cli.main(["train", "--data", str(data_file), "--model", str(tiny_model), "--output-dir", str(out),
                     "--template", "alpaca-lora", "--train-on-inputs", "--val-size", "1", "--eval-steps", "1",
                     "--max-steps", "2", "--micro-batch-size", "1", "--effective-batch-size", "1",
                     "--max-length", "20", "--lr", "1e-3"]) == 0
    summary = read_json(out / "train_summary.json")
    assert '"truncated_examples": 3' in capsys.readouterr().out  # printed too
    assert (summary["num_examples"], summary["num_val_examples"], summary["truncated_examples"]) == (3, 1, 3)
    log = read_jsonl(out / "loss_log.jsonl")
    assert [e["step"] for e in log if "eval_loss" in e] == [1, 2]
    assert [e["step"] for e in log if "loss" in e] == [1, 2]
    assert summary["eval_loss_last"] == log[-1]["eval_loss"] and summary["train_loss_last"] is not None
    resolved = read_json(out / "resolved_config.json")
    assert (resolved["template"], resolved["train_on_inputs"], resolved["val_size"]) == ("alpaca-lora", True, 1)
    assert (out / "loss_curve.png").stat().st_size > 0
    assert cli.main(["train", "--data", str(data_file), "--output-dir", str(tmp_path / "x"), "--val-size", "4"]) == 2
    assert "--val-size 4 leaves no training records" in capsys.readouterr().err


def test_8bit_mode_quantizes_the_base_and_adamw_8bit_keeps_8bit_optimizer_state(data_file, tiny_model, tmp_path):
    """What the trainer really trains: the base's linear layers are bitsandbytes' Linear8bitLt (LoRA on
    q/v only), and --optim adamw_8bit is bitsandbytes' AdamW with 8-bit (uint8) moment buffers."""
    import bitsandbytes as bnb
    import torch
    from transformers import TrainerCallback

    seen: dict[str, object] = {}

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["layers"] = {name.rsplit(".", 1)[-1]: type(m) for name, m in model.named_modules()
                              if name.endswith(("self_attn.q_proj.base_layer", "self_attn.k_proj",
                                                "self_attn.o_proj", "mlp.down_proj"))}

        def on_train_end(self, args, state, control, optimizer=None, **kwargs):
            seen["optimizer"] = getattr(optimizer, "optimizer", optimizer)

    train(config(data_file, tmp_path / "lora", tiny_model, mode="8bit", max_steps=1), callbacks=[Record()])
    assert seen["layers"] == dict.fromkeys(("base_layer", "k_proj", "o_proj", "down_proj"), bnb.nn.Linear8bitLt)
    train(config(data_file, tmp_path / "adam8", tiny_model, optim="adamw_8bit", max_steps=1), callbacks=[Record()])
    optimizer = seen["optimizer"]
    assert isinstance(optimizer, bnb.optim.AdamW) and optimizer.args.optim_bits == 8
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert states and any(s["state1"].dtype == torch.uint8 for s in states)  # large tensors: 8-bit blockwise


FSDP_UNITS_SCRIPT = '''
import json, os, sys
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
from transformers import TrainerCallback
from alpaca_nb.train import train
from alpaca_nb.train_config import resolve_config

data, model, out = sys.argv[1:4]

def is_unit(module):  # FSDP2 (fully_shard) or FSDP1 (a FullyShardedDataParallel wrapper)
    return isinstance(module, (FSDPModule, FullyShardedDataParallel))

class Record(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):  # weights as wrapped, before any step
        sums = {name: float(p.full_tensor().double().sum()) for name, p in model.named_parameters()}
        with open(os.path.join(out, "weights-%s.json" % os.environ["RANK"]), "w") as f:
            json.dump(sums, f)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        layers = {name: [type(m).__name__, is_unit(m)] for name, m in model.named_modules()
                  if name.startswith("model.layers.") and name.count(".") == 2}
        optimized = {id(p) for group in kwargs["optimizer"].param_groups for p in group["params"]}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        with open(os.path.join(out, "units-%s.json" % os.environ["RANK"]), "w") as f:
            json.dump({"layers": layers, "root": is_unit(model), "optimizer_holds_every_weight": optimized == trainable}, f)

config = resolve_config("cpu-demo", data=[data], model=model, output_dir=os.path.join(out, "run"), mode="fsdp",
                        max_steps=1, micro_batch_size=1, effective_batch_size=2, max_length=64)
train(config, callbacks=[Record()])
'''


def test_fsdp_shards_every_decoder_layer_as_its_own_unit(data_file, tiny_model, tmp_path):
    """Auto-wrap must make each LlamaDecoderLayer an FSDP unit (gathered one at a time), not only the outer
    model (which would gather all weights at once): checked inside both torchrun processes. Only rank 0 reads
    the weights from disk; the shards of rank 1 must still hold exactly the saved model's weights."""
    import os

    import torch
    from safetensors.torch import load_file

    script = tmp_path / "fsdp_units.py"
    script.write_text(FSDP_UNITS_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(data_file), str(tiny_model), str(tmp_path)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = {name: float(t.double().sum()) for name, t in load_file(tiny_model / "model.safetensors").items()}
    for rank in (0, 1):
        wrapped = read_json(tmp_path / f"weights-{rank}.json")
        assert wrapped.keys() <= saved.keys() and len(wrapped) >= len(saved) - 1  # lm_head may be tied
        torch.testing.assert_close(wrapped, {name: saved[name] for name in wrapped}, rtol=0, atol=1e-6)
        units = read_json(tmp_path / f"units-{rank}.json")
        assert units["root"] is True and units["optimizer_holds_every_weight"] is True
        assert sorted(units["layers"]) == ["model.layers.0", "model.layers.1"]
        assert all(is_unit and ("LlamaDecoderLayer" in name or name == "FullyShardedDataParallel")
                   for name, is_unit in units["layers"].values()), units

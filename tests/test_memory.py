"""alpaca_nb.memory: parameter counts from config.json, the memory estimate, ``alpaca-nb train --estimate-memory``,
and the GPU benchmark's pure functions (FLOPs per token, peak by GPU name); the benchmark itself is not run."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_nb import memory
from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError

REPO = Path(__file__).resolve().parents[1]


def _meta_parameters(config) -> int:
    """The real model's parameter count for ``config``, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_from_config_json_matches_the_real_model(model_dir):
    from transformers import AutoConfig

    shape = memory.model_shape(model_dir)
    assert shape["parameters"] == _meta_parameters(AutoConfig.from_pretrained(model_dir)) == 134_515_008
    assert memory.model_shape("smollm2-135m")["parameters"] == 134_515_008  # the preset the CLI uses for it


@pytest.mark.parametrize("preset, expected", [("llama-7b", 6_738_415_616), ("llama-13b", 13_015_864_320)])
def test_llama_presets_match_a_llama_built_from_the_same_shape(preset, expected):
    from transformers import LlamaConfig

    cfg = memory.PRESETS[preset]
    assert memory.model_shape(preset)["parameters"] == expected
    assert _meta_parameters(LlamaConfig(**cfg)) == expected


def test_lora_parameter_count_matches_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = memory.PRESETS["smollm2-135m"]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    for targets in (["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]):
        peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert memory.estimate("smollm2-135m", "8bit", lora_target_modules=targets)["trainable_parameters"] \
            == trainable
        model = peft_model.unload()


def test_estimate_follows_the_stated_bytes_per_parameter():
    n = memory.model_shape("llama-7b")["parameters"]
    fp32 = memory.estimate("llama-7b", "full", 4, 512, 1, "fp32", "adamw_torch")
    assert (fp32["weights"], fp32["gradients"], fp32["optimizer_state"]) == (4 * n, 4 * n, 8 * n)
    assert 105e9 < fp32["weights"] + fp32["gradients"] + fp32["optimizer_state"] < 110e9  # the issue's ~110 GB
    assert memory.estimate("llama-7b", "full", precision="bf16")["weights"] == 6 * n  # + the 16-bit copy
    assert memory.estimate("llama-7b", "full", optim="adamw_8bit")["optimizer_state"] == 2 * n
    fsdp = memory.estimate("llama-7b", "fsdp", 4, 512, 4, "bf16")
    assert (fsdp["gradients"], fsdp["optimizer_state"]) == (n, 2 * n)
    assert fsdp["host_ram_at_load"] == 4 * n  # only rank 0 reads the fp32 model; the others get shards by broadcast
    lora = memory.estimate("llama-7b", "8bit", 4, 512, 1, "bf16")
    assert 6.5e9 < lora["weights"] < 8e9 and lora["optimizer_state"] == 8 * lora["trainable_parameters"]
    plain = memory.estimate("llama-7b", "full", 4, 512)["activations"]
    checkpointed = memory.estimate("llama-7b", "full", 4, 512, gradient_checkpointing=True)["activations"]
    assert plain > 5 * checkpointed > 0
    assert memory.estimate(n, "full")["activations"] is None  # a bare count has no shape


def test_bad_configs_name_the_file_and_the_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(AlpacaNbError, match=r"config\.json: field\(s\) num_hidden_layers"):
        memory.model_shape(tmp_path)
    with pytest.raises(AlpacaNbError, match="config.json not found"):
        memory.model_shape(tmp_path / "nothing")


def test_cli_estimate_memory_prints_without_loading_anything(model_dir):
    code = ("import sys; from alpaca_nb.cli import main; "
            f"rc = main(['train', '--estimate-memory', '--model', {str(model_dir)!r}, '--mode', 'fsdp', "
            "'--nproc', '4', '--micro-batch-size', '2', '--max-length', '128']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    expected = memory.format_estimate(memory.estimate(model_dir, "fsdp", 2, 128, 4, "auto"))
    assert run.stdout.strip() == expected
    assert "fsdp on 4 GPU(s), 0.135B parameters" in run.stdout


def test_cli_estimate_memory_for_a_preset_and_train_still_needs_data(capsys):
    assert main(["train", "--estimate-memory", "--model", "llama-7b", "--preset", "alpaca-7b"]) == 0
    out = capsys.readouterr().out
    assert "6.738B parameters" in out and "micro-batch 4 x 512 tokens" in out and "per GPU:" in out
    assert main(["train", "--mode", "full"]) == 2
    assert "required: --data, --output-dir" in capsys.readouterr().err


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_gpu", REPO / "benchmarks" / "bench_train_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0),
    ("NVIDIA A10", 125.0), ("Tesla T4", 65.0), ("Tesla V100-SXM2-16GB", 125.0), ("NVIDIA GeForce GTX 1080", None)])
def test_benchmark_peak_by_gpu_name(name, peak):
    found = _bench().peak_tflops(name)
    assert (found and found[0]) == peak


def test_benchmark_flops_per_token_counts_matmuls_and_attention():
    bench = _bench()
    shape = memory.model_shape("llama-7b")
    d, layers = 4096, 32
    n_matmul = shape["parameters"] - 32000 * d - (2 * layers + 1) * d  # no input embedding, no norms
    assert bench.flops_per_token(shape, 300) == 6 * n_matmul + 12 * layers * d * 300
    assert bench.flops_per_token(shape, 300, lora=True) == 4 * n_matmul + 12 * layers * d * 300

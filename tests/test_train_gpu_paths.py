"""Lesson 04's GPU paths without a GPU: a faked ``torch.cuda`` (4 GPUs, chosen compute capability) drives the real
TrainingArguments; and an adapter trained on a base without a pad token answers (train -> adapter -> answer)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from alpaca_nb import answers
from alpaca_nb.train import load_model, train, training_arguments
from alpaca_nb.train_config import resolve_config


def _clear_device_caches() -> None:
    """transformers caches ``is_torch_cuda_available``, ``is_torch_tf32_available``...: clear them so neither the
    fake nor the real (no) GPU leaks into the other."""
    from transformers.utils import import_utils

    for name in dir(import_utils):
        if name.startswith("is_torch") and hasattr(getattr(import_utils, name), "cache_clear"):
            getattr(import_utils, name).cache_clear()


@pytest.fixture
def fake_cuda(monkeypatch):
    """``fake_cuda(capability)``: torch sees 4 CUDA GPUs of that compute capability from then on in the test."""
    import torch
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments  # noqa: F401 (imported for real before torch.cuda is faked)

    def install(capability: tuple[int, int]) -> None:
        props = SimpleNamespace(major=capability[0], minor=capability[1], name="Fake GPU", total_memory=16 << 30)
        for name, value in (("is_available", lambda: True), ("device_count", lambda: 4),
                            ("current_device", lambda: 0), ("set_device", lambda device: None),
                            ("get_device_capability", lambda device=None: capability),
                            ("get_device_properties", lambda device=None: props)):
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(torch.version, "cuda", "12.4")
        monkeypatch.setattr(torch.backends, "fp32_precision", torch.backends.fp32_precision)  # tf32 is undone
        _clear_device_caches()

    yield install
    monkeypatch.undo()
    _clear_device_caches()
    AcceleratorState._reset_state(reset_partial_state=True)


def _config(tmp_path, **overrides):
    values = dict(data=["x.json"], output_dir=tmp_path / "run", micro_batch_size=4, effective_batch_size=128)
    return resolve_config("alpaca-lora-7b", **(values | overrides))


@pytest.mark.parametrize("mode", ["full", "8bit"])
def test_one_process_drives_one_gpu_of_four(fake_cuda, tmp_path, mode):
    """transformers gives a single process n_gpu = every visible GPU (nn.DataParallel, or for 8-bit n_gpu
    micro-batches fed to one GPU): the batch would be 128 x 4 while the summary said 128."""
    fake_cuda((8, 0))
    args = training_arguments(_config(tmp_path, mode=mode), world_size=1, layer_class=None)
    assert str(args.device) == "cuda:0" and args.n_gpu == 1
    assert args.train_batch_size == 4 and args.gradient_accumulation_steps == 32
    assert args.train_batch_size * args.gradient_accumulation_steps == 128  # the summary's effective batch


@pytest.mark.parametrize("capability, precision, tf32", [((7, 0), "fp16", None), ((7, 5), "fp16", None),
                                                          ((8, 0), "bf16", True), ((9, 0), "bf16", True)])
def test_precision_follows_the_gpu_generation(fake_cuda, tmp_path, capability, precision, tf32):
    """V100 (7.0) / T4 (7.5): no native bf16 and no TF32 (``tf32=True`` raises there): fp16 with loss scaling.
    A100 (8.0) / H100 (9.0): bf16 and TF32."""
    fake_cuda(capability)
    for mode in ("full", "8bit"):
        args = training_arguments(_config(tmp_path, mode=mode), world_size=1, layer_class=None)
        assert (args.bf16, args.fp16, args.tf32) == (precision == "bf16", precision == "fp16", tf32)
        assert args.mixed_precision == precision
    forced = training_arguments(_config(tmp_path, precision="fp32"), world_size=1, layer_class=None)
    assert (forced.bf16, forced.fp16, forced.tf32) == (False, False, tf32)


@pytest.mark.parametrize("capability, half", [((7, 0), "float16"), ((8, 0), "bfloat16")])
def test_weights_load_in_half_precision_only_for_8bit_on_a_gpu(fake_cuda, model_dir, tmp_path, monkeypatch,
                                                               capability, half):
    """8bit on a GPU loads the base in the run's half precision (alpaca-lora: fp16); full keeps fp32 weights
    (mixed precision autocasts from fp32 master weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    class Loaded(Exception):
        pass

    def record(model_dir, **kwargs):
        raise Loaded(kwargs["dtype"])

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", record)
    fake_cuda(capability)
    for mode, dtype in (("8bit", getattr(torch, half)), ("full", torch.float32)):
        with pytest.raises(Loaded) as loaded:
            load_model(_config(tmp_path, mode=mode, model=str(model_dir)))
        assert loaded.value.args[0] == dtype, mode


@pytest.fixture(scope="module")
def tiny_model_without_pad(model_dir, tmp_path_factory):
    """A 2-layer LLaMA whose tokenizer has no pad token (as LLaMA's): training adds one, the base lacks its row."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = None
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    out = tmp_path_factory.mktemp("tiny-llama-no-pad")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_an_adapter_trained_on_a_base_without_pad_token_answers(tiny_model_without_pad, tmp_path):
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue."}] * 2))
    config = resolve_config("cpu-demo", data=[data], output_dir=tmp_path / "run", model=str(tiny_model_without_pad),
                            mode="8bit", micro_batch_size=2, effective_batch_size=2, max_steps=1, max_length=64,
                            learning_rate=1e-2, warmup_ratio=0.0)
    summary = train(config)
    assert summary["precision"] == "fp32" and summary["effective_batch_size"] == 2
    lm = answers.load_local_model(summary["adapter_dir"])  # was: size mismatch [49153, 64] vs [49152, 64]
    assert lm.model.get_input_embeddings().weight.shape[0] == len(lm.tokenizer) == 49153
    assert lm.tokenizer.pad_token == "[PAD]"
    texts = answers.generate(lm, ["Name a colour."], max_new_tokens=3, progress=False)
    assert len(texts) == 1 and isinstance(texts[0], str)

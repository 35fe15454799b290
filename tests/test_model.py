"""The embedded model converts once to a plain, trainable, saveable Hugging Face folder."""
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alpaca_nb.model import default_model_dir


def test_converted_model_loads_generates_and_is_reused(model_dir):
    weights = model_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert default_model_dir() == model_dir
    assert time.perf_counter() - start < 1.0 and weights.stat().st_mtime_ns == mtime  # reused, not reconverted
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not hasattr(model.config, "quantization_config")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
    # trainable: a backward pass reaches the weights
    loss = model(**ids, labels=ids["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad is not None

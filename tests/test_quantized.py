"""Quantized loading (lesson 07): bitsandbytes 8-bit / 4-bit where it runs, a clear message where it does not."""
from __future__ import annotations

import pytest
import torch

from alpaca_nb import answers, quantized
from alpaca_nb.errors import AlpacaNbError

# A device this machine cannot run bitsandbytes on: no CUDA here (the usual laptop case), else the meta device.
UNSUPPORTED = "meta" if torch.cuda.is_available() else "cuda"


def test_unsupported_device_is_a_clear_error_naming_mode_device_and_way_out(model_dir):
    with pytest.raises(AlpacaNbError) as err:
        answers.load_local_model(model_dir, quantize="4bit", device=UNSUPPORTED)
    message = str(err.value)
    assert f"4bit loading (bitsandbytes) does not run on device '{UNSUPPORTED}' here: " in message
    assert "quantize_fallback=True" in message and "\n" not in message


def test_fallback_says_so_and_loads_unquantised(model_dir, capsys):
    lm = answers.load_local_model(model_dir, quantize="8bit", device=UNSUPPORTED, quantize_fallback=True)
    err = capsys.readouterr().err
    assert f"8bit loading (bitsandbytes) does not run on device '{UNSUPPORTED}'" in err
    assert "loading in float32 instead" in err
    assert lm.quantize is None
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}


def test_unknown_mode_is_rejected(model_dir):
    with pytest.raises(AlpacaNbError, match="unknown quantize mode '3bit'; choose one of 8bit, 4bit"):
        answers.load_local_model(model_dir, quantize="3bit")


def test_8bit_where_supported_is_really_int8_and_answers(model_dir):
    """On this CPU bitsandbytes 0.50 runs LLM.int8: the decoder's linear weights are int8 and the model answers."""
    support = quantized.quantization_support()
    if support["8bit"] != "runs":
        pytest.skip(f"8bit does not run here: {support['8bit']}")
    import bitsandbytes as bnb

    lm = answers.load_local_model(model_dir, quantize="8bit")
    assert lm.quantize == "8bit"
    q_proj = lm.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear8bitLt) and q_proj.weight.dtype == torch.int8
    fp32_bytes = sum(p.numel() * 4 for p in lm.model.parameters())
    assert lm.model.get_memory_footprint() < 0.5 * fp32_bytes
    reply = answers.ask(lm, "Name a color.", max_new_tokens=6)
    assert isinstance(reply, str) and reply

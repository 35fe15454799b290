"""Lesson 07: 8-bit and 4-bit weights with bitsandbytes, and which of them run on this machine.

- ``"8bit"``: LLM.int8 (Dettmers et al., 2022): the decoder's linear weights in int8, one scale per row, with the
  few outlier input features computed in 16-bit (``BitsAndBytesConfig(load_in_8bit=True)``);
- ``"4bit"``: NF4 with double quantisation, as QLoRA (Dettmers et al., 2023): 4-bit "normal float" weights in
  blocks of 64, whose scales are themselves quantised to 8 bits (``bnb_4bit_quant_type="nf4"``,
  ``bnb_4bit_use_double_quant=True``); the matmuls run in the model's ``dtype``.

Embeddings, the tied ``lm_head`` and the norms stay in ``dtype`` (for SmolLM2-135M the embedding is a third of
the weights, so the saving is smaller than for LLaMA-7B). Whether a mode runs depends on the device *and* on the
installed bitsandbytes (its CPU backend covers some ops since 0.44): :func:`quantization_support` does not assume,
it quantises a small layer on the device and runs it, and reports what happened.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any

from .errors import AlpacaNbError

QUANTIZE_MODES = ("8bit", "4bit")
FALLBACK_OPTION = "quantize_fallback=True"


class _OnceFilter(logging.Filter):
    """Let each distinct message through once: bitsandbytes' CPU 8-bit matmul logs "inputs will be cast from
    torch.float32 to float16" on every call, thousands of lines per answer."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _quiet_bitsandbytes() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=None)
def probe(mode: str, device: str) -> str | None:
    """``None`` if bitsandbytes runs ``mode`` on ``device`` here, else why not (one line).

    A 64x64 linear layer is quantised on ``device`` as ``from_pretrained`` would and run once; its output must
    be finite and close to the float layer's.
    """
    if mode not in QUANTIZE_MODES:
        raise AlpacaNbError(f"unknown quantize mode {mode!r}; choose one of {', '.join(QUANTIZE_MODES)} or None")
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as e:
        return f"bitsandbytes is not installed ({e})"
    _quiet_bitsandbytes()
    try:
        torch.manual_seed(0)
        dense = torch.nn.Linear(64, 64, bias=False)
        if mode == "8bit":
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
            layer.weight = bnb.nn.Int8Params(dense.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                                      compress_statistics=True)
            layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=True)
        layer = layer.to(device)
        x = torch.randn(4, 64)
        with torch.no_grad():
            got, want = layer(x.to(device)).float().cpu(), dense(x)
    except Exception as e:  # noqa: BLE001 - any failure of the backend is the answer
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}"
    if not torch.isfinite(got).all() or float((got - want).abs().max()) > 0.25 * float(want.abs().max()):
        return "the quantised layer's output is far from the float layer's"
    return None


def quantization_support(device: str | None = None) -> dict[str, str]:
    """For each mode, ``"runs"`` or why it does not, on ``device`` (default: :func:`default_device`)."""
    device = device or default_device()
    return {mode: probe(mode, device) or "runs" for mode in QUANTIZE_MODES}


def quantized_load_kwargs(quantize: str, dtype: str = "float32", device: str | None = None,
                          fallback: bool = False) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load in ``quantize`` mode on ``device``.

    Where bitsandbytes cannot run the mode there, raises :class:`AlpacaNbError` saying why; with ``fallback``
    it prints that message (stderr) and returns the unquantised arguments (``{"dtype": ...}``) instead.
    """
    import torch

    device = device or default_device()
    reason = probe(quantize, device)
    if reason is not None:
        message = (f"{quantize} loading (bitsandbytes) does not run on device {device!r} here: {reason}")
        if not fallback:
            raise AlpacaNbError(f"{message}; pass {FALLBACK_OPTION} to load in {dtype} instead, or use a device "
                                "bitsandbytes supports (a CUDA GPU)")
        print(f"alpaca-nb: {message}; loading in {dtype} instead ({FALLBACK_OPTION})", file=sys.stderr)
        return {"dtype": getattr(torch, dtype)}
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=getattr(torch, dtype))
    return {"dtype": getattr(torch, dtype), "quantization_config": config, "device_map": {"": device}}


def decode_speed(lm: Any, new_tokens: int = 32) -> float:
    """Tokens per second of greedy decoding for one Alpaca prompt, exactly ``new_tokens`` tokens (no early EOS, so
    every mode does the same work), after a short warm-up."""
    import time

    from .answers import generate_tokens
    from .sft import format_prompt

    prompt = [format_prompt("Tell me about alpacas.")]
    generate_tokens(lm, prompt, max_new_tokens=2, progress=False)  # warm-up
    config = lm.model.generation_config
    before, config.min_new_tokens = config.min_new_tokens, new_tokens
    try:
        start = time.perf_counter()
        generate_tokens(lm, prompt, max_new_tokens=new_tokens, progress=False)
        return new_tokens / (time.perf_counter() - start)
    finally:
        config.min_new_tokens = before


def measure_mode(lm: Any, tasks: Any, new_tokens: int = 32, file_bytes: int | None = None) -> dict[str, Any]:
    """What one loaded model costs and gives: ``weights_mib`` (``get_memory_footprint``, or ``file_bytes`` of a
    GGUF), ``tokens_per_s`` (:func:`decode_speed`) and ``loss``, the teacher-forced loss (nats/token) on ``tasks``
    (held-out tasks; no autocast, so every mode computes in its own precision:
    :func:`alpaca_nb.heldout.teacher_forced_loss`)."""
    from .heldout import teacher_forced_loss

    speed = decode_speed(lm, new_tokens)
    return {"weights_mib": (file_bytes or lm.model.get_memory_footprint()) / 2**20, "tokens_per_s": speed,
            "loss": teacher_forced_loss(lm, tasks, bf16=False, progress=False)["loss"]}

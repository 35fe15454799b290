"""Lesson 04 before renting GPUs: how much GPU memory (and host RAM) a fine-tuning run needs, without loading it.

:func:`model_shape` reads a model folder's ``config.json`` (or a known preset such as ``"llama-7b"``) and
:func:`estimate` turns the shape, the mode and the batch into bytes. Nothing here imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .errors import AlpacaNbError

GIB = 2**30
# Published shapes (each model's config.json on the Hugging Face Hub); "smollm2-135m" is the embedded model.
PRESETS: dict[str, dict[str, Any]] = {
    "llama-7b": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, vocab_size=32000,
                     num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
    "llama-13b": dict(num_hidden_layers=40, hidden_size=5120, intermediate_size=13824, vocab_size=32000,
                      num_attention_heads=40, num_key_value_heads=40, tie_word_embeddings=False),
    "smollm2-135m": dict(num_hidden_layers=30, hidden_size=576, intermediate_size=1536, vocab_size=49152,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
}
_FIELDS = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size", "num_attention_heads")


def model_shape(model: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The LLaMA-style shape of ``model`` (a preset name, a model folder with ``config.json``, or that file's
    contents as a dict) with its parameter counts: ``parameters``, ``embedding_parameters`` (input embeddings
    plus an untied ``lm_head``), ``layer_parameters`` (one decoder layer) and ``linear_parameters`` (the
    decoder layers' ``nn.Linear`` weights, the part LLM.int8 quantizes). Weights are never read."""
    if isinstance(model, Mapping):
        source, cfg = "config", dict(model)
    elif str(model) in PRESETS:
        source, cfg = str(model), dict(PRESETS[str(model)])
    else:
        path = Path(model) / "config.json"
        if not path.is_file():
            raise AlpacaNbError(f"{path} not found: give a model folder with config.json or a preset "
                                f"({', '.join(PRESETS)})")
        try:
            source, cfg = str(path), json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise AlpacaNbError(f"{path}: not valid JSON ({e}); re-download the model") from None
    cfg = cfg.get("text_config", cfg)
    missing = [f for f in _FIELDS if not isinstance(cfg.get(f), int)]
    if missing:
        raise AlpacaNbError(f"{source}: field(s) {', '.join(missing)} missing; the estimate needs a LLaMA-style "
                            "decoder config")
    d, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or d // heads
    tied = bool(cfg.get("tie_word_embeddings", False))
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attention = d * q_out + 2 * d * kv_out + q_out * d  # q, k, v, o projections (no biases in LLaMA)
    mlp = 3 * d * cfg["intermediate_size"]  # gate, up, down (SwiGLU)
    layer = attention + mlp + 2 * d  # + two RMSNorm weights
    embedding = cfg["vocab_size"] * d * (1 if tied else 2)
    return dict(source=source, hidden_size=d, num_hidden_layers=layers, vocab_size=cfg["vocab_size"],
                intermediate_size=cfg["intermediate_size"], q_out=q_out, kv_out=kv_out, tie_word_embeddings=tied, layer_parameters=layer,
                linear_parameters=layers * (attention + mlp), embedding_parameters=embedding,
                parameters=layers * layer + embedding + d)  # + the final norm


def _lora_parameters(shape: Mapping[str, Any], r: int, targets: tuple[str, ...]) -> int:
    """LoRA A and B matrices (r x in + out x r) on each targeted projection of every layer."""
    d, q, kv, inter = shape["hidden_size"], shape["q_out"], shape["kv_out"], shape["intermediate_size"]
    sizes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
             "gate_proj": (d, inter), "up_proj": (d, inter), "down_proj": (inter, d)}
    unknown = [t for t in targets if t not in sizes]
    if unknown:
        raise AlpacaNbError(f"LoRA target module(s) {', '.join(unknown)} unknown; choose from {', '.join(sizes)}")
    return shape["num_hidden_layers"] * sum(r * (sizes[t][0] + sizes[t][1]) for t in targets)


def estimate(model_config_or_params: str | Path | Mapping[str, Any] | int, mode: str = "full",
             micro_batch: int = 4, max_length: int = 512, n_gpus: int = 1, precision: str = "bf16",
             optim: str = "adamw_torch", gradient_checkpointing: bool = False, *, lora_r: int = 8,
             lora_target_modules: tuple[str, ...] | list[str] = ("q_proj", "v_proj")) -> dict[str, Any]:
    """Rough GPU memory per GPU and host RAM at load for one training run, in bytes, before anything loads.

    ``model_config_or_params``: a preset name (:data:`PRESETS`), a model folder, its config dict, or a bare
    parameter count (then activations, which need the shape, are left out: ``None``). ``precision``
    ``"bf16"``/``"fp16"``/``"auto"`` means mixed precision (fp32 master weights, 16-bit compute), ``"fp32"``
    none. N = parameters, b = micro-batch, s = ``max_length`` (every sequence padded to it: an upper bound),
    d = hidden size, L = layers, V = vocabulary, g = ``n_gpus``.

    - ``full``: fp32 weights 4N + fp32 gradients 4N + AdamW m, v 8N (``adamw_8bit``: 2N) = 16 bytes/param
      (10 with ``adamw_8bit``), + a 16-bit copy of the weights under mixed precision (autocast's cast cache) 2N.
    - ``fsdp`` (``full_shard``): weights, gradients and optimizer state divided by g; + the units gathered in
      16-bit (or fp32) at a time: the root (embeddings, lm_head) and two decoder layers (one prefetched).
    - ``8bit`` (LLM.int8 + LoRA): the decoder's linear weights 1 byte/param, embeddings/lm_head/norms fp32
      4 bytes (``prepare_model_for_kbit_training`` upcasts them); LoRA parameters x 16 (weight, grad, Adam).
    - activations (Korthikanti et al., 2022, "Reducing Activation Recomputation in Large Transformer Models",
      with flash/SDPA attention so no s^2 term): b x s x d x L x 34 bytes in 16-bit (x2 in fp32); with
      gradient checkpointing ~2·d bytes per token per layer (the saved layer inputs) + one layer's 34·b·s·d
      recomputed; + logits b·s·V x (2 + 4 + 4) bytes (16-bit logits, their fp32 upcast and log-softmax).
    - host RAM at load: ``full`` loads the fp32 model on the CPU first (4N); so does rank 0 of ``fsdp``, and
      only rank 0: the other g - 1 processes build an empty skeleton and receive their shards by broadcast
      (``cpu_ram_efficient_loading``, :func:`alpaca_nb.train.weights_come_by_broadcast`); ``8bit`` streams the
      shards to the GPU (about the largest tensor, the embedding, in fp32).

    Not included: the CUDA context and allocator fragmentation (budget ~1-2 GiB per GPU), and temporary
    buffers of the optimizer step. Returns bytes under ``weights``, ``gradients``, ``optimizer_state``,
    ``activations``, ``per_gpu_total``, ``host_ram_at_load``, plus ``parameters``, ``trainable_parameters``
    and ``formula`` (one line naming the formula used).
    """
    if mode not in ("full", "fsdp", "8bit"):
        raise AlpacaNbError(f"unknown mode {mode!r}; choose one of full, fsdp, 8bit")
    if optim not in ("adamw_torch", "adamw_8bit"):
        raise AlpacaNbError(f"unknown optim {optim!r}; choose adamw_torch or adamw_8bit")
    if min(micro_batch, max_length, n_gpus) < 1:
        raise AlpacaNbError("micro_batch, max_length and n_gpus must be >= 1")
    mixed = precision in ("auto", "bf16", "fp16")
    if not mixed and precision != "fp32":
        raise AlpacaNbError(f"unknown precision {precision!r}; choose one of auto, bf16, fp16, fp32")
    shape = None if isinstance(model_config_or_params, int) else model_shape(model_config_or_params)
    n = model_config_or_params if shape is None else shape["parameters"]
    adam = 2 if optim == "adamw_8bit" else 8
    act_bytes = 2 if mixed else 4
    g = n_gpus if mode == "fsdp" else 1
    if mode == "8bit":
        if shape is None:
            raise AlpacaNbError("the 8bit estimate needs the model's shape: give a config, not a parameter count")
        trainable = _lora_parameters(shape, lora_r, tuple(lora_target_modules))
        linear = shape["linear_parameters"]
        weights = linear + 4 * (n - linear) + 4 * trainable
        gradients, optimizer_state = 4 * trainable, 8 * trainable
        formula = "8bit LoRA: 1 B/param int8 linear + 4 B/param embeddings/norms + LoRA params x 16"
    else:
        trainable = n
        weights, gradients, optimizer_state = 4 * n / g, 4 * n / g, adam * n / g
        if mode == "full":
            weights += 2 * n if mixed else 0
            formula = f"full: {4 + 4 + adam} B/param (fp32 weights 4 + grads 4 + AdamW {adam})" + \
                (" + 2 B/param 16-bit copy" if mixed else "")
        else:
            gathered = n if shape is None else shape["embedding_parameters"] + 2 * shape["layer_parameters"]
            weights += (2 if mixed else 4) * gathered
            formula = f"fsdp: {4 + 4 + adam} B/param / {g} GPUs + gathered root and 2 layers in " + \
                ("16-bit" if mixed else "fp32")
    activations = None
    if shape is not None:
        d, layers, tokens = shape["hidden_size"], shape["num_hidden_layers"], micro_batch * max_length
        per_layer = 34 * tokens * d * act_bytes // 2
        body = (layers * tokens * d * act_bytes + per_layer) if gradient_checkpointing else layers * per_layer
        activations = body + tokens * shape["vocab_size"] * (act_bytes + 8)
        formula += "; activations b*s*d*L*34 B (Korthikanti et al. 2022)" + \
            (", checkpointed: 2*d B/token/layer + 1 layer" if gradient_checkpointing else "")
    total = weights + gradients + optimizer_state + (activations or 0)
    host = {"full": 4 * n, "fsdp": 4 * n}.get(mode) or 4 * (shape["vocab_size"] * shape["hidden_size"])
    return dict(mode=mode, n_gpus=g, precision="mixed 16-bit" if mixed else "fp32", optim=optim,
                micro_batch=micro_batch, max_length=max_length, gradient_checkpointing=gradient_checkpointing,
                parameters=n, trainable_parameters=trainable, weights=int(weights), gradients=int(gradients),
                optimizer_state=int(optimizer_state), activations=None if activations is None else int(activations),
                per_gpu_total=int(total), host_ram_at_load=int(host), formula=formula)


def format_estimate(e: Mapping[str, Any]) -> str:
    """``estimate``'s result as a few readable lines (GiB = 2^30 bytes: an "80 GB" GPU holds about 79 GiB)."""
    gb = lambda key: "n/a" if e[key] is None else f"{e[key] / GIB:.1f} GiB"  # noqa: E731
    return "\n".join([
        f"memory estimate: {e['mode']} on {e['n_gpus']} GPU(s), {e['parameters'] / 1e9:.3f}B parameters "
        f"({e['trainable_parameters'] / 1e6:,.1f}M trainable), {e['precision']}, {e['optim']}, micro-batch "
        f"{e['micro_batch']} x {e['max_length']} tokens, gradient checkpointing "
        f"{'on' if e['gradient_checkpointing'] else 'off'}",
        f"  weights {gb('weights')}, gradients {gb('gradients')}, optimizer state {gb('optimizer_state')}, "
        f"activations {gb('activations')}",
        f"  per GPU: {gb('per_gpu_total')} (+ ~1-2 GiB CUDA context and fragmentation); "
        f"host RAM at load: {gb('host_ram_at_load')}",
        f"  formula: {e['formula']}"])


def estimate_for_config(config: Any, nproc: int | None = None) -> dict[str, Any]:
    """:func:`estimate` for a lesson-04 ``TrainConfig`` on ``nproc`` GPUs (fsdp; default 1). Its ``model`` may
    be a folder, a preset name of :data:`PRESETS`, or ``"default"`` (the embedded SmolLM2-135M, by its
    published shape, so that nothing is converted or loaded)."""
    model = config.model
    if model in (None, "", "default", "SmolLM2-135M-Instruct"):
        model = "smollm2-135m"
    return estimate(model, config.mode, config.micro_batch_size, config.max_length,
                    nproc or 1, config.precision, config.optim, config.gradient_checkpointing,
                    lora_r=config.lora_r, lora_target_modules=tuple(config.lora_target_modules))

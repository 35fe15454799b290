"""Lesson 04 configuration: the training modes, the presets that reproduce Alpaca's recipes, one config object.

The Alpaca rows come from stanford_alpaca's README (LLaMA-7B and -13B: batch 128, lr 2e-5 / 1e-5,
3 / 5 epochs, max length 512, weight decay 0; warmup ratio 0.03 and a cosine schedule from its command line;
random batches, prompt masked, its own template, no validation split). ``alpaca-lora-7b`` is alpaca-lora's
``finetune.py`` defaults (tloen/alpaca-lora @ 8d58d37: batch 128, micro-batch 4, lr 3e-4, 3 epochs, cutoff 256,
100 warmup steps, linear decay, random batches (``group_by_length=False``), ``train_on_inputs=True``,
``templates/alpaca.json``, ``val_set_size=2000`` evaluated every 200 steps, checkpoints every 200 steps, 3 kept,
loss logged every 10 steps). ``cpu-demo`` is a few minutes on the embedded 135M model, batched by length.
``vicuna-7b`` is FastChat's "Fine-tuning Vicuna-7B with Local GPUs" command (lm-sys/FastChat README:
4 x A100 40GB, micro-batch 2 x accumulation 16 x 4 = 128, lr 2e-5, 3 epochs, model_max_length
2048, weight decay 0, warmup ratio 0.03, cosine, gradient checkpointing, FSDP ``full_shard auto_wrap`` of
``LlamaDecoderLayer`` (``--mode fsdp``), save every 1200 steps, 10 kept; random batches, loss on the assistant).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .conversations import CONVERSATION_TEMPLATES
from .data_mix import parse_data_specs
from .errors import AlpacaNbError

MODES = ("full", "fsdp", "8bit")
OPTIMIZERS = ("adamw_torch", "adamw_8bit")
BATCHING = ("grouped", "random")
TEMPLATES = ("stanford", "alpaca-lora")  # alpaca_nb.sft.TEMPLATES
PRECISIONS = ("auto", "bf16", "fp32")

_ALPACA_7B = dict(effective_batch_size=128, micro_batch_size=4, learning_rate=2e-5, num_epochs=3, max_length=512,
                  weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine", save_steps=200, batching="random")
# save_steps 200 (stanford_alpaca's 2000 never fires in 7B's ~1,218 steps): 6 checkpoints for 7B, 10 for 13B
PRESETS: dict[str, dict] = {
    "alpaca-7b": _ALPACA_7B,
    "alpaca-13b": _ALPACA_7B | dict(learning_rate=1e-5, num_epochs=5),  # stanford_alpaca README: the 13B row
    "alpaca-lora-7b": dict(effective_batch_size=128, micro_batch_size=4, learning_rate=3e-4, num_epochs=3,
                           max_length=256, weight_decay=0.0, warmup_steps=100, lr_scheduler="linear",
                           save_steps=200, batching="random", train_on_inputs=True, template="alpaca-lora",
                           val_size=2000, eval_steps=200, save_total_limit=3, logging_steps=10),
    "cpu-demo": dict(effective_batch_size=8, micro_batch_size=4, learning_rate=5e-5, num_epochs=1,
                     max_length=256, weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine",
                     save_steps=50, batching="grouped"),
    "vicuna-7b": dict(effective_batch_size=128, micro_batch_size=2, learning_rate=2e-5, num_epochs=3, max_length=2048,
                      weight_decay=0.0, warmup_ratio=0.03, lr_scheduler="cosine", gradient_checkpointing=True,
                      save_steps=1200, save_total_limit=10, batching="random", logging_steps=1),
}


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs; ``resolved_config.json`` in the output folder is this, as JSON.

    ``effective_batch_size`` = ``micro_batch_size`` x gradient accumulation x world size; the accumulation
    is derived at run time from the number of processes. ``max_steps`` > 0 stops early (overrides epochs).
    ``template``: ``"stanford"`` or ``"alpaca-lora"`` prompts; ``train_on_inputs``: the loss covers the prompt
    too; ``val_size`` records are held out and their loss evaluated every ``eval_steps`` optimizer steps.
    ``data`` entries are ``PATH`` or ``PATH:WEIGHT`` (:mod:`alpaca_nb.data_mix`; ``mix_size`` records in a
    weighted mix, 0: the sources' total); ShareGPT conversations are rendered with ``conversation_template``
    and split at turn boundaries, a turn pair longer than ``max_length`` truncated only with
    ``truncate_long_turns`` (:mod:`alpaca_nb.conversations`).
    """

    data: list[str]
    output_dir: str
    mode: str = "full"
    model: str = "default"
    preset: str = "cpu-demo"
    effective_batch_size: int = 8
    micro_batch_size: int = 4
    learning_rate: float = 5e-5
    num_epochs: float = 1
    max_length: int = 256
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    optim: str = "adamw_torch"
    batching: str = "random"  # as both originals; the cpu-demo preset groups by length
    template: str = "stanford"
    train_on_inputs: bool = False
    conversation_template: str = "auto"
    truncate_long_turns: bool = False
    mix_size: int = 0
    val_size: int = 0
    eval_steps: int = 200
    precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 42
    max_steps: int = -1
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 1
    resume: bool = False
    overwrite: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    merge_lora: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from :meth:`to_dict`'s output (extra keys, e.g. run-time facts, are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def accumulation_steps(self, world_size: int) -> int:
        """Gradient accumulation steps that make ``effective_batch_size`` on ``world_size`` processes."""
        per_step = self.micro_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise AlpacaNbError(f"effective batch {self.effective_batch_size} is not a multiple of micro-batch "
                                f"{self.micro_batch_size} x {world_size} processes; change --micro-batch-size, "
                                "--effective-batch-size or --nproc")
        return self.effective_batch_size // per_step


def check_nproc(nproc: int | None) -> int | None:
    """``nproc`` (processes an fsdp run launches; ``None``: the default) if it is a positive count."""
    if nproc is not None and nproc < 1:
        raise AlpacaNbError(f"--nproc {nproc}: the number of processes must be 1 or more (or leave it out for "
                            "one per GPU, 2 on CPU)")
    return nproc


def capped_warmup_steps(warmup: float, total_steps: int) -> int:
    """Warmup steps for a run of ``total_steps`` optimizer steps (``warmup`` < 1 is a ratio of them, rounded up
    as the Trainer does), capped at ``total_steps - 1`` so at least one step runs at a non-zero learning rate."""
    steps = int(warmup) if warmup >= 1 else math.ceil(total_steps * warmup)
    return min(steps, max(0, total_steps - 1))


def native_bf16(cuda: bool) -> bool:
    """Whether the device computes bf16 natively: a CUDA GPU with bf16 units (not emulation), or a CPU with
    AVX512-BF16 or AMX (there bf16 autocast runs about 2.5x faster than fp32; without them it is slower)."""
    import torch

    if cuda:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def use_bf16(config: TrainConfig, cuda: bool, world_size: int) -> bool:
    """bf16 mixed precision (fp32 master weights, as Alpaca's ``--bf16 True``) for this run?

    ``precision="auto"``: where the device computes bf16 natively — on GPUs, and on CPUs for single-process
    ``full`` runs (FSDP over gloo and the 8-bit mode stay fp32 there). ``"bf16"`` / ``"fp32"`` force it.
    """
    if config.precision != "auto":
        return config.precision == "bf16"
    return native_bf16(cuda) and (cuda or (config.mode == "full" and world_size == 1))


def training_precision(config: TrainConfig, cuda: bool, world_size: int) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"``: the run's mixed precision (master weights stay fp32 in all three).

    bf16 as :func:`use_bf16`; ``precision="auto"`` on a GPU without native bf16 (T4, V100: compute capability
    < 8.0) takes fp16 with loss scaling, alpaca-lora's choice; CPUs without native bf16 stay fp32.
    """
    if use_bf16(config, cuda, world_size):
        return "bf16"
    return "fp16" if cuda and config.precision == "auto" else "fp32"


def tf32_available(cuda: bool) -> bool:
    """TF32 matmuls exist on CUDA GPUs of compute capability 8.0 (Ampere) or newer; transformers raises on
    ``tf32=True`` anywhere else (T4, V100, ROCm, CPU)."""
    import torch

    return cuda and torch.version.cuda is not None and torch.cuda.get_device_capability() >= (8, 0)


def load_dtype(config: TrainConfig, cuda: bool, world_size: int) -> str:
    """The torch dtype name the base weights load in.

    ``full`` and ``fsdp`` keep fp32 master weights (bf16/fp16 autocast computes from them, and the optimizer
    updates them in fp32). ``8bit`` on a GPU loads in the run's half precision (alpaca-lora loads fp16): the
    int8 layers are quantized from it and peft casts the remaining weights to fp32 for training anyway.
    """
    precision = training_precision(config, cuda, world_size)
    if config.mode == "8bit" and cuda and precision in ("bf16", "fp16"):
        return {"bf16": "bfloat16", "fp16": "float16"}[precision]
    return "float32"


def resolve_config(preset: str = "cpu-demo", **overrides) -> TrainConfig:
    """The preset's values with ``overrides`` on top (``None`` means: keep the preset's value), validated."""
    if preset not in PRESETS:
        raise AlpacaNbError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)} - {"preset"}
    unknown = set(overrides) - known
    if unknown:
        raise AlpacaNbError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    values = PRESETS[preset] | {k: v for k, v in overrides.items() if v is not None}
    config = TrainConfig(preset=preset, **values)
    config.data = [str(p) for p in config.data]
    config.output_dir = str(config.output_dir)
    for name, value, allowed in (("mode", config.mode, MODES), ("optim", config.optim, OPTIMIZERS),
                                 ("batching", config.batching, BATCHING), ("precision", config.precision, PRECISIONS),
                                 ("template", config.template, TEMPLATES),
                                 ("conversation template", config.conversation_template, CONVERSATION_TEMPLATES)):
        if value not in allowed:
            raise AlpacaNbError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    if config.mode == "8bit" and config.optim != "adamw_torch":
        raise AlpacaNbError("--optim adamw_8bit is for full fine-tuning; 8bit mode trains LoRA adapters only")
    if config.micro_batch_size < 1 or config.effective_batch_size < 1 or config.max_length < 2:
        raise AlpacaNbError("micro_batch_size, effective_batch_size must be >= 1 and max_length >= 2")
    parse_data_specs(config.data)  # a bad PATH:WEIGHT fails here, before any loading
    if config.mix_size < 0:
        raise AlpacaNbError(f"--mix-size {config.mix_size}: give a positive number of records (0: the sources' total)")
    if config.val_size < 0 or config.eval_steps < 1:
        raise AlpacaNbError(f"--val-size {config.val_size} / --eval-steps {config.eval_steps}: the validation "
                            "split must be >= 0 records (0: none) and eval steps >= 1")
    return config

"""Lesson 04: supervised fine-tuning with the Hugging Face Trainer, in one of three modes.

- ``full``: every weight trained on one device, even when more GPUs are visible (bf16 mixed precision where
  the GPU or CPU computes bf16 natively, else fp16 with loss scaling on a GPU (T4, V100) and fp32 on a CPU;
  TF32 matmuls from Ampere on; ``precision`` forces bf16 or fp32; weights stay fp32 in every mode but 8bit);
  ``optim="adamw_8bit"`` swaps in bitsandbytes' 8-bit AdamW (optimizer state 4x smaller).
- ``fsdp``: FSDP ``full_shard`` with the decoder layer class auto-wrapped, one process per GPU under torchrun
  (Alpaca's 7B recipe: 4 A100s). :func:`train` launches torchrun itself when it is not already under it.
  On CPU it runs over gloo (accelerate only shards multi-GPU runs, so :class:`SFTTrainer` switches it on).
- ``8bit``: the base model loaded in 8 bits with bitsandbytes (LLM.int8) and LoRA adapters trained with peft,
  alpaca-lora style (on a GPU the base loads in bf16/fp16, the run's precision); the adapters are saved and,
  with ``merge_lora``, merged into a full-precision copy.

Every run writes into ``output_dir``: ``model/`` (or ``adapter/`` [+ ``model/`` when merged]) with its
tokenizer, ``resolved_config.json``, ``loss_log.jsonl``, ``loss_curve.png``, ``train_summary.json`` and
``checkpoints/`` (resumable with ``resume=True``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .checkpoints import (CHECKPOINTS_DIR, FSDP_CHECKPOINT_CONFIG, is_main_process,  # noqa: F401 (re-exported)
                          resume_checkpoint, save_final_model, skip_final_checkpoint)
from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json, write_jsonl
from .folder_lock import locks_output_folder
from .model import attach_lora_adapter, resolve_model
from .data_mix import load_training_data
from .sft import add_pad_token, preprocess, split_validation
from .train_config import (TrainConfig, capped_warmup_steps, check_nproc, load_dtype, tf32_available,
                           training_precision)
from .train_report import (loss_log, loss_summary, non_pad_fraction, peak_memory,  # noqa: F401 (re-exported)
                           plot_loss_curve, weights_watch)

CONFIG_FILE = "resolved_config.json"
SUMMARY_FILE = "train_summary.json"
LOSS_LOG_FILE = "loss_log.jsonl"


# --- launching --------------------------------------------------------------------------------------

def under_torchrun() -> bool:
    """True inside a process that torchrun (or another distributed launcher) started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_nproc() -> int:
    """One process per GPU; two CPU processes when there is no GPU."""
    import torch

    return torch.cuda.device_count() or 2


def launch_torchrun(config: TrainConfig, nproc: int | None = None) -> dict[str, Any]:
    """Run ``config`` under ``torchrun --standalone --nproc_per_node nproc`` and return its summary."""
    nproc = nproc or default_nproc()
    config.accumulation_steps(nproc)
    load_training_data(config.data, config.mix_size, config.seed)  # bad data fails here, not in every process
    _finished_run(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, config.to_dict())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "alpaca_nb.train", str(out / CONFIG_FILE)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                    os.environ.get("PYTHONPATH")]))}
    rc = subprocess.run(cmd, env=env).returncode
    if rc:
        raise AlpacaNbError(f"torchrun exited with status {rc} (command: {' '.join(cmd)}); see its log above")
    return read_json(out / SUMMARY_FILE)


# --- model, data, trainer ----------------------------------------------------------------------------

def _device() -> str:
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def weights_come_by_broadcast(config: TrainConfig) -> bool:
    """True in the FSDP processes other than rank 0: they never read the weights from disk. Rank 0 loads them,
    and accelerate's RAM-efficient loading (``cpu_ram_efficient_loading``) broadcasts each tensor into the
    shards while wrapping, so host RAM holds one copy of the model (not one per process: 8 x 52 GB for 13B)."""
    return config.mode == "fsdp" and int(os.environ.get("WORLD_SIZE", 1)) > 1 and int(os.environ.get("RANK", 0)) > 0


def empty_model(model_dir: str | Path, dtype):
    """The model's skeleton with uninitialised CPU parameters (``torch.empty``: the OS commits no page until
    it is written, so this costs next to no RAM) and real buffers (e.g. the rotary frequencies).

    Not ``meta`` parameters: accelerate matches the optimizer's parameters to their shards by ``data_ptr()``,
    which is 0 for every meta tensor, so all of them would map to one shard and the others never train.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=dtype)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.to_empty(device="cpu")
    for name, value in buffers.items():
        model.get_buffer(name).copy_(value)
    model.tie_weights()  # from_config leaves tied embeddings as two parameters; from_pretrained ties them
    return model


def load_model(config: TrainConfig):
    """The model to train and its tokenizer (a pad token added if missing), ready for the chosen mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model(config.model)
    if not Path(model_dir, "config.json").is_file():
        raise AlpacaNbError(f"{model_dir}: not a Hugging Face model folder (no config.json); give --model DIR")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = getattr(torch, load_dtype(config, torch.cuda.is_available(), int(os.environ.get("WORLD_SIZE", 1))))
    if config.mode != "8bit":
        if weights_come_by_broadcast(config):
            model = empty_model(model_dir, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        add_pad_token(tokenizer, model)
        return model, tokenizer

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": _device()}, dtype=dtype)
    add_pad_token(tokenizer, model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tokenizer


def _trainer_class():
    """:class:`transformers.Trainer` that counts real and padded tokens, and runs FSDP on CPU too."""
    from transformers import Trainer

    class SFTTrainer(Trainer):
        real_tokens = 0
        padded_tokens = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(skip_final_checkpoint())

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            self.real_tokens += int(mask.sum())
            self.padded_tokens += mask.numel()
            return super().training_step(model, inputs, num_items_in_batch)

        def create_scheduler(self, num_training_steps, optimizer=None):
            # ceil(ratio x steps) warmup steps would run a 1-step run at learning rate 0: cap at steps - 1
            self.args.warmup_steps = capped_warmup_steps(self.args.warmup_steps, num_training_steps)
            return super().create_scheduler(num_training_steps, optimizer)

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            if self.args.fsdp_plugin_args is None or self.is_fsdp_enabled:
                return
            # accelerate 1.15 routes multi-CPU runs to DDP even when an FSDP plugin is given; on CPU
            # (gloo) we switch FSDP on ourselves so the CPU run exercises the same sharding as GPUs.
            from accelerate.state import PartialState
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.is_fsdp_enabled = True

    return SFTTrainer


def training_arguments(config: TrainConfig, world_size: int, layer_class: str | None):
    """The Trainer's arguments for ``config`` on ``world_size`` processes, each driving one device."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if config.mode == "fsdp":
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = {"transformer_layer_cls_to_wrap": [layer_class], "reshard_after_forward": True,
                                 "cpu_ram_efficient_loading": True,  # see weights_come_by_broadcast
                                 "activation_checkpointing": config.gradient_checkpointing, **FSDP_CHECKPOINT_CONFIG}
    else:
        kwargs["activation_checkpointing"] = config.gradient_checkpointing
    precision = training_precision(config, cuda, world_size)
    args = TrainingArguments(
        output_dir=str(Path(config.output_dir) / CHECKPOINTS_DIR),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.accumulation_steps(world_size),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio or config.warmup_steps,  # a float < 1 is a ratio
        lr_scheduler_type=config.lr_scheduler,
        optim="adamw_bnb_8bit" if config.optim == "adamw_8bit" else config.optim,
        train_sampling_strategy="group_by_length" if config.batching == "grouped" else "random",
        eval_strategy="steps" if config.val_size else "no",
        eval_steps=config.eval_steps if config.val_size else None,
        per_device_eval_batch_size=config.micro_batch_size,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        bf16=precision == "bf16", fp16=precision == "fp16",
        tf32=tf32_available(cuda) or None,  # True raises before Ampere
        use_cpu=not cuda,
        ddp_backend="gloo" if world_size > 1 and not cuda else None,
        report_to=[],
        **kwargs,
    )
    args._n_gpu = min(args.n_gpu, 1)  # not n_gpu x the batch (nn.DataParallel, or 8-bit fed n_gpu micro-batches)
    return args


def build_trainer(config: TrainConfig, model, tokenizer, dataset: Sequence[dict], callbacks: Sequence[Any] = (),
                  eval_dataset: Sequence[dict] | None = None):
    """The Trainer for ``config``: length-grouped (or random) micro-batches padded by a seq2seq collator
    (labels padded with -100), on as many processes as this run has; ``eval_dataset`` is the validation split."""
    from transformers import DataCollatorForSeq2Seq

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    layer_class = next(iter(sorted(getattr(model, "_no_split_modules", None) or [])), None)
    return _trainer_class()(
        model=model, args=training_arguments(config, world_size, layer_class), train_dataset=dataset,
        eval_dataset=eval_dataset or None,
        processing_class=tokenizer, callbacks=list(callbacks),
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt"))


# --- the run -------------------------------------------------------------------------------------------

def _finished_run(config: TrainConfig) -> None:
    """Refuse to replace a finished run (its summary, ``model/`` or ``adapter/``) unless ``overwrite``;
    ``resume`` goes on as before. Overwriting drops the old summary at once, so it never describes the new run."""
    out = Path(config.output_dir)
    found = [name for name in (SUMMARY_FILE, "model", "adapter") if (out / name).exists()]
    if not found or config.resume:
        return
    if not config.overwrite:
        raise AlpacaNbError(f"{out} holds a finished run ({', '.join(found)}); pass --overwrite to replace it, "
                            "or choose another --output-dir")
    if is_main_process():
        (out / SUMMARY_FILE).unlink(missing_ok=True)


def _all_reduce(values: list[float], op: str) -> list[float]:
    """Sum or max of ``values`` over all processes (identity outside a distributed run)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device() if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def merge_lora(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter into a full-precision copy of its base model and save it (with the tokenizer).

    An 8-bit base cannot absorb the adapter, so the base is reloaded in fp32 (bf16 on a GPU) first.
    """
    import torch
    from peft import PeftConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base_dir = resolve_model(PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    merged = attach_lora_adapter(base, adapter_dir, tokenizer).merge_and_unload()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


@locks_output_folder("alpaca-nb train", lambda a: a["config"].output_dir)
def train(config: TrainConfig, callbacks: Sequence[Any] = (), nproc: int | None = None) -> dict[str, Any]:
    """Fine-tune ``config.model`` on ``config.data``; return (and write) the run's summary.

    ``fsdp`` outside torchrun relaunches itself under torchrun with ``nproc`` processes. ``callbacks``
    are extra ``transformers.TrainerCallback``s (single-process modes only). An interrupted run keeps its
    checkpoints; run again with ``resume=True`` to continue from the last one.
    """
    check_nproc(nproc)
    if config.mode == "fsdp" and not under_torchrun():
        if callbacks:
            raise AlpacaNbError("callbacks cannot cross into the torchrun processes of an fsdp run")
        return launch_torchrun(config, nproc)
    from transformers import set_seed

    start = time.perf_counter()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    config.accumulation_steps(world_size)  # fail before any work on a batch size that does not divide
    records, data_mix = load_training_data(config.data, config.mix_size, config.seed)  # the same draw on every rank
    _finished_run(config)
    resume_from = resume_checkpoint(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    model, tokenizer = load_model(config)
    train_records, val_records = split_validation(records, config.val_size, config.seed)
    options = (config.max_length, config.template, config.train_on_inputs, config.conversation_template,
               config.truncate_long_turns)
    dataset = preprocess(train_records, tokenizer, *options)
    val = preprocess(val_records, tokenizer, *options) if val_records else None
    watch = weights_watch()
    trainer = build_trainer(config, model, tokenizer, dataset, [*callbacks, watch], eval_dataset=val)
    args = trainer.args
    n_total = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    main = trainer.is_world_process_zero()
    resolved = config.to_dict() | {"model_dir": resolve_model(config.model), "world_size": world_size,
                                   "gradient_accumulation_steps": args.gradient_accumulation_steps,
                                   "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
                                   "num_examples": len(dataset), "num_val_examples": len(val or [])}
    if main:
        atomic_write_json(out / CONFIG_FILE, resolved)

    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t0
    real, padded = _all_reduce([trainer.real_tokens, trainer.padded_tokens], "sum")
    peak, peak_kind = peak_memory()
    peak = _all_reduce([peak], "max")[0]
    weights_changed = bool(_all_reduce([float(bool(watch.changed))], "max")[0])
    readers = int(_all_reduce([float(not weights_come_by_broadcast(config))], "sum")[0])

    if config.mode == "8bit":
        adapter_dir = save_final_model(trainer, out / "adapter")
        model_dir = merge_lora(adapter_dir, out / "model") if config.merge_lora and main else None
    else:
        adapter_dir, model_dir = None, save_final_model(trainer, out / "model")
    log = loss_log(trainer.state.log_history)
    summary = {
        "mode": config.mode, "preset": config.preset, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "num_examples": len(dataset), "num_val_examples": len(val or []),
        "truncated_examples": dataset.truncated_examples, "dropped_examples": dataset.dropped_examples,
        "conversation_examples": dataset.conversation_examples, "split_conversations": dataset.split_conversations,
        "data_mix": data_mix,
        **loss_summary(log),
        "tokens_seen": int(real), "padded_tokens": int(padded),
        "non_pad_fraction": real / padded if padded else None,
        "tokens_per_second": real / train_seconds if train_seconds else None,
        "peak_memory_bytes": int(peak), "peak_memory_kind": peak_kind,
        "wall_seconds": time.perf_counter() - start, "train_seconds": train_seconds,
        "world_size": world_size, "micro_batch_size": config.micro_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "effective_batch_size": args.train_batch_size * args.gradient_accumulation_steps * world_size,  # x n_gpu
        "precision": resolved["precision"], "device": str(args.device),
        "wrapped_as": type(trainer.model_wrapped).__name__,  # e.g. FSDPLlamaForCausalLM under fsdp
        "parameters": n_total, "trainable_parameters": n_trainable, "resumed_from": resume_from,
        "model_dir": str(model_dir) if model_dir else None, "adapter_dir": str(adapter_dir) if adapter_dir else None,
        "warmup_steps": int(args.warmup_steps), "weights_changed": weights_changed,
        "processes_that_read_the_weights": readers,  # 1 under FSDP: rank 0 broadcasts to the others
    }
    if main:
        if not weights_changed:
            print(f"warning: the trainable weights did not change (steps: {summary['steps']}, learning rate: "
                  f"{config.learning_rate}, warmup steps: {summary['warmup_steps']}); the saved model is the one "
                  "it started from", file=sys.stderr)
        write_jsonl(out / LOSS_LOG_FILE, log)
        if summary["train_loss_first"] is not None:
            import matplotlib.pyplot as plt

            plt.close(plot_loss_curve(log, out, title=f"{config.mode} fine-tuning ({config.preset})"))
        atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


if __name__ == "__main__":  # torchrun entry point: python -m alpaca_nb.train resolved_config.json
    train(TrainConfig.from_dict(read_json(sys.argv[1])))

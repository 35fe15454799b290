"""Lesson 04 checkpoints: where a run resumes from, what a checkpoint holds, and the final model export.

A run writes ``checkpoints/checkpoint-N/`` every ``save_steps`` optimizer steps (the Trainer's own format, resumable
with ``resume=True``). Under FSDP every checkpoint is a *sharded* state dict (:data:`FSDP_CHECKPOINT_CONFIG`): each
rank writes its own shard of the weights and of the optimizer state with ``torch.distributed.checkpoint``
(``pytorch_model_fsdp_0/`` and ``optimizer_0/``, one ``.distcp`` file per rank), so no rank gathers the full model
and its optimizer state (about 108 GB for 7B) at every save. The final ``model/`` is still gathered into one plain
``from_pretrained`` folder by :func:`save_final_model`.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import AlpacaNbError
from .train_config import TrainConfig

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is incomplete
# transformers' fsdp_config key: intermediate checkpoints as per-rank shards (the default is one gathered copy)
FSDP_CHECKPOINT_CONFIG = {"state_dict_type": "SHARDED_STATE_DICT"}


def is_main_process() -> bool:
    """True outside a distributed run, and in its rank-0 process."""
    return int(os.environ.get("RANK", 0)) == 0


def _checkpoint_dirs(folder: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, lowest step first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name[len("checkpoint-"):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-"):]))


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` in ``folder`` that was written to the end (holds ``trainer_state.json``).
    A newer one cut off mid-write (a run killed while saving) cannot be resumed from: it is removed (by rank 0),
    with a note on stderr, so the resumed run's own save at that step starts clean."""
    for path in reversed(_checkpoint_dirs(folder)):
        if (path / TRAINER_STATE).is_file():
            return path
        if is_main_process():
            print(f"note: {path} is incomplete (no {TRAINER_STATE}: the run stopped while writing it); removing it",
                  file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None


def resume_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from (``None``: start fresh); refuses to silently overwrite earlier ones."""
    folder = Path(config.output_dir) / CHECKPOINTS_DIR
    if not (folder.is_dir() and _checkpoint_dirs(folder)):
        return None
    if config.resume:
        last = last_complete_checkpoint(folder)
        return str(last) if last else None
    if not config.overwrite:
        raise AlpacaNbError(f"{folder} holds checkpoints of an earlier run; pass --resume to continue it or "
                            "--overwrite to start again")
    if is_main_process():  # a later --resume must not pick up a checkpoint of the discarded run
        shutil.rmtree(folder, ignore_errors=True)
    return None


def skip_final_checkpoint():
    """A ``TrainerCallback`` that skips the checkpoint at the last step: the final model goes to ``model/``, and a
    checkpoint would only duplicate it (plus twice its size in optimizer state). Regular ones are kept."""
    from transformers import TrainerCallback

    class SkipFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps and state.global_step % args.save_steps:
                control.should_save = False

    return SkipFinalCheckpoint()


def save_final_model(trainer, target: Path) -> Path:
    """``trainer.save_model`` into ``target`` atomically (a temporary folder renamed when complete).

    Under FSDP the model is gathered into one full state dict for this save even though checkpoints are sharded:
    with ``SHARDED_STATE_DICT`` the Trainer's ``save_model`` writes nothing, so the plugin is switched to
    ``FULL_STATE_DICT`` for the call (and back after), and ``target`` is a plain ``from_pretrained`` folder.
    """
    tmp = target.with_name(f".{target.name}.tmp")
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None) if trainer.is_fsdp_enabled else None
    previous = plugin.state_dict_type if plugin is not None else None
    try:
        if plugin is not None:
            plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(tmp))
    finally:
        if plugin is not None:
            plugin.state_dict_type = previous
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if not any(tmp.glob("*.safetensors")) and not any(tmp.glob("*.bin")):
            raise AlpacaNbError(f"{tmp}: the final save wrote no weights; the checkpoints in "
                                f"{target.parent / CHECKPOINTS_DIR} are kept, resume with --resume")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target

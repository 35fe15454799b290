"""Lesson 04, what a fine-tuning run reports besides its model: the loss log and curve (training and validation
loss), the share of real tokens in its batches, its peak memory, and whether the weights moved at all
(a run at learning rate 0 would otherwise save the base model under a new name)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

LOSS_CURVE = "loss_curve"
SMOOTHING = 8  # steps in the loss curve's running mean


def loss_log(log_history: Sequence[dict]) -> list[dict[str, Any]]:
    """The loss entries of ``Trainer.state.log_history``, in order: training ones (step, epoch, loss, learning
    rate, grad norm) and, with a validation split, evaluation ones (step, epoch, eval_loss)."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm", "eval_loss")
    return [{k: h[k] for k in keys if k in h} for h in log_history if "loss" in h or "eval_loss" in h]


def loss_summary(log: Sequence[dict]) -> dict[str, float | None]:
    """First and last training loss and the last validation loss of a :func:`loss_log` (``None`` if absent)."""
    train = [e["loss"] for e in log if "loss" in e]
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    return {"train_loss_first": train[0] if train else None, "train_loss_last": train[-1] if train else None,
            "eval_loss_last": evals[-1] if evals else None}


def plot_loss_curve(log: Sequence[dict], out_dir: str | Path | None = None, title: str = "training loss"):
    """The loss per optimizer step, with a running mean once there are enough steps, and the validation loss
    where the log has it; saved as ``loss_curve.png`` in ``out_dir`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    train = [e for e in log if "loss" in e]
    evals = [e for e in log if "eval_loss" in e]
    steps, losses = [e["step"] for e in train], [e["loss"] for e in train]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="o" if len(train) < 40 else None, alpha=0.5, label="per step")
    if len(train) >= 2 * SMOOTHING:
        mean = [sum(losses[max(0, i - SMOOTHING + 1): i + 1]) / len(losses[max(0, i - SMOOTHING + 1): i + 1])
                for i in range(len(losses))]
        ax.plot(steps, mean, lw=2, label=f"running mean of {SMOOTHING}")
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], marker="s", lw=2,
                label="validation")
    if len(train) >= 2 * SMOOTHING or evals:
        ax.legend()
    ax.set(xlabel="optimizer step", ylabel="loss (trained tokens)", title=title)
    ax.grid(alpha=0.3)
    if out_dir is not None:
        save_figure(fig, out_dir, LOSS_CURVE, formats=("png",))
    return fig


def non_pad_fraction(batches) -> float:
    """Real tokens / all tokens over ``batches`` (dicts with an ``attention_mask``), e.g. a train dataloader."""
    real = padded = 0
    for batch in batches:
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return real / padded


def peak_memory() -> tuple[int, str]:
    """This process's peak memory in bytes and what was measured (CUDA allocations, or the CPU's max RSS)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"


def weights_fingerprint(model) -> list[list[float]]:
    """The float64 sum and L2 norm of each trainable parameter of ``model`` (of this process's shard under
    FSDP): one pass over the weights, no copy of the model, and changed by any step that moves a weight."""
    import torch

    with torch.no_grad():
        local = [p.to_local() if hasattr(p, "to_local") else p  # FSDP2 DTensor: its shard, no collectives
                 for p in model.parameters() if p.requires_grad]
        rows = [torch.stack([t.sum(dtype=torch.float64), torch.linalg.vector_norm(t, dtype=torch.float64)])
                for t in local]
        return torch.stack(rows).tolist() if rows else []


def weights_watch():
    """A ``TrainerCallback`` that fingerprints the trainable weights when training begins (after a resumed
    checkpoint is loaded) and ends; its ``changed`` is then True or False (``None`` before the end)."""
    from transformers import TrainerCallback

    class WeightsWatch(TrainerCallback):
        before: list | None = None
        changed: bool | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.before = weights_fingerprint(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.changed = weights_fingerprint(model) != self.before

    return WeightsWatch()

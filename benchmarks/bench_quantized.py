"""Benchmark: what quantisation costs and saves, per mode, as ratios against fp32, in one run (lesson 07).

Modes: ``fp32``, ``bf16``, ``8bit`` (bitsandbytes LLM.int8), ``4bit`` (bitsandbytes NF4 + double quantisation)
and ``gguf-q8_0`` (our GGUF export read back by transformers, which dequantises it to fp32: its speed and memory
are fp32's, so only its file size and its loss say anything about llama.cpp's Q8_0). For each mode, in a fresh
process (so that peak memory is that mode's alone), on the GPU when there is one, else the CPU:

- **weights**: ``model.get_memory_footprint()`` (gguf: the file on disk);
- **peak**: the process's peak resident memory over what it held after its imports (CPU: Linux ``VmHWM``, reset
  first; safetensors weights are memory-mapped, so fp32 counts the file's pages as they are read), or
  ``torch.cuda.max_memory_allocated`` (GPU), through loading and generation: what running the model takes (the
  loss pass comes after, its batch of 8 x 512 x 49,152 logits would dominate every mode);
- **tokens/s**: greedy decoding of ``--new-tokens`` tokens (forced, no early EOS) for one Alpaca prompt, batch 1;
- **loss**: teacher-forced loss (nats/token) of text-davinci-003's answers on ``--tasks`` of the 252 held-out
  user-oriented tasks (``alpaca_nb.heldout.teacher_forced_loss``, no autocast: each mode computes in its own way).

A mode that does not run here prints why (``alpaca_nb.quantized``) instead of numbers.

    python benchmarks/bench_quantized.py [--model DIR] [--tasks 32] [--new-tokens 32] [--threads N]
                                         [--modes fp32 bf16 8bit 4bit gguf-q8_0] [--json FILE]

On a CPU shared with other jobs, ``--threads 1`` (two threads fighting other jobs for two cores make everything
several times slower, see the README's lesson-05 benchmark).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("fp32", "bf16", "8bit", "4bit", "gguf-q8_0")
MIB = 2**20


def _reset_peak_rss() -> int:
    """Reset the process's peak resident memory (Linux ``clear_refs`` 5) and return the current one, in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except OSError:  # not Linux: the peak since start, a lower bound of the mode's own peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _peak_rss() -> int:
    try:
        return _status_bytes("VmHWM")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def _load(mode: str, model: str | None, device: str, gguf_path: str | None):
    from alpaca_nb import answers

    if mode in ("8bit", "4bit"):
        return answers.load_local_model(model, quantize=mode, device=device), None
    if mode == "gguf-q8_0":
        from alpaca_nb.gguf_check import load_gguf_model

        return load_gguf_model(gguf_path), Path(gguf_path).stat().st_size
    lm = answers.load_local_model(model, dtype={"fp32": "float32", "bf16": "bfloat16"}[mode])
    lm.model.to(device)
    return lm, None


def measure(mode: str, model: str | None, gguf_path: str | None, tasks: int, new_tokens: int, threads: int | None,
            queue) -> None:
    """One mode in this (fresh) process; puts a result dict on ``queue``."""
    import bitsandbytes  # noqa: F401 - libraries are loaded before the baseline: peak counts the model's memory
    import torch
    from transformers.models.llama import modeling_llama  # noqa: F401

    from alpaca_nb import heldout
    from alpaca_nb.errors import AlpacaNbError
    from alpaca_nb.heldout import teacher_forced_loss
    from alpaca_nb.quantized import decode_speed, default_device

    if threads:
        torch.set_num_threads(threads)
    device = default_device()
    items = heldout.heldout_tasks(tasks)
    base_rss = _reset_peak_rss()
    start = time.perf_counter()
    try:
        lm, file_bytes = _load(mode, model, device, gguf_path)
    except AlpacaNbError as e:
        queue.put({"mode": mode, "error": str(e)})
        return
    load_s = time.perf_counter() - start
    speed = decode_speed(lm, new_tokens)
    if device == "cuda":  # peak of running it (load + decoding), before the batched loss pass
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss() - base_rss
    loss = teacher_forced_loss(lm, items, bf16=False, progress=False)["loss"]
    queue.put({"mode": mode, "device": device, "weights_mib": (file_bytes or lm.model.get_memory_footprint()) / MIB,
               "peak_mib": peak / MIB, "tokens_per_s": speed, "loss": loss, "load_s": load_s,
               "n_tasks": len(items), "threads": torch.get_num_threads()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--tasks", type=int, default=32, help="held-out tasks in the loss (of 252)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = None
        if "gguf-q8_0" in args.modes:  # exported here, so that the export's memory is not counted in the mode's peak
            from alpaca_nb.export_gguf import export_gguf

            gguf_path = export_gguf(args.model, Path(tmp) / "model-q8_0.gguf", quant="q8_0")["gguf"]
        for mode in args.modes:
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(mode, args.model, gguf_path, args.tasks, args.new_tokens,
                                                         args.threads, queue))
            proc.start()
            proc.join()
            rows.append(queue.get() if not queue.empty() else {"mode": mode, "error": f"exit code {proc.exitcode}"})
            print(json.dumps(rows[-1]), file=sys.stderr)
    base = next((r for r in rows if r["mode"] == "fp32" and "error" not in r), None)
    print(f"\n{'mode':10s} {'weights MiB':>12s} {'peak MiB':>9s} {'tokens/s':>9s} {'loss':>7s}   "
          f"vs fp32: weights  peak  speed  loss")
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:10s} does not run here: {r['error']}")
            continue
        ratio = "" if base is None else (
            f"  x{r['weights_mib'] / base['weights_mib']:.2f}  x{r['peak_mib'] / base['peak_mib']:.2f}"
            f"  x{r['tokens_per_s'] / base['tokens_per_s']:.2f}  {r['loss'] - base['loss']:+.4f}")
        print(f"{r['mode']:10s} {r['weights_mib']:12.0f} {r['peak_mib']:9.0f} {r['tokens_per_s']:9.1f} {r['loss']:7.4f}"
              f"           {ratio}")
    if rows and "device" in rows[0]:
        print(f"device: {rows[0]['device']}, torch threads {rows[0]['threads']}, loss on {rows[0]['n_tasks']} held-out "
              "tasks; gguf-q8_0 runs dequantised to fp32 in transformers (weights = file size)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

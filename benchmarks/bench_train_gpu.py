"""GPU throughput of lesson 04's three modes on a LLaMA-architecture model built from a config (no download).

For ``full``, ``8bit`` (LoRA on an LLM.int8 base) and ``fsdp`` (all visible GPUs, under torchrun) it runs
``alpaca_nb.train.train`` on AlpacaEval's 805 instructions with text-davinci-003's answers, each mode in its
own process (``--mode``; fresh CUDA memory statistics, reset at its start), and prints real (non-pad) tokens/s,
model FLOPs utilisation and peak GPU memory, next to ``alpaca_nb.memory.estimate``'s estimate. Timing covers
steady-state optimizer steps only: ``--warmup-steps`` steps (start-up, CUDA kernels' first calls) run first,
then ``--steps`` steps are timed between two synchronised step ends.

FLOPs per real token (Kaplan et al., 2020; Chowdhery et al., 2022, appendix B): full and fsdp
``6·N + 12·L·d·s``, 8bit LoRA ``4·N + 12·L·d·s`` (no weight gradients for the frozen base), with N the
parameters that do matrix multiplies (all but the input embedding lookup and norms; lm_head counted),
L layers, d hidden size, s the mean real sequence length. Padding is not counted; recomputation under
gradient checkpointing is not counted either (MFU, not hardware FLOPs utilisation).
MFU = FLOPs per token x real tokens/s / (GPUs x the GPU's dense peak, :func:`peak_tflops`).

    python benchmarks/bench_train_gpu.py [--size 1b|7b] [--steps 20] [--micro-batch-size 8] [--peak-tflops 989]
    python benchmarks/bench_train_gpu.py --allow-cpu --size tiny     # checks this script on a CPU (~2-3 min)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # LLaMA shapes: TinyLlama-1.1B and LLaMA-7B; "tiny" only checks this script on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32),
}
# Dense (no sparsity) tensor-core peaks per GPU in TFLOP/s, bf16 unless marked fp16, first match wins (order
# matters: "A100" before "A10"). The vendor datasheets quote sparse figures as 2x these:
# A100 SXM/PCIe: nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
# H100 SXM/PCIe/NVL: resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 datasheet)
# H200 SXM/NVL: nvidia.com/en-us/data-center/h200/ ; L4: nvidia.com/en-us/data-center/l4/ (L4 datasheet)
# A10: nvidia.com/en-us/data-center/products/a10-gpu/ ; T4: nvidia.com/en-us/data-center/tesla-t4/ (fp16)
# V100 SXM2 125 / PCIe 112: images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf
PEAKS: list[tuple[str, float, str]] = [
    (r"H100.*(PCIe)", 756.0, "bf16"), (r"H100.*NVL", 835.0, "bf16"), (r"H100", 989.0, "bf16"),  # H100 SXM
    (r"H200.*NVL", 835.0, "bf16"), (r"H200", 989.0, "bf16"),
    (r"A100", 312.0, "bf16"), (r"\bL4\b", 121.0, "bf16"), (r"\bA10\b", 125.0, "bf16"),
    (r"\bT4\b", 65.0, "fp16"), (r"V100.*PCIE", 112.0, "fp16"), (r"V100", 125.0, "fp16"),
]
FLOPS_FORMULA = {"lora": "4·N + 12·L·d·s", "full": "6·N + 12·L·d·s"}


def peak_tflops(device_name: str) -> tuple[float, str] | None:
    """Dense peak TFLOP/s and its dtype for a GPU named as ``torch.cuda.get_device_name`` names it
    (e.g. ``"NVIDIA H100 80GB HBM3"`` is the SXM part); ``None`` when the GPU is not in :data:`PEAKS`."""
    for pattern, tflops, dtype in PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return tflops, dtype
    return None


def flops_per_token(shape: dict, seq_len: float, lora: bool = False) -> float:
    """Training FLOPs per real token: ``6·N + 12·L·d·s`` (LoRA: ``4·N + ...``), N the matmul parameters
    (``alpaca_nb.memory.model_shape``'s count without the input embedding and the norms)."""
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    norms = (2 * layers + 1) * d
    n_matmul = shape["parameters"] - shape["vocab_size"] * d - norms
    return (4 if lora else 6) * n_matmul + 12 * layers * d * seq_len


# --- child processes: build the model, run one mode ---------------------------------------------------

def build_model(size: str, out: Path) -> dict:
    """A randomly initialised LLaMA of ``size`` saved to ``out`` with the embedded tokenizer; its config dict."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alpaca_nb.model import default_model_dir

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **SIZES[size])
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return config.to_dict()


def run_mode(args: argparse.Namespace) -> None:
    """One mode in this process (under torchrun for fsdp); writes ``result-RANK.json`` into its folder."""
    import torch
    from transformers import TrainerCallback

    from alpaca_nb import train as train_module
    from alpaca_nb.train_config import resolve_config

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    work, rank = Path(args.work), int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    marks: list[tuple[float, int, int]] = []  # (time, real tokens, sequences) at each optimizer step's end
    counts = {"real": 0, "seqs": 0}
    base_class = train_module._trainer_class

    def counting_trainer_class():
        class Counting(base_class()):
            def training_step(self, model, inputs, num_items_in_batch=None):
                counts["real"] += int(inputs["attention_mask"].sum())
                counts["seqs"] += int(inputs["attention_mask"].shape[0])
                return super().training_step(model, inputs, num_items_in_batch)
        return Counting

    class StepClock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), counts["real"], counts["seqs"]))

    train_module._trainer_class = counting_trainer_class
    config = resolve_config("cpu-demo", data=[str(work / "data.json")], model=str(work / "model"),
                            output_dir=str(work / args.mode), mode=args.mode, batching="random",
                            micro_batch_size=args.micro_batch_size, max_length=args.max_length,
                            effective_batch_size=args.micro_batch_size * world,
                            max_steps=args.warmup_steps + args.steps, save_steps=10**6, logging_steps=10**6,
                            gradient_checkpointing=args.gradient_checkpointing, overwrite=True)
    summary = train_module.train(config, callbacks=[StepClock()])
    (t0, real0, seqs0), (t1, real1, seqs1) = marks[args.warmup_steps - 1], marks[-1]
    result = dict(seconds=t1 - t0, real_tokens=real1 - real0, sequences=seqs1 - seqs0, world=world,
                  peak_memory_bytes=summary["peak_memory_bytes"], peak_memory_kind=summary["peak_memory_kind"],
                  reserved_bytes=torch.cuda.max_memory_reserved() if cuda else None,
                  precision=summary["precision"], device=torch.cuda.get_device_name() if cuda else "cpu")
    (work / args.mode / f"result-{rank}.json").write_text(json.dumps(result))


# --- the parent: one process per mode, then the table -------------------------------------------------

def _child(args: argparse.Namespace, mode: str, world: int, work: Path) -> subprocess.CompletedProcess:
    script = [str(Path(__file__).resolve()), "--mode", mode, "--work", str(work), "--size", args.size,
              "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
              "--micro-batch-size", str(args.micro_batch_size), "--max-length", str(args.max_length)]
    script += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    launcher = [sys.executable] if mode != "fsdp" else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    return subprocess.run(launcher + script, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="1b")
    parser.add_argument("--steps", type=int, help="timed optimizer steps after the warm-up (default: 20; on a "
                        "CPU 2)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed optimizer steps first (>= 1)")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for 7b")
    parser.add_argument("--modes", nargs="+", default=["full", "8bit", "fsdp"])
    parser.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s per GPU (default: by GPU name)")
    parser.add_argument("--allow-cpu", action="store_true", help="run anyway without a GPU (checks the script)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode (a child process)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.warmup_steps = max(1, args.warmup_steps)
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.size == "7b"
    if args.mode == "build":
        print(json.dumps(build_model(args.size, Path(args.work) / "model")))
        return
    if args.mode:
        return run_mode(args)

    import torch  # the parent never touches the GPU: no CUDA context of its own

    args.steps = max(1, args.steps or (20 if torch.cuda.is_available() else 2))

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("bench_train_gpu: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine with a CUDA build of torch.")
        return
    gpus = torch.cuda.device_count() or 2
    work = Path(tempfile.mkdtemp(prefix="bench_train_gpu."))
    try:
        measure(args, work, gpus)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a 7B model is 27 GB on disk


def measure(args: argparse.Namespace, work: Path, gpus: int) -> None:
    """Build the model, run every mode in its own process(es) and print the table."""
    import torch

    from alpaca_nb import data, memory
    from alpaca_nb.fileio import atomic_write_json

    atomic_write_json(work / "data.json", [r.to_alpaca() for r in data.load_alpaca_eval("text_davinci_003")])
    built = _child(args, "build", 1, work)
    if built.returncode:
        sys.exit(f"bench_train_gpu: building the model failed:\n{built.stderr[-3000:]}")
    model_config = json.loads(built.stdout.strip().splitlines()[-1])
    shape = memory.model_shape(model_config)
    print(f"{datetime.date.today()}  torch {torch.__version__}  model: LLaMA {args.size} "
          f"({shape['parameters'] / 1e9:.2f}B params, random init)  micro-batch {args.micro_batch_size} x "
          f"max {args.max_length} tokens, {args.warmup_steps} warm-up + {args.steps} timed steps, gradient "
          f"checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"FLOPs per real token: full/fsdp {FLOPS_FORMULA['full']}, 8bit {FLOPS_FORMULA['lora']} "
          "(N = matmul parameters, s = mean real sequence length; padding and recomputation not counted)")
    print(f"{'mode':6s} {'GPUs':>4s} {'tokens/s':>10s} {'MFU':>6s} {'peak GiB':>9s} {'reserved':>9s} "
          f"{'estimate':>9s}  device")
    for mode in args.modes:
        world = gpus if mode == "fsdp" else 1
        est = memory.estimate(model_config, mode, args.micro_batch_size, args.max_length, world, "bf16",
                              "adamw_torch", args.gradient_checkpointing)
        done = _child(args, mode, world, work)
        results = [json.loads(p.read_text()) for p in sorted((work / mode).glob("result-*.json"))]
        if done.returncode or not results:
            last = (done.stderr.strip().splitlines() or ["?"])[-1][:100]
            print(f"{mode:6s} {world:4d} failed: {last}  (estimate {est['per_gpu_total'] / 2**30:.1f} GiB)")
            continue
        seconds = max(r["seconds"] for r in results)
        real = sum(r["real_tokens"] for r in results)
        seq_len = real / max(1, sum(r["sequences"] for r in results))
        device = results[0]["device"]
        peak = (args.peak_tflops, "given") if args.peak_tflops else peak_tflops(device)
        tokens_per_s = real / seconds if seconds else 0.0
        mfu = f"{flops_per_token(shape, seq_len, mode == '8bit') * tokens_per_s / (world * peak[0] * 1e12):.1%}" \
            if peak and torch.cuda.is_available() else "n/a"
        reserved = results[0]["reserved_bytes"]
        print(f"{mode:6s} {world:4d} {tokens_per_s:10.0f} {mfu:>6s} "
              f"{max(r['peak_memory_bytes'] for r in results) / 2**30:9.2f} "
              f"{'n/a' if reserved is None else f'{reserved / 2**30:.2f}':>9s} "
              f"{est['per_gpu_total'] / 2**30:9.2f}  {device} ({results[0]['precision']}"
              f"{f', peak {peak[0]:.0f} TFLOP/s {peak[1]}' if peak else ', peak unknown: --peak-tflops'})")
    print("peak GiB: torch.cuda.max_memory_allocated (on CPU: max RSS); reserved: max_memory_reserved; "
          "estimate: alpaca_nb.memory.estimate, bf16")


if __name__ == "__main__":
    main()

"""GPU throughput of lesson 04's three modes on a LLaMA-architecture model built from a config (no download).

For ``full``, ``8bit`` (LoRA on an LLM.int8 base) and ``fsdp`` (all visible GPUs, under torchrun) it runs
``alpaca_nb.train.train`` for a few steps on AlpacaEval's 805 instructions with text-davinci-003's answers and
prints real tokens/s, model FLOPs utilisation and peak GPU memory. MFU = model FLOPs per token x tokens/s /
(GPUs x peak dense bf16 FLOP/s); FLOPs per token are 6N for full training and 4N for LoRA (no weight
gradients for the frozen base), attention ignored. Without a CUDA GPU it says so and exits.

    python benchmarks/bench_train_gpu.py [--size 1b|7b] [--steps 20] [--micro-batch-size 8] [--peak-tflops 989]
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
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
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def build_model(size: str, out: Path) -> tuple[Path, int]:
    """A randomly initialised LLaMA of ``size`` saved to ``out`` with the embedded tokenizer; its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alpaca_nb.model import default_model_dir

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, **SIZES[size])
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, model.num_parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="1b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["full", "8bit", "fsdp"])
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s per GPU (default: by name)")
    parser.add_argument("--allow-cpu", action="store_true", help="run anyway without a GPU (checks the script)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("bench_train_gpu: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine with a CUDA build of torch.")
        return
    from alpaca_nb import data
    from alpaca_nb.fileio import atomic_write_json
    from alpaca_nb.train import default_nproc, train
    from alpaca_nb.train_config import resolve_config

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    work = Path(tempfile.mkdtemp(prefix="bench_train_gpu."))
    model_dir, n_params = build_model(args.size, work / f"llama-{args.size}")
    records = data.load_alpaca_eval("text_davinci_003")
    data_file = atomic_write_json(work / "data.json", [r.to_alpaca() for r in records])
    gpus = default_nproc() if torch.cuda.is_available() else 2
    print(f"{datetime.date.today()}  device: {name} x{torch.cuda.device_count()}  torch {torch.__version__}  "
          f"model: LLaMA {args.size} ({n_params / 1e9:.2f}B params, random init)  micro-batch "
          f"{args.micro_batch_size}, {args.steps} steps, max length 512")
    print(f"{'mode':6s} {'procs':>5s} {'tokens/s':>10s} {'MFU':>6s} {'peak mem GiB':>13s} {'non-pad':>8s}")
    for mode in args.modes:
        world = gpus if mode == "fsdp" else 1
        config = resolve_config("cpu-demo", data=[data_file], model=str(model_dir), output_dir=work / mode,
                                mode=mode, micro_batch_size=args.micro_batch_size, max_length=512,
                                effective_batch_size=args.micro_batch_size * world, max_steps=args.steps,
                                save_steps=10**6, logging_steps=5, gradient_checkpointing=args.size == "7b")
        s = train(config, nproc=world)
        flops_per_token = (4 if mode == "8bit" else 6) * n_params
        padded_per_s = s["padded_tokens"] / s["train_seconds"]
        mfu = f"{flops_per_token * padded_per_s / (world * peak * 1e12):.1%}" if peak else "n/a"
        print(f"{mode:6s} {world:5d} {s['tokens_per_second']:10.0f} {mfu:>6s} "
              f"{s['peak_memory_bytes'] / 2**30:13.1f} {s['non_pad_fraction']:8.3f}")


if __name__ == "__main__":
    main()

"""bf16 mixed precision vs fp32 on this CPU: one training step and one held-out loss pass, in one run.

``alpaca_nb.train_config.use_bf16`` picks bf16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX) and
``alpaca_nb.heldout.teacher_forced_loss`` does the same for its forward pass. This prints what that buys
on the embedded SmolLM2-135M: seconds per training step (forward + backward of 8 x 128 tokens, the shape
of lesson 04's micro-batches) and per held-out loss batch, fp32 vs bf16, and the ratios. On a CPU without
native bf16 the script says so (bf16 is then emulated and slower, which is why ``auto`` keeps fp32 there).

    python benchmarks/bench_precision.py [--steps 3]
"""
from __future__ import annotations

import argparse
import time


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from alpaca_nb.model import default_model_dir
    from alpaca_nb.train_config import native_bf16

    model = AutoModelForCausalLM.from_pretrained(default_model_dir(), dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size - 1, (8, 128))

    def train_step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    def forward(bf16: bool) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids)

    print(f"native bf16 on this CPU: {native_bf16(False)}; torch threads: {torch.get_num_threads()}")
    for name, fn in (("training step (8 x 128 tokens)", train_step), ("held-out loss batch (forward)", forward)):
        fp32 = timed(lambda: fn(False), args.steps)
        bf16 = timed(lambda: fn(True), args.steps)
        print(f"{name}: fp32 {fp32:.2f} s, bf16 {bf16:.2f} s -> bf16 is {fp32 / bf16:.2f}x faster")


if __name__ == "__main__":
    main()

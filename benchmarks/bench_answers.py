"""Benchmark: batched answer generation (batch 8) against one prompt at a time, on CPU.

Both runs answer the same prompts (a seeded random subset of the eval set, Alpaca's template) with the
embedded model, greedy, stopping at EOS or ``--max-new-tokens``; batching pads on the left and sorts prompts
by length (``alpaca_nb.answers.generate_tokens``). The answers are checked to be identical token for token;
the ratio printed is one-at-a-time seconds over batched seconds. Target: at least 3x.

A batch runs until its longest answer ends, and a long prompt's prefill costs the same either way, so the
ratio is lower on the user-oriented set (long inputs, up to ~440 prompt tokens) than on AlpacaEval's.

    python benchmarks/bench_answers.py [--eval-set alpaca_eval|user_oriented] [--prompts 16]
                                       [--max-new-tokens 64] [--batch-size 8] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpaca_nb import answers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-set", default="alpaca_eval", choices=("alpaca_eval", "user_oriented"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = answers.load_local_model()
    items = answers.load_eval_set(args.eval_set, n=args.prompts, seed=0)
    prompts = [answers.build_prompt(it, "alpaca") for it in items]
    answers.generate_tokens(lm, prompts[:2], batch_size=2, max_new_tokens=4, progress=False)  # warm-up

    def timed(batch_size: int) -> tuple[float, list[list[int]]]:
        start = time.perf_counter()
        out = answers.generate_tokens(lm, prompts, batch_size=batch_size, max_new_tokens=args.max_new_tokens,
                                      progress=False)
        return time.perf_counter() - start, out

    single_s, single = timed(1)
    batched_s, batched = timed(args.batch_size)
    new_tokens = sum(map(len, single))
    print(f"{len(prompts)} {args.eval_set} prompts, {new_tokens} new tokens, max_new_tokens={args.max_new_tokens}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"one at a time : {single_s:7.2f} s  ({new_tokens / single_s:6.1f} tokens/s)")
    print(f"batch of {args.batch_size:<5d}: {batched_s:7.2f} s  ({new_tokens / batched_s:6.1f} tokens/s)")
    print(f"identical answers: {single == batched}")
    print(f"speed-up: {single_s / batched_s:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()

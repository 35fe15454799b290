"""Benchmark: exact ROUGE-L novelty scoring against a pool of 10,000 instructions.

Compares ``alpaca_nb.dedupe.RougeDeduplicator.scores`` with the one-process rouge-score loop that
Alpaca's filter amounts to (``rouge_scorer._score_lcs`` of a candidate against every pre-tokenized
pool instruction; Alpaca spreads the same loop over a process pool). The baseline is slow, so it is
timed on a small sample of candidates and its per-candidate time is the mean measured on that
sample; the speed-up divides it by the fast path's time on the same candidates (repeated), and the
fast path's mean over many other candidates is printed as a check. Scores are checked to be identical.

The pool is real English text: every instruction in the Self-Instruct seeds, the user-oriented set
and AlpacaEval, topped up to 10,000 with sentences (4-60 words) taken from AlpacaEval reference outputs.

    python benchmarks/bench_dedupe.py [--pool 10000] [--baseline-candidates 5] [--candidates 300] [--repeats 20]
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpaca_nb import data  # noqa: E402
from alpaca_nb.dedupe import RougeDeduplicator  # noqa: E402


def real_texts(pool_size: int, seed: int = 0) -> list[str]:
    """Unique real instructions first, then sentences of reference outputs, shuffled, ``pool_size`` of them."""
    instructions = [e.instruction for e in data.load_seed_tasks() + data.load_user_oriented_tasks()]
    outputs = []
    for generator in ("text_davinci_003", "gpt4_1106_preview", "alpaca-7b"):
        for e in data.load_alpaca_eval(generator):
            instructions.append(e.instruction)
            outputs += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", e.output)]
    sentences = [s for s in outputs if 4 <= len(s.split()) <= 60]
    unique = list(dict.fromkeys(instructions)) + list(dict.fromkeys(sentences))
    if len(unique) < pool_size:
        raise SystemExit(f"only {len(unique)} unique texts available for a pool of {pool_size}")
    random.Random(seed).shuffle(unique)
    return unique


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--baseline-candidates", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    from rouge_score import rouge_scorer

    texts = real_texts(args.pool + args.candidates)
    pool, candidates = texts[:args.pool], texts[args.pool:args.pool + args.candidates]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tokenize = scorer._tokenizer.tokenize

    t0 = time.perf_counter()
    dedup = RougeDeduplicator(pool)
    build_s = time.perf_counter() - t0
    lengths = [len(tokenize(p)) for p in pool]
    print(f"pool: {len(pool):,} real texts, {np.mean(lengths):.1f} tokens on average (max {max(lengths)}); "
          f"index built in {build_s:.2f} s")

    # Baseline: Alpaca's loop in one process, pool pre-tokenized once (not counted in its time).
    # Each sampled candidate is timed with the baseline once, then with the fast path (repeated),
    # back to back, so both see the same machine load.
    pool_tokens = [tokenize(p) for p in pool]
    sample = candidates[:args.baseline_candidates]
    base_s, fast_s, max_diff, same = 0.0, 0.0, 0.0, True
    for cand in sample:
        t0 = time.perf_counter()
        cand_tokens = tokenize(cand)
        expected = np.array([rouge_scorer._score_lcs(cand_tokens, toks).fmeasure for toks in pool_tokens])
        base_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            got = dedup.scores(cand)
        fast_s += (time.perf_counter() - t0) / args.repeats
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        same &= bool(np.array_equal(got > 0.7, expected > 0.7))
    base_s, fast_s = base_s / len(sample), fast_s / len(sample)
    print(f"rouge-score loop, one process (pre-tokenized pool, as Alpaca): {base_s:.3f} s per candidate "
          f"(measured: mean over {len(sample)} candidates x {len(pool):,} pool texts)")
    print(f"RougeDeduplicator.scores: {fast_s * 1e3:.3f} ms per candidate on the same {len(sample)} candidates "
          f"(mean of {args.repeats} repeats each)")
    print(f"identical results: max |diff| = {max_diff:.1e}, same decisions at 0.7: {same}")
    t0 = time.perf_counter()
    [scorer.score(p, sample[0]) for p in pool]
    print(f"(for reference) RougeScorer.score per pair, re-tokenizing both texts: "
          f"{time.perf_counter() - t0:.3f} s for one candidate")
    t0 = time.perf_counter()
    for cand in candidates:
        dedup.scores(cand)
    other_s = (time.perf_counter() - t0) / len(candidates)
    print(f"RougeDeduplicator.scores over {len(candidates)} other candidates: {other_s * 1e3:.3f} ms each "
          f"(first call per candidate length included)")
    print(f"speed-up at a pool of {len(pool):,}: {base_s / fast_s:,.0f}x on the same candidates "
          f"({base_s / other_s:,.0f}x with the {len(candidates)}-candidate mean)")
    if max_diff > 1e-9 or not same:
        raise SystemExit("scores differ from rouge-score")


if __name__ == "__main__":
    main()

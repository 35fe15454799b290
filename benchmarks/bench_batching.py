"""Length-grouped batches vs the original recipe's random batches padded to the longest (lesson 04).

Both runs train the same model for one epoch over the same records with the same micro-batch, through
``alpaca_nb.train.train`` (only ``batching`` differs), so they see the same real tokens; the script reports
real (non-pad) tokens per second of each and their ratio.
Target: grouped / random >= 1.3x on CPU; grouped non-pad fraction >= 0.95.

Data: the released 52K is online-only, so the stand-in is an Alpaca-like length distribution: a fixed random
sample (``--num-records``) of AlpacaEval's 805 instructions with text-davinci-003's answers (the model that
wrote Alpaca's data) + the 175 seed tasks.
Model: a small LLaMA built from a config with the embedded tokenizer (``--model default`` for SmolLM2-135M).

    python benchmarks/bench_batching.py [--model default] [--micro-batch-size 4] [--num-records 160]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpaca_nb import data  # noqa: E402
from alpaca_nb.fileio import atomic_write_json  # noqa: E402
from alpaca_nb.model import default_model_dir  # noqa: E402
from alpaca_nb.sft import preprocess  # noqa: E402
from alpaca_nb.train import build_trainer, non_pad_fraction, train  # noqa: E402
from alpaca_nb.train_config import resolve_config  # noqa: E402


def small_llama(out: Path) -> Path:
    """A 4-layer, 256-wide LLaMA (random weights) with the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                 num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def epoch_fractions(records, model_dir, micro_batch_size: int, work: Path) -> dict[str, float]:
    """Non-pad fraction of one epoch of the Trainer's micro-batches over ``records`` (no training)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = preprocess(records, tok, max_length=512)
    return {b: non_pad_fraction(build_trainer(resolve_config(
        "cpu-demo", data=[], output_dir=work / f"loader-{b}", batching=b, micro_batch_size=micro_batch_size,
        effective_batch_size=micro_batch_size), model, tok, dataset).get_train_dataloader())
        for b in ("random", "grouped")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or 'default' (default: a small LLaMA built from a config)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--num-records", type=int, default=160, help="records sampled from the 980 (0: all)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_batching."))
    model = args.model or small_llama(work / "small-llama")
    records = data.load_alpaca_eval("text_davinci_003") + data.load_seed_tasks()
    fractions = epoch_fractions(records, model, args.micro_batch_size, work)
    print(f"one epoch over all {len(records)} records, micro-batch {args.micro_batch_size}: non-pad fraction "
          f"random {fractions['random']:.3f}, grouped {fractions['grouped']:.3f} (target >= 0.95)")
    if args.num_records:
        records = random.Random(0).sample(records, min(args.num_records, len(records)))
    data_file = atomic_write_json(work / "data.json", [r.to_alpaca() for r in records])
    print(f"data: {len(records)} records sampled from AlpacaEval text-davinci-003 + seed tasks; model: {model}")
    results = {}
    for batching in ("random", "grouped"):
        config = resolve_config("cpu-demo", data=[data_file], model=str(model), output_dir=work / batching,
                                batching=batching, micro_batch_size=args.micro_batch_size,
                                effective_batch_size=args.micro_batch_size, max_length=512, num_epochs=1,
                                save_steps=10**6, logging_steps=10)
        s = results[batching] = train(config)
        print(f"{batching:8s} steps {s['steps']:4d}  non-pad fraction {s['non_pad_fraction']:.3f}  "
              f"real tokens/s {s['tokens_per_second']:8.1f}  padded tokens/s "
              f"{s['padded_tokens'] / s['train_seconds']:8.1f}  train {s['train_seconds']:.1f} s")
    ratio = results["grouped"]["tokens_per_second"] / results["random"]["tokens_per_second"]
    print(f"non-pad tokens/s, grouped / random: {ratio:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    main()

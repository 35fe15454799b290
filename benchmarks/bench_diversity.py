"""How fast does lesson 03 parse a 52K-instruction dataset? Target: the released 52K in < 60 s on 2 cores.

The released ``alpaca_data.json`` is online-only, so the stand-in is every instruction we have offline —
175 seed tasks, 252 user-oriented tasks, 805 AlpacaEval instructions (1,186 distinct) — repeated to
52,002 texts. Repeats are made distinct by trailing spaces: each copy gets its own cache key and is parsed
again (spaCy keeps no parse between documents), so nothing is served from a cache except in the last
step, which measures a rerun.

Steps, each on the same texts, in instructions/s of wall time, and CPU seconds per 1,000 instructions
(all processes; unlike wall time, this does not depend on how busy the machine is):
1. plain ``nlp.pipe`` with every component (what upstream does), on a 3,000-text sample;
2. without the components the rule ignores (ner);
3. + only the first sentence (regex pre-split);
4. the optimised path, ``parse_instructions``: 3 + batches of 256 in 2 worker processes that send back only
   the pairs, writing a fresh parse cache, on all 52,002;
5. a rerun of 4, served from that cache.
Agreement: the share of the 1,186 distinct instructions whose pair from the optimised path equals upstream's
(full pipeline, whole text, spaCy's first sentence).

Run: ``.venv/bin/python benchmarks/bench_diversity.py`` (about 2 minutes on 2 idle cores).
"""
from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from alpaca_nb import data, diversity_parse

TARGET = 52_002
SAMPLE = 3_000


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                           resource.RUSAGE_CHILDREN)))


def timed(fn, *args, **kwargs):
    """``(result, wall seconds, CPU seconds)`` of ``fn(*args, **kwargs)``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def report(step: str, n: int, wall: float, cpu: float) -> None:
    print(f"{step:58s} {n / wall:8.0f} instructions/s ({n:,} in {wall:5.1f} s; {1000 * cpu / n:5.2f} CPU-s/1K)")


def main() -> None:
    import spacy

    examples = data.load_seed_tasks() + data.load_user_oriented_tasks() + data.load_alpaca_eval()
    base = list(dict.fromkeys(e.instruction for e in examples))  # distinct, in order
    texts = [t + " " * (i // len(base)) for i, t in zip(range(TARGET), base * (TARGET // len(base) + 1))]
    sample = texts[:SAMPLE]
    model = diversity_parse.spacy_model_name()
    words = sum(len(t.split()) for t in base) / len(base)
    print(f"model {model}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(set(texts)):,} "
          f"distinct texts from {len(base):,} instructions ({words:.1f} words on average)")

    full = spacy.load(model)
    lean = diversity_parse.load_nlp(model)
    steps = [("1 plain nlp.pipe, all components", lambda: list(map(diversity_parse.parse_doc, full.pipe(sample)))),
             ("2 without " + ", ".join(sorted(set(full.pipe_names) - set(lean.pipe_names))),
              lambda: list(map(diversity_parse.parse_doc, lean.pipe(sample)))),
             ("3 + first sentence only",
              lambda: list(map(diversity_parse.parse_doc, lean.pipe(map(diversity_parse.first_sentence, sample)))))]
    results = {}
    for name, fn in steps:
        _, wall, cpu = timed(fn)
        results[name[0]] = wall / SAMPLE
        report(name, SAMPLE, wall, cpu)

    with tempfile.TemporaryDirectory() as tmp:
        cache = diversity_parse.ParseCache(Path(tmp) / "parses.sqlite")
        pairs, wall, cpu = timed(diversity_parse.parse_instructions, texts, model=model, cache=cache, n_process=2,
                                 progress=False)
        report("4 parse_instructions (batch 256, 2 processes, all 52,002)", TARGET, wall, cpu)
        rerun = diversity_parse.ParseCache(cache.path)
        _, rerun_wall, rerun_cpu = timed(diversity_parse.parse_instructions, texts, model=model, cache=rerun,
                                         progress=False)
        report(f"5 rerun from the cache ({rerun.hits:,} hits, {rerun.misses} misses)", TARGET, rerun_wall, rerun_cpu)

    upstream = [diversity_parse.parse_doc(d) for d in full.pipe(base)]
    agree = sum(a == b for a, b in zip(upstream, pairs[: len(base)])) / len(base)
    print(f"agreement with upstream's whole-text parse on the {len(base):,} distinct instructions: {agree:.2%}")
    print(f"optimised vs plain nlp.pipe: {results['1'] / (wall / TARGET):.1f}x faster; 52,002 instructions in "
          f"{wall:.0f} s wall, {cpu:.0f} CPU-s, i.e. about {cpu / 2:.0f} s on 2 idle cores (target < 60 s); "
          f"rerun {rerun_wall:.1f} s")


if __name__ == "__main__":
    main()

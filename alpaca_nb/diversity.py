"""Lesson 03: how diverse is an instruction dataset? Root verbs, their direct objects, and novelty.

Self-Instruct (Wang et al., 2023, Fig. 2) and Alpaca (``parse_analysis.png``) describe a dataset by the
root verb of each instruction's first sentence and that verb's direct object (parsed and cached by
:mod:`alpaca_nb.diversity_parse`), and by each instruction's highest ROUGE-L against the seed tasks
(Fig. 3). This module loads the datasets, counts and summarizes, and writes ``verb_noun_counts.csv``,
``summary.json`` and the figures (drawn by :mod:`alpaca_nb.diversity_plots`).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import diversity_plots as dp
from .data import Example, load_optional_records
from .dedupe import max_scores
from .diversity_parse import Pair, ParseCache, parse_instructions
from .errors import AlpacaNbError
from .fileio import atomic_write_json, atomic_write_text
from .paths import outputs_dir
from .plots import save_figure

STAGE = "03_diversity"


# --- counts, novelty, summary ----------------------------------------------------------------------

def verb_noun_counts(pairs: Iterable[Pair]):
    """A DataFrame ``verb, noun, count`` of the complete pairs, most frequent first (ties alphabetical)."""
    import pandas as pd

    counts = Counter((v, n) for v, n in pairs if v and n)
    rows = sorted(((v, n, c) for (v, n), c in counts.items()), key=lambda r: (-r[2], r[0], r[1]))
    return pd.DataFrame(rows, columns=["verb", "noun", "count"]).astype({"count": "int64"})


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy (bits) of the distribution given by ``counts``; 0 for an empty one."""
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    return max(0.0, -sum(c / total * math.log2(c / total) for c in counts)) if total else 0.0  # never -0.0


def summarize(examples: Sequence[Example], pairs: Sequence[Pair], rouge: np.ndarray | None = None,
              seeds: Sequence[str] = (), top: int = 20) -> dict[str, Any]:
    """The numbers of ``summary.json``: size, parse coverage, verb/pair variety, verb entropy, top verbs,
    share with an input, median lengths (words) and, given ``rouge``, its distribution."""
    verbs = Counter(v for v, _ in pairs if v)
    n = len(pairs)
    summary = {
        "instructions": n,
        "parsed_fraction": round(sum(1 for v, o in pairs if v and o) / n, 4) if n else 0.0,
        "verb_fraction": round(sum(verbs.values()) / n, 4) if n else 0.0,
        "unique_verbs": len(verbs),
        "unique_verb_noun_pairs": len({(v, o) for v, o in pairs if v and o}),
        "verb_entropy": round(entropy_bits(verbs.values()), 3),
        "top_verbs": dict(verbs.most_common(top)),
        "with_input_fraction": round(sum(bool(e.input) for e in examples) / n, 4) if n else 0.0,
        "median_words": {f: float(np.median([len(getattr(e, f).split()) for e in examples])) if n else 0.0
                         for f in ("instruction", "input", "output")},
    }
    if rouge is not None:
        seed_set = set(seeds)
        summary["rouge_l_to_seeds"] = {
            "mean": round(float(rouge.mean()), 4) if n else 0.0,
            "median": round(float(np.median(rouge)), 4) if n else 0.0,
            "above_0.7": int((rouge > 0.7).sum()),
            "copies_of_seeds": sum(e.instruction in seed_set for e in examples),
        }
    return summary


# --- datasets, one analysis, the report --------------------------------------------------------------

def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts besides file paths."""
    from .data import ALPACA_EVAL_GENERATORS

    return ["seed_tasks", "user_oriented_instructions", "davinci003_user_oriented", "alpaca_eval",
            *ALPACA_EVAL_GENERATORS.values(), "alpaca_data"]


def load_dataset(spec: str | Path) -> tuple[str, list[Example]]:
    """``(label, examples)`` for a dataset name (see :func:`dataset_names`) or an Alpaca-format JSON/JSONL path.

    The label is the name, or the file's stem. An unknown name that is not a file raises
    :class:`AlpacaNbError` listing the valid names.
    """
    from . import data

    spec = str(spec)
    evals = {v: k for k, v in data.ALPACA_EVAL_GENERATORS.items()} | {"alpaca_eval": "text_davinci_003"}
    loaders = {"seed_tasks": data.load_seed_tasks, "user_oriented_instructions": data.load_user_oriented_tasks,
               "davinci003_user_oriented": data.load_davinci_user_oriented, "alpaca_data": data.load_alpaca_data}
    if spec in loaders:
        return spec, loaders[spec]()
    if spec in evals:
        return spec, data.load_alpaca_eval(evals[spec])
    path = Path(spec)
    if path.is_file():
        return path.stem, data.load_alpaca_records(path)
    raise AlpacaNbError(f"{spec!r} is neither a file nor a dataset name; pass an Alpaca-format .json/.jsonl "
                        f"path or one of: {', '.join(dataset_names())}")


def lesson_datasets(data: str | Path | None = None,
                    compare: Sequence[str] | str = ("seed_tasks", "alpaca_eval")) -> list[str]:
    """The lesson's datasets: ``data``, else lesson 02's ``regen.json`` when it holds records, else the seed
    tasks; then lesson 02's Self-Instruct recipe's training file (``self_instruct/finetuning/
    all_generated_instances.jsonl``) when it holds records, so the two recipes stand side by side; then
    ``compare`` (one name or several); then the released 52K when it has been fetched. Duplicates are dropped."""
    from .data import manifest_entry
    from .generate_config import REGEN_FILE, SELF_INSTRUCT_SUBDIR
    from .generate_config import STAGE as LESSON_02
    from .paths import seeds_dir
    from .self_instruct_files import FINETUNING_FILE

    generated = outputs_dir(LESSON_02) / REGEN_FILE
    has_generated = bool(load_optional_records(generated))
    self_instruct = outputs_dir(LESSON_02) / SELF_INSTRUCT_SUBDIR / FINETUNING_FILE
    compare = [compare] if isinstance(compare, str) else list(compare)
    specs = [str(data or (generated if has_generated else "seed_tasks")),
             *([str(self_instruct)] if load_optional_records(self_instruct) else []), *compare]
    if (seeds_dir() / manifest_entry("alpaca_data").path).exists():
        specs.append("alpaca_data")
    return list(dict.fromkeys(specs))


@dataclass
class Analysis:
    """One dataset's analysis: its examples, their pairs, ROUGE-L against the seeds, and the summary."""

    name: str
    examples: list[Example]
    pairs: list[Pair]
    rouge: np.ndarray | None
    summary: dict[str, Any]

    def counts(self):
        """``verb, noun, count`` as a DataFrame (see :func:`verb_noun_counts`)."""
        return verb_noun_counts(self.pairs)


def analyze(name: str, examples: Sequence[Example], seeds: Sequence[str] | None = None,
            cache: ParseCache | bool = True, progress: bool = True) -> Analysis:
    """Parse ``examples``, score them against ``seeds`` (default: the 175 seed tasks; ``[]``: skip) and
    summarize. Raises :class:`AlpacaNbError` for an empty dataset."""
    if not examples:
        raise AlpacaNbError(f"{name}: no examples to analyze")
    if seeds is None:
        from .data import load_seed_tasks

        seeds = [e.instruction for e in load_seed_tasks()]
    texts = [e.instruction for e in examples]
    pairs = parse_instructions(texts, cache=cache, progress=progress)
    rouge = max_scores(texts, seeds, leave_out_copies=True, progress=progress) if seeds else None
    return Analysis(name, list(examples), pairs, rouge, summarize(examples, pairs, rouge, seeds))


def analyze_all(specs: Sequence[str | Path], cache: bool = True, progress: bool = True) -> list[Analysis]:
    """:func:`analyze` each dataset of ``specs`` (names or paths, see :func:`load_dataset`). Every file is
    read before any parsing, so a bad one fails at once; repeated labels get a ``_<position>`` suffix."""
    from .data import load_seed_tasks

    loaded = [load_dataset(s) for s in specs]
    seeds = [e.instruction for e in load_seed_tasks()]
    repeated = Counter(label for label, _ in loaded)
    return [analyze(f"{label}_{i}" if repeated[label] > 1 else label, examples, seeds, cache, progress)
            for i, (label, examples) in enumerate(loaded)]


def write_report(analysis: Analysis, out_dir: str | Path) -> dict[str, Any]:
    """Write ``verb_noun_counts.csv``, ``summary.json`` and the figures (PNG + SVG) to ``out_dir``.

    Returns the summary with ``files`` listing everything written.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "verb_noun_counts.csv"]
    atomic_write_text(files[0], analysis.counts().to_csv(index=False))
    title = f"{analysis.name}: {analysis.summary['instructions']} instructions"
    sunburst = dp.plot_sunburst(analysis.pairs, title=title, instructions=[e.instruction for e in analysis.examples])
    files += save_figure(sunburst, out, "verb_noun_sunburst")
    files += save_figure(dp.plot_lengths(analysis.examples, title=analysis.name), out, "lengths")
    if analysis.rouge is not None:
        files += save_figure(dp.plot_rouge(analysis.rouge, title=analysis.name), out, "rouge_to_seeds")
    plt.close("all")
    summary = analysis.summary | {"name": analysis.name, "files": [str(p) for p in files + [out / "summary.json"]]}
    atomic_write_json(out / "summary.json", summary)
    return summary


def comparison_table(analyses: Sequence[Analysis]):
    """One row per dataset with the headline numbers of its summary (a pandas DataFrame)."""
    import pandas as pd

    rows = []
    for a in analyses:
        s = a.summary
        rows.append({"dataset": a.name, "instructions": s["instructions"], "parsed_fraction": s["parsed_fraction"],
                     "unique_verbs": s["unique_verbs"], "unique_verb_noun_pairs": s["unique_verb_noun_pairs"],
                     "verb_entropy": s["verb_entropy"], "with_input_fraction": s["with_input_fraction"],
                     "rouge_l_mean": s.get("rouge_l_to_seeds", {}).get("mean"),
                     "top_verbs": ", ".join(list(s["top_verbs"])[:5])})
    return pd.DataFrame(rows)


def write_reports(analyses: Sequence[Analysis], out_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`write_report` each analysis to ``out_dir/<name>/`` (default ``outputs/03_diversity``) and, for
    two or more, ``comparison.csv`` and the ``comparison`` figure to ``out_dir``. Returns ``{name: summary}``
    plus ``"comparison"`` (its files) when one was written."""
    import matplotlib.pyplot as plt

    out = Path(out_dir) if out_dir else outputs_dir(STAGE)
    result: dict[str, Any] = {a.name: write_report(a, out / a.name) for a in analyses}
    if len(analyses) > 1:
        table = out / "comparison.csv"
        atomic_write_text(table, comparison_table(analyses).to_csv(index=False))
        figures = save_figure(dp.plot_comparison(analyses), out, "comparison")
        plt.close("all")
        result["comparison"] = [str(p) for p in [table, *figures]]
    return result


def run(specs: Sequence[str | Path], out_dir: str | Path | None = None, cache: bool = True,
        progress: bool = True) -> dict[str, Any]:
    """The command line's ``alpaca-nb diversity``: :func:`analyze_all`, then :func:`write_reports`."""
    return write_reports(analyze_all(specs, cache=cache, progress=progress), out_dir)

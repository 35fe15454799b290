"""Lesson 03's figures, with matplotlib: the verb/object sunburst, ROUGE-L to the seeds, lengths, a comparison.

Each function returns a matplotlib Figure (the caller saves it with :func:`alpaca_nb.plots.save_figure`
and shows it); :func:`dependency_svg` returns spaCy's displaCy drawing of one parse as SVG markup.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .data import Example
from .diversity_parse import Pair, first_sentence, load_nlp, spacy_model_name

FIELDS = ("instruction", "input", "output")
ALPACA_THRESHOLD = 0.7  # Alpaca and Self-Instruct keep an instruction only when its ROUGE-L is below this


class PlottedAnalysis(Protocol):
    """What the figures read of one dataset's analysis (:class:`alpaca_nb.diversity.Analysis` has it)."""

    name: str
    examples: list[Example]
    pairs: list[Pair]
    rouge: np.ndarray | None
    summary: dict[str, Any]


def sunburst_data(pairs: Sequence[Pair], top_verbs: int = 20, top_nouns: int = 4, *,
                  instructions: Sequence[str] | None = None,
                  min_count: int = 1) -> list[tuple[str, list[tuple[str, int]]]]:
    """``[(verb, [(noun, count), ...]), ...]``: Self-Instruct's sunburst selection, largest verb first.

    As in yizhongw/self-instruct @ 0b26ccaa415992100fa32df62d41b994cf928e23,
    ``self_instruct/instruction_visualize.ipynb`` (lines of the .ipynb file): duplicate instructions are
    dropped (line 72, ``set(...)``; pass ``instructions``, one per pair, else ``pairs`` are taken as one per
    distinct instruction), then every parse without a verb *and* a noun object (line 105, ``dropna()``);
    the ``top_verbs`` most common verbs of what is left (line 115, ``nlargest(20)``, ties alphabetical as
    there), and each one's ``top_nouns`` most common objects (lines 117-124, ``head(4)``; ties alphabetical
    here, unspecified there). Upstream then keeps only pairs counted more than 30 times (line 173), a cut
    sized for 52K instructions that would empty the chart of a small dataset: ``min_count=31`` applies it,
    the default 1 keeps every pair (listed in the README's differences table). Verbs are ordered by the
    sum of the counts shown, as plotly's sunburst sorts them.
    """
    if instructions is not None:
        if len(instructions) != len(pairs):
            raise ValueError(f"{len(instructions)} instructions for {len(pairs)} pairs; pass one per pair")
        pairs = list(dict(zip(instructions, pairs)).values())  # one pair per distinct instruction
    complete = Counter((v, n) for v, n in pairs if v and n)
    verbs = Counter()
    for (verb, _), count in complete.items():
        verbs[verb] += count
    rings = []
    for verb in sorted(verbs, key=lambda v: (-verbs[v], v))[:top_verbs]:
        nouns = sorted(((n, c) for (v, n), c in complete.items() if v == verb), key=lambda x: (-x[1], x[0]))
        nouns = [(n, c) for n, c in nouns[:top_nouns] if c >= min_count]
        if nouns:
            rings.append((verb, nouns))
    return sorted(rings, key=lambda ring: (-sum(c for _, c in ring[1]), ring[0]))


def _radial_label(ax, angle: float, radius: float, text: str, size: float, **kw) -> None:
    """Write ``text`` along the radius at ``angle`` (radians), flipped on the left half so it reads upright."""
    degrees = np.degrees(angle) % 360
    rotation = degrees + 180 if 90 < degrees < 270 else degrees
    ax.text(angle, radius, text, rotation=rotation, rotation_mode="anchor", ha="center", va="center",
            fontsize=size, **kw)


def plot_sunburst(pairs: Sequence[Pair], top_verbs: int = 20, top_nouns: int = 4, title: str = "", *,
                  instructions: Sequence[str] | None = None, min_count: int = 1):
    """Alpaca's ``parse_analysis.png`` in matplotlib: an inner ring of the ``top_verbs`` root verbs and an
    outer ring of each verb's ``top_nouns`` direct objects, every wedge sized by its count; the selection
    is Self-Instruct's (see :func:`sunburst_data`, which takes ``instructions`` and ``min_count``)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    rings = sunburst_data(pairs, top_verbs, top_nouns, instructions=instructions, min_count=min_count)
    fig, ax = plt.subplots(figsize=(10, 10), subplot_kw={"projection": "polar"})
    ax.set_axis_off()
    ax.set_ylim(0, 1)
    ax.set_title(title or "Root verbs (inner) and their direct objects (outer)", fontsize=13, pad=12)
    total = sum(c for _, nouns in rings for _, c in nouns)
    if not total:
        ax.text(0, 0, "no verb–object pairs", ha="center", va="center", fontsize=14)
        return fig
    palette = plt.get_cmap("tab20").colors[0::2] + plt.get_cmap("tab20").colors[1::2]  # strong colours first
    start = 0.0
    for i, (verb, nouns) in enumerate(rings):
        color = np.array(to_rgb(palette[i % len(palette)]))
        span = 2 * np.pi * sum(c for _, c in nouns) / total
        ax.bar(start + span / 2, 0.35, width=span, bottom=0.25, color=color, edgecolor="white", linewidth=1.5)
        _radial_label(ax, start + span / 2, 0.425, verb, min(12, max(7, np.degrees(span) * 0.6)), weight="bold")
        for j, (noun, count) in enumerate(nouns):
            width = 2 * np.pi * count / total
            shade = color + (1 - color) * (0.35 + 0.12 * j)  # lighter for less frequent objects
            ax.bar(start + width / 2, 0.38, width=width, bottom=0.61, color=shade, edgecolor="white", linewidth=1)
            if np.degrees(width) >= 1.1:  # narrower wedges cannot hold readable text
                _radial_label(ax, start + width / 2, 0.80, noun, min(10, max(5.5, np.degrees(width) * 3.2)))
            start += width
    return fig


def plot_rouge(scores: np.ndarray, title: str = ""):
    """Self-Instruct's Fig. 3: a histogram of each instruction's highest ROUGE-L against the seed tasks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist(scores, bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
    ax.axvline(ALPACA_THRESHOLD, color="#C44E52", ls="--", lw=1.2, label=f"Alpaca's filter ({ALPACA_THRESHOLD})")
    if len(scores):
        ax.axvline(float(np.median(scores)), color="k", ls=":", lw=1.2, label=f"median {np.median(scores):.2f}")
    ax.set_xlabel("highest ROUGE-L F against a seed instruction")
    ax.set_ylabel("instructions")
    ax.set_title(f"{title}: similarity to the seed tasks" if title else "Similarity to the seed tasks")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_lengths(examples: Sequence[Example], title: str = ""):
    """Histograms of instruction, input and output length in words (empty fields left out), and the share
    of examples that have an input."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, field in zip(axes, FIELDS):
        values = [n for n in (len(getattr(e, field).split()) for e in examples) if n]
        label = f"{field} ({len(values) / max(len(examples), 1):.0%} non-empty)"
        if values:
            ax.hist(values, bins=30, color="#4C72B0")
            ax.axvline(float(np.median(values)), color="k", ls="--", lw=1, label=f"median {np.median(values):g}")
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {field}s", ha="center", va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])
        ax.set_title(label)
        ax.set_xlabel("words")
    axes[0].set_ylabel("examples")
    fig.suptitle(f"{title}: lengths" if title else "Lengths")
    fig.tight_layout()
    return fig


def plot_comparison(analyses: Sequence[PlottedAnalysis], max_k: int = 50):
    """Several datasets side by side: how much the top-k verbs cover (legend: verb entropy), similarity
    to the seeds, instruction lengths, and the shares with a verb/object pair and with an input."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (cover, rouge), (lengths, bars) = axes
    for a in analyses:
        verbs = np.array(sorted(Counter(v for v, _ in a.pairs if v).values(), reverse=True))
        if len(verbs):
            k = np.arange(1, min(max_k, len(verbs)) + 1)
            cover.plot(k, np.cumsum(verbs)[: len(k)] / verbs.sum(),
                       label=f"{a.name} (entropy {a.summary['verb_entropy']:.1f} bits)")
        if a.rouge is not None:
            rouge.hist(a.rouge, bins=np.linspace(0, 1, 21), histtype="step", density=True, lw=1.5, label=a.name)
        words = [len(e.instruction.split()) for e in a.examples]
        lengths.hist(words, bins=np.arange(0, 81, 3), histtype="step", density=True, lw=1.5, label=a.name)
    cover.set(xlabel="k most common root verbs", ylabel="share of instructions with a verb",
              title="Verb concentration (lower = more diverse)")
    rouge.axvline(ALPACA_THRESHOLD, color="#C44E52", ls="--", lw=1)
    rouge.set(xlabel="highest ROUGE-L against a seed", ylabel="density", title="Similarity to the seed tasks")
    lengths.set(xlabel="instruction words (longer ones not shown)", ylabel="density", title="Instruction length")
    x = np.arange(len(analyses))
    for offset, key, label in ((-0.2, "parsed_fraction", "verb + object"), (0.2, "with_input_fraction", "input")):
        bars.bar_label(bars.bar(x + offset, [a.summary[key] for a in analyses], 0.4, label=f"has {label}"),
                       fmt="%.2f", fontsize=8)
    bars.set_xticks(x, [a.name for a in analyses], rotation=15, ha="right")
    bars.set(ylim=(0, 1.1), ylabel="share of examples", title="Parse coverage and inputs")
    for ax in (cover, rouge, lengths, bars):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dependency_svg(text: str, path: str | Path | None = None, model: str | None = None) -> str:
    """displaCy's dependency tree of the first sentence of ``text`` as SVG markup (also written to ``path``)."""
    from spacy import displacy

    from .fileio import atomic_write_text

    doc = load_nlp(model or spacy_model_name())(first_sentence(text))
    svg = displacy.render(doc, style="dep", jupyter=False, options={"compact": True, "distance": 110})
    if path:
        atomic_write_text(path, svg)
    return svg

"""Figure helpers shared by the lessons: every figure is saved as files as well as shown."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def save_figure(fig, out_dir: str | Path, name: str, formats: Iterable[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.<fmt>`` for each format (PNG at 150 dpi) and return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths

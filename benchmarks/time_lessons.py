"""Per-notebook wall time in each profile, for the instructor's guide (docs/teaching.md).

    python benchmarks/time_lessons.py                                   # read what the last runs recorded
    python benchmarks/time_lessons.py --run --profile smoke --solutions  # run lessons + solutions, then read

Times come from papermill's own record in each executed copy (``metadata.papermill.duration``: the kernel's
start to its last cell), so a `make demo` run already holds the demo's. It prints a markdown table per profile
(notebook, wall time, when it ran) and the machine: CPU model, cores, and the load average before and after a
``--run`` — on a shared machine a load above the core count means other jobs slowed the run down. Not part of
`make benchmarks` (it runs the lessons themselves).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from alpaca_nb import notebooks


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def timings(profile: str) -> list[dict]:
    """One row per executed lesson, then per executed solution, of ``profile`` (what is on disk now)."""
    folder = notebooks.profile_outputs_root(profile) / "notebooks"
    rows = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("solutions/[0-9][0-9]_*.ipynb")):
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        papermill = meta.get("papermill") or {}
        rows.append({"notebook": path.relative_to(folder).as_posix(), "seconds": papermill.get("duration"),
                     "start": (papermill.get("start_time") or "")[:16].replace("T", " "),
                     "failed": bool(papermill.get("exception")),
                     "profile": (meta.get(notebooks.METADATA_KEY) or {}).get("profile") or profile})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| notebook | profile | wall time | started (UTC) |", "|---|---|---|---|"]
    for r in rows:
        secs = r["seconds"]
        took = "—" if secs is None else f"{secs:.0f} s" if secs < 90 else f"{secs // 60:.0f} min {secs % 60:.0f} s"
        lines.append(f"| `{r['notebook']}` | {r['profile']} | {took}{' (failed)' if r['failed'] else ''} | {r['start']} |")
    lessons = [r["seconds"] or 0 for r in rows if "/" not in r["notebook"]]
    if lessons:
        total = sum(lessons)
        lines.append(f"| all lessons | | {total // 60:.0f} min {total % 60:.0f} s | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help="profile(s) to report (default: demo and smoke)")
    parser.add_argument("--run", action="store_true", help="run the lessons in each profile first")
    parser.add_argument("--solutions", action="store_true", help="with --run: run the solutions too")
    args = parser.parse_args()
    profiles = args.profile or ["demo", "smoke"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average (1/5/15 min) now {load()}")
    for profile in profiles:
        if args.run:
            notebooks.run_notebooks(profile=profile)
            if args.solutions:
                notebooks.run_notebooks(profile=profile, solutions=True)
            print(f"load average after the {profile} run: {load()}")
        rows = timings(profile)
        print(f"\n{profile}: {notebooks.profile_outputs_root(profile) / 'notebooks'}")
        print(table(rows) if rows else "(no executed notebooks: run the profile first, or pass --run)")


if __name__ == "__main__":
    main()

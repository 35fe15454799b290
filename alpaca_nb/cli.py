"""``alpaca-nb``: a thin command line over the same functions the notebooks call.

Each lesson owns one ``_add_*`` function below; handlers import their stage lazily so
``alpaca-nb --help`` stays instant. Errors the user can fix (:class:`AlpacaNbError`)
print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import AlpacaNbError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# --- foundation: data, model, notebooks, lesson 01 -------------------------------------------

def _add_foundation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download the upstream data listed in seeds/manifest.json and verify sha256")
    p.add_argument("names", nargs="*", help="manifest entries to fetch (default: all that are not online-only)")
    p.add_argument("--mirror", help="copy from this local folder (e.g. ../shared/data) instead of downloading")
    p.add_argument("--dest", help="target folder (default: seeds/)")
    p.add_argument("--list", action="store_true", help="list the manifest entries and exit")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("model", help="convert the embedded SmolLM2-135M-Instruct GGUF once and print its folder")
    p.set_defaults(func=lambda a: print(__import__("alpaca_nb.model", fromlist=["x"]).default_model_dir()))

    p = sub.add_parser("seed-stats", help="lesson 01: statistics and figures of the 175 seed tasks")
    p.add_argument("--seed-tasks", help="seed tasks JSONL (default: the fetched Self-Instruct seeds)")
    p.add_argument("--out", help="output folder (default: outputs/01_seed_tasks)")
    p.set_defaults(func=_cmd_seed_stats)

    p = sub.add_parser("run-notebooks", help="run the lessons headlessly with papermill, in order")
    p.add_argument("notebooks", nargs="*", help="notebook names or stems (default: all, in order)")
    p.add_argument("--profile", default="demo", help="parameter profile from notebooks/profiles.yaml")
    p.add_argument("--out", help="folder for executed copies (default: outputs/notebooks)")
    p.set_defaults(func=_cmd_run_notebooks)


def _cmd_fetch(args: argparse.Namespace) -> None:
    from . import data

    if args.list:
        for e in data.load_manifest():
            print(f"{e.name:28s} {'online-only ' if e.online_only else ''}{e.license:12s} {e.url}")
        return
    for path in data.fetch(args.names or None, mirror=args.mirror, dest=args.dest):
        print(path)


def _cmd_seed_stats(args: argparse.Namespace) -> None:
    from . import seed_stats

    _print_json(seed_stats.write_report(seed_tasks=args.seed_tasks, out_dir=args.out))


def _cmd_run_notebooks(args: argparse.Namespace) -> None:
    from . import notebooks

    for path in notebooks.run_notebooks(args.notebooks or None, profile=args.profile, out_dir=args.out):
        print(path)


# --- lesson 02: generation (alpaca_nb.generate, alpaca_nb.dedupe) -----------------------------

def _add_generate(sub: argparse._SubParsersAction) -> None:
    pass


# --- lesson 03: diversity (alpaca_nb.diversity) -------------------------------------------------

def _add_diversity(sub: argparse._SubParsersAction) -> None:
    pass


# --- lesson 04: fine-tuning (alpaca_nb.sft, alpaca_nb.train) -------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    pass


# --- lesson 05: evaluation (alpaca_nb.answers, alpaca_nb.judge, alpaca_nb.winrate) ---------------

def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpaca-nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_foundation, _add_generate, _add_diversity, _add_train, _add_evaluate):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AlpacaNbError as e:
        print(f"alpaca-nb {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alpaca-nb {args.command}: interrupted; what was written so far is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

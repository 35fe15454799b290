"""``alpaca-nb``: a thin command line over the same functions the notebooks call.

Each lesson owns one ``_add_*`` function below; handlers import their stage lazily so
``alpaca-nb --help`` stays instant. Errors the user can fix (:class:`AlpacaNbError`)
print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
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
    p = sub.add_parser("diversity", help="lesson 03: root verbs and objects, ROUGE-L to the seeds, figures")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="Alpaca-format .json/.jsonl paths, or names: seed_tasks, user_oriented_instructions, "
                        "alpaca_eval, alpaca_data (once fetched)")
    p.add_argument("--out", help="output folder; one subfolder per dataset (default: outputs/03_diversity)")
    p.add_argument("--no-cache", action="store_true", help="parse everything again instead of reusing cached parses")
    p.set_defaults(func=_cmd_diversity)


def _cmd_diversity(args: argparse.Namespace) -> None:
    from . import diversity

    result = diversity.run(args.data, out_dir=args.out, cache=not args.no_cache)
    for name, s in result.items():
        if name == "comparison":
            print(f"comparison: {', '.join(s)}")
            continue
        print(f"{name}: {s['instructions']} instructions, {s['parsed_fraction']:.0%} verb+object, "
              f"{s['unique_verbs']} verbs, {s['unique_verb_noun_pairs']} pairs, "
              f"verb entropy {s['verb_entropy']:.2f} bits -> {s['files'][-1]}")


# --- lesson 04: fine-tuning (alpaca_nb.sft, alpaca_nb.train) -------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    pass


# --- lesson 05: evaluation (alpaca_nb.answers, alpaca_nb.judge, alpaca_nb.winrate) ---------------

def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    def endpoint_args(p: argparse.ArgumentParser, default: str, what: str) -> None:
        p.add_argument("--backend", choices=("hf", "local", "openai", "url") if default == "hf" else
                       ("local", "openai", "url"), default=default,
                       help=f"{what}: 'hf' runs a model folder in process, 'local' serves one with `transformers "
                            "serve`, 'openai' uses OPENAI_API_KEY, 'url' any compatible --base-url")
        p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
        p.add_argument("--workers", type=int, default=4 if default == "hf" else 1, help="concurrent HTTP requests")

    def reference_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reference", default="text_davinci_003",
                       help="reference answers: a model_outputs.json, or text_davinci_003 | human (user_oriented), "
                            "text_davinci_003 | gpt4_1106_preview | alpaca-7b (alpaca_eval)")
        p.add_argument("--eval-set", default="user_oriented", choices=("user_oriented", "alpaca_eval"))

    p = sub.add_parser("answer", help="lesson 05: answer an eval set; writes AlpacaEval's model_outputs.json")
    p.add_argument("--model", help="model folder, LoRA adapter folder, or endpoint model name (default: embedded)")
    endpoint_args(p, "hf", "who answers")
    p.add_argument("--eval-set", default="user_oriented", choices=("user_oriented", "alpaca_eval"))
    p.add_argument("-n", "--num-items", type=int, help="random subset of this many items (default: all)")
    p.add_argument("--seed", type=int, default=0, help="subset and sampling seed")
    p.add_argument("--generator", help="name recorded in the outputs (default: the model's folder name)")
    p.add_argument("--prompt-format", choices=("alpaca", "chat"), default=None,
                   help="Alpaca's template or the chat template (default: alpaca in process, chat over HTTP)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--out", help="output file (default: outputs/05_evaluate/model_outputs.json); resumes if present")
    p.set_defaults(func=_cmd_answer)

    p = sub.add_parser("judge", help="lesson 05: blind pairwise judge of model outputs vs reference answers")
    p.add_argument("--model-outputs", required=True, help="the model's model_outputs.json")
    reference_args(p)
    p.add_argument("--judge-model", help="judge model: a folder for 'local' (default: embedded), a name otherwise")
    endpoint_args(p, "local", "the judge")
    p.add_argument("--order", choices=("random", "both", "fixed"), default="random",
                   help="which answer is shown first: random per item (seeded), both orders averaged, or fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=32, help="length of the judge's reply")
    p.add_argument("--out", help="annotations file (default: outputs/05_evaluate/annotations.json); resumes")
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("winrate", help="lesson 05: AlpacaEval leaderboard columns of an annotations file (JSON)")
    p.add_argument("--annotations", required=True, help="AlpacaEval-format annotations JSON")
    p.add_argument("--rouge-l", action="store_true", help="add the mean ROUGE-L of output_2 vs output_1")
    p.set_defaults(func=_cmd_winrate)

    p = sub.add_parser("human-sheet", help="lesson 05: export a blind A/B sheet (CSV) and its key (JSON)")
    p.add_argument("--model-outputs", required=True, help="the model's model_outputs.json")
    reference_args(p)
    p.add_argument("--out", help="sheet CSV (default: outputs/05_evaluate/human_sheet.csv)")
    p.add_argument("--key", help="key JSON (default: next to the sheet, <sheet>.key.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the A/B draw")
    p.set_defaults(func=_cmd_human_sheet)

    p = sub.add_parser("human-score", help="lesson 05: score a filled sheet into wins / ties / losses (JSON)")
    p.add_argument("--sheet", required=True, help="the filled sheet CSV (label column: A, B or tie)")
    p.add_argument("--key", help="its key JSON (default: <sheet>.key.json)")
    p.set_defaults(func=_cmd_human_score)


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace, model: str | None):
    """The endpoint of ``--backend`` (``None`` for ``hf``: the model runs in process); a setup problem exits 2."""
    from .server import open_endpoint

    if args.backend == "hf":
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(open_endpoint(args.backend, model=model, base_url=args.base_url))
        except ValueError as e:
            raise AlpacaNbError(str(e)) from e
        yield endpoint


def _cmd_answer(args: argparse.Namespace) -> None:
    from . import answers
    from .paths import outputs_dir

    out = args.out or outputs_dir("05_evaluate") / "model_outputs.json"
    items = answers.load_eval_set(args.eval_set, n=args.num_items, seed=args.seed)
    fmt = args.prompt_format or ("alpaca" if args.backend == "hf" else "chat")
    with _endpoint(args, args.model) as endpoint:
        records = answers.answer(items, model=args.model, endpoint=endpoint, generator=args.generator,
                                 prompt_format=fmt, out_path=out, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                                 workers=args.workers)
    _print_json({"model_outputs": str(out), "n": len(records), "generator": records[0]["generator"] if records else None})


def _cmd_judge(args: argparse.Namespace) -> None:
    from . import answers, judge, winrate
    from .paths import outputs_dir

    out = args.out or outputs_dir("05_evaluate") / "annotations.json"
    model_outputs = answers.read_model_outputs(args.model_outputs)
    references = answers.load_outputs(args.reference, args.eval_set)
    with _endpoint(args, args.judge_model) as endpoint:
        annotations = judge.judge(model_outputs, references, endpoint, order=args.order, seed=args.seed,
                                  max_tokens=args.max_tokens, workers=args.workers, out_path=out)
    _print_json({"annotations": str(out)} | winrate.leaderboard(annotations))


def _cmd_winrate(args: argparse.Namespace) -> None:
    from . import winrate

    annotations = winrate.read_annotations(args.annotations)
    _print_json(winrate.summary(annotations) if args.rouge_l else winrate.leaderboard(annotations))


def _cmd_human_sheet(args: argparse.Namespace) -> None:
    from . import answers, human_eval
    from .paths import outputs_dir

    sheet, key = human_eval.export_sheet(answers.read_model_outputs(args.model_outputs),
                                         answers.load_outputs(args.reference, args.eval_set),
                                         args.out or outputs_dir("05_evaluate") / "human_sheet.csv",
                                         key_path=args.key, seed=args.seed)
    _print_json({"sheet": str(sheet), "key": str(key)})


def _cmd_human_score(args: argparse.Namespace) -> None:
    from . import human_eval

    _print_json(human_eval.score_sheet(args.sheet, args.key))


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

"""``alpaca-nb`` commands of lesson 05 (evaluation) and of the evidence that lessons 04-05 show.

Registered by :func:`alpaca_nb.cli.build_parser`; like the rest of the command line, each handler only
parses options and calls the module that does the work.
"""
from __future__ import annotations

import argparse
import contextlib
import json


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON (non-ASCII kept), as every command's result."""
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# --- lesson 05: evaluation (alpaca_nb.answers, alpaca_nb.judge, alpaca_nb.winrate) ---------------

def add_endpoint_args(p: argparse.ArgumentParser, in_process: bool, what: str) -> None:
    """``--backend``, ``--base-url`` and ``--workers`` for a command whose model answers (``in_process``: also
    ``hf``, the default) or judges through an endpoint; :func:`endpoint_from_args` opens what they name."""
    backends = ("hf", "local", "openai", "url") if in_process else ("local", "openai", "url")
    p.add_argument("--backend", choices=backends, default=backends[0],
                   help=f"{what}: " + ("'hf' runs the model folder in process, " if in_process else "") +
                        "'local' serves it with `transformers serve` (or uses --base-url as is), "
                        "'openai' uses OPENAI_API_KEY, 'url' any compatible --base-url")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--workers", type=int, default=4 if in_process else 1, help="concurrent HTTP requests")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    def reference_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reference", default="text_davinci_003",
                       help="reference answers: a model_outputs.json, or text_davinci_003 | human (user_oriented), "
                            "text_davinci_003 | gpt4_1106_preview | alpaca-7b (alpaca_eval)")
        p.add_argument("--eval-set", default="user_oriented", choices=("user_oriented", "alpaca_eval"))

    p = sub.add_parser("answer", help="lesson 05: answer an eval set; writes AlpacaEval's model_outputs.json")
    p.add_argument("--model", help="model folder, LoRA adapter folder, or endpoint model name (default: embedded)")
    add_endpoint_args(p, True, "who answers")
    p.add_argument("--eval-set", default="user_oriented", choices=("user_oriented", "alpaca_eval"))
    p.add_argument("-n", "--num-items", type=int, help="random subset of this many items (default: all)")
    p.add_argument("--seed", type=int, default=0, help="subset and sampling seed")
    p.add_argument("--generator", help="name recorded in the outputs (default: the model's folder name)")
    p.add_argument("--prompt-format", choices=("alpaca", "alpaca-lora", "chat"), default=None,
                   help="alpaca: Stanford Alpaca's template; alpaca-lora: tloen/alpaca-lora's (for its adapters, "
                        "or a model trained with --template alpaca-lora); chat: the chat template "
                        "(default: alpaca in process, chat over HTTP)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--out", help="output file (default: outputs/05_evaluate/model_outputs.json); resumes if present")
    p.set_defaults(func=_cmd_answer)

    p = sub.add_parser("judge", help="lesson 05: blind pairwise judge of model outputs vs reference answers")
    p.add_argument("--model-outputs", required=True, help="the model's model_outputs.json")
    reference_args(p)
    p.add_argument("--judge-model", help="judge model: a folder for 'local' (default: embedded), a name otherwise")
    add_endpoint_args(p, False, "the judge")
    p.add_argument("--order", choices=("random", "both", "fixed"), default="random",
                   help="which answer is shown first: random per item (seeded), both orders averaged, or fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=32, help="length of the judge's reply")
    p.add_argument("--verdict", choices=("weighted", "text"), default="weighted",
                   help="weighted: AlpacaEval 2's preference from the labels' probabilities (server logprobs, or a "
                        "local judge's logits; falls back to text where there are none); text: the reply parsed")
    p.add_argument("--out", help="annotations file (default: outputs/05_evaluate/annotations_<generator>.json, one "
                   "per model); resumes, and judges again what other settings judged")
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("winrate", help="lesson 05: AlpacaEval leaderboard columns of an annotations file (JSON)")
    p.add_argument("--annotations", required=True, help="AlpacaEval-format annotations JSON")
    p.add_argument("--rouge-l", action="store_true", help="add the mean ROUGE-L of output_2 vs output_1")
    p.add_argument("--instruction-difficulty", metavar="PATH",
                   help="AlpacaEval's instruction_difficulty.csv (or df_gamed.csv): fit the length-controlled win "
                        "rate with the length_controlled_v1 formula (default: length_controlled_minimal, which "
                        "needs nothing but the annotations); never downloaded")
    p.set_defaults(func=_cmd_winrate)

    p = sub.add_parser("human-sheet", help="lesson 05: export a blind A/B sheet (CSV) and its key (JSON)")
    p.add_argument("--model-outputs", required=True, help="the model's model_outputs.json")
    reference_args(p)
    p.add_argument("--out", help="sheet CSV (default: outputs/05_evaluate/human_sheet.csv)")
    p.add_argument("--key", help="key JSON (default: next to the sheet, <sheet>.key.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the A/B draw")
    p.add_argument("--force", action="store_true",
                   help="replace a sheet that has labels (or a file that is not a sheet), or a key file that is "
                        "not the key of the blank sheet being replaced (another sheet's, or one whose sheet is gone)")
    p.set_defaults(func=_cmd_human_sheet)

    p = sub.add_parser("human-score", help="lesson 05: score a filled sheet into wins / ties / losses (JSON), and "
                                           "its agreement with the judge")
    p.add_argument("--sheet", required=True, help="the filled sheet CSV (label column: A, B or tie)")
    p.add_argument("--key", help="its key JSON (default: <sheet>.key.json)")
    p.add_argument("--judge-annotations", help="the judge's annotations of the same model outputs: adds "
                   "'agreement_with_judge' (agreement, Cohen's kappa, confusion table)")
    p.set_defaults(func=_cmd_human_score)


@contextlib.contextmanager
def endpoint_from_args(args: argparse.Namespace, model: str | None):
    """The endpoint of ``--backend`` (``None`` for ``hf``: the model runs in process); a setup problem exits 2."""
    from .server import open_endpoint

    if args.backend == "hf":
        yield None
        return
    with open_endpoint(args.backend, model=model, base_url=args.base_url) as endpoint:
        yield endpoint


def _cmd_answer(args: argparse.Namespace) -> None:
    from . import answers
    from .paths import outputs_dir

    out = args.out or outputs_dir("05_evaluate") / "model_outputs.json"
    items = answers.load_eval_set(args.eval_set, n=args.num_items, seed=args.seed)
    fmt = args.prompt_format or ("alpaca" if args.backend == "hf" else "chat")
    with endpoint_from_args(args, args.model) as endpoint:
        records = answers.answer(items, model=args.model, endpoint=endpoint, generator=args.generator,
                                 prompt_format=fmt, out_path=out, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                                 workers=args.workers)
    print_json({"model_outputs": str(out), "n": len(records),
                 "generator": records[0]["generator"] if records else None})


def _cmd_judge(args: argparse.Namespace) -> None:
    from . import answers, judge, winrate
    from .paths import outputs_dir

    model_outputs = answers.read_model_outputs(args.model_outputs, non_empty=True)
    out = args.out or outputs_dir("05_evaluate") / judge.annotations_file(model_outputs[0]["generator"])
    references = answers.load_outputs(args.reference, args.eval_set)
    with endpoint_from_args(args, args.judge_model) as endpoint:
        annotations = judge.judge(model_outputs, references, endpoint, order=args.order, seed=args.seed,
                                  max_tokens=args.max_tokens, workers=args.workers, out_path=out,
                                  verdict=args.verdict)
    print_json({"annotations": str(out)} | winrate.leaderboard(annotations))


def _cmd_winrate(args: argparse.Namespace) -> None:
    from . import winrate

    from .length_control import read_instruction_difficulty

    annotations = winrate.read_annotations(args.annotations, rouge_l=args.rouge_l)
    difficulty = read_instruction_difficulty(args.instruction_difficulty) if args.instruction_difficulty else None
    print_json(winrate.summary(annotations, difficulty) if args.rouge_l
               else winrate.leaderboard(annotations, difficulty))


def _cmd_human_sheet(args: argparse.Namespace) -> None:
    from . import answers, human_eval
    from .paths import outputs_dir

    sheet, key = human_eval.export_sheet(answers.read_model_outputs(args.model_outputs, non_empty=True),
                                         answers.load_outputs(args.reference, args.eval_set),
                                         args.out or outputs_dir("05_evaluate") / "human_sheet.csv",
                                         key_path=args.key, seed=args.seed, force=args.force)
    print_json({"sheet": str(sheet), "key": str(key)})


def _cmd_human_score(args: argparse.Namespace) -> None:
    from . import human_eval

    score = human_eval.score_sheet(args.sheet, args.key)
    if args.judge_annotations:
        from .agreement import agreement_with_judge

        score["agreement_with_judge"] = agreement_with_judge(args.sheet, args.judge_annotations, args.key)
    print_json(score)


# --- evidence: held-out measurement (lessons 04-05) and the judge's sanity check (lesson 05) --------------

def add_evidence(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("heldout", help="lessons 04-05: loss and greedy answers on the 252 held-out user-oriented "
                                       "tasks, before vs after fine-tuning")
    p.add_argument("--model", required=True, help="the model to measure (folder or LoRA adapter folder): 'after'")
    p.add_argument("--baseline", default="default",
                   help="the model it started from, measured as 'before' (default: embedded; 'none' to skip)")
    p.add_argument("--out", required=True, help="folder for heldout.json, heldout_answers.json and the figure")
    p.add_argument("--num-answers", type=int, default=32, help="greedy answers to this many of the tasks")
    p.add_argument("--num-tasks", type=int, help="score the loss on a seeded subset (default: all 252)")
    p.add_argument("--max-length", type=int, default=512, help="tokens of prompt + reference (as in training)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length cap (tokens)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="which tasks get greedy answers")
    p.set_defaults(func=_cmd_heldout)

    p = sub.add_parser("judge-check", help="lesson 05: does the judge prefer GPT-4 Turbo's answer to Alpaca 7B's, "
                                           "in both orders? (exits 0 whether it passes or not)")
    p.add_argument("--backend", choices=("local", "openai", "url"), default="local",
                   help="'local' serves --model with `transformers serve` (default: embedded), 'openai' uses "
                        "OPENAI_API_KEY, 'url' any compatible --base-url")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--model", help="the judge: a folder for 'local' (default: embedded), a model name otherwise")
    p.add_argument("--n", type=int, default=24, help="pairs with a known winner, each judged in both orders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=12, help="length of the judge's reply")
    p.add_argument("--verdict", choices=("weighted", "text"), default="weighted",
                   help="which method's numbers decide PASSED/FAILED (both are reported)")
    p.add_argument("--out", required=True, help="folder for judge_check.json and its annotations")
    p.set_defaults(func=_cmd_judge_check)


def _cmd_heldout(args: argparse.Namespace) -> None:
    from . import heldout
    from .plots import save_figure

    from .model import check_model_folder, resolve_model

    for model in (args.model, None if args.baseline == "none" else args.baseline):
        if model is not None:  # both models are checked before the first one spends minutes measuring
            check_model_folder(resolve_model(model))
    settings = dict(num_answers=args.num_answers, num_tasks=args.num_tasks, max_length=args.max_length,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
    results = {}
    if args.baseline != "none":
        results["before"] = heldout.measure_cached(args.baseline, args.out, "before", **settings)
    results["after"] = heldout.measure_cached(args.model, args.out, "after", **settings)
    heldout.write_answers(results, args.out)
    files = save_figure(heldout.plot_heldout(results), args.out, heldout.FIGURE)
    print_json({label: {k: r[k] for k in heldout.METRIC_KEYS} for label, r in results.items()}
                | {"files": [str(f) for f in files]})


def _cmd_judge_check(args: argparse.Namespace) -> None:
    from . import judge_check

    with endpoint_from_args(args, args.model) as endpoint:
        result = judge_check.run_judge_check(endpoint, n=args.n, seed=args.seed, max_tokens=args.max_tokens,
                                             out_dir=args.out, verdict_method=args.verdict)
    print(judge_check.summary_line(result))

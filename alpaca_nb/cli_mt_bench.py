"""``alpaca-nb mt-bench answer|judge|show``: lesson 06's MT-bench commands (:mod:`alpaca_nb.mt_bench`,
:mod:`alpaca_nb.mt_bench_judge`, :mod:`alpaca_nb.mt_bench_results`).

Registered by :func:`alpaca_nb.cli.build_parser`; each handler only parses options and calls those modules.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_evaluate import add_endpoint_args, endpoint_from_args, print_json


def _temperature(text: str) -> float | str:
    if text == "fastchat":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'fastchat'") from None


def add_mt_bench(sub: argparse._SubParsersAction) -> None:
    mt = sub.add_parser("mt-bench", help="lesson 06: MT-bench two-turn answers, 1-10 single-answer grades, results")
    cmds = mt.add_subparsers(dest="mt_bench_command", required=True, metavar="STEP")

    def question_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--questions", default="mt_bench",
                       help="mt_bench (80 two-turn questions) | vicuna_bench (80 single-turn) | a FastChat question "
                            ".jsonl (default: mt_bench)")
        p.add_argument("--category", action="append", dest="categories", metavar="NAME",
                       help="keep only this category (repeatable), e.g. --category math --category writing")
        p.add_argument("--per-category", type=int, help="the first N questions of each category (file order)")

    p = cmds.add_parser("answer", help="answer every turn; writes FastChat's model_answer/<model_id>.jsonl (resumes)")
    p.add_argument("--model", help="model folder, LoRA adapter folder, or endpoint model name (default: embedded)")
    add_endpoint_args(p, True, "who answers")
    p.add_argument("--out", required=True, help="folder: answers go to OUT/model_answer/<model_id>.jsonl")
    question_args(p)
    p.add_argument("--model-id", help="name recorded in the answers (default: the model's folder or endpoint name)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per batch (in process)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per answer (FastChat: 1024)")
    p.add_argument("--temperature", type=_temperature, default=0.0,
                   help="0 = greedy (default); a number; or 'fastchat': FastChat's temperature per category")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=_cmd_answer)

    p = cmds.add_parser("judge", help="grade each turn 1-10 (single-answer grading); writes FastChat's judgments")
    p.add_argument("--answers", required=True, nargs="+", metavar="FILE", help="model_answer .jsonl file(s)")
    question_args(p)
    p.add_argument("--references", help="reference answers .jsonl for math/reasoning/coding (default: GPT-4's for "
                                        "mt_bench; 'none' grades without)")
    p.add_argument("--judge-model", help="judge model: a folder for 'local' (default: embedded), a name otherwise")
    add_endpoint_args(p, False, "the judge")
    p.add_argument("--max-tokens", type=int, default=2048,
                   help="longest judge reply (FastChat's gen_judgment: 2048, fastchat/llm_judge/common.py)")
    p.add_argument("--out", help="judgments .jsonl (default: beside the answers' folder, "
                                 "model_judgment/<judge>_single.jsonl); resumes, grades again what changed")
    p.set_defaults(func=_cmd_judge)

    p = cmds.add_parser("show", help="scores per category and turn with standard errors; writes the figure")
    p.add_argument("--judgments", required=True, help="judgments .jsonl from `mt-bench judge`")
    p.add_argument("--out", help="folder for mt_bench_categories.{png,svg} and mt_bench_scores.json "
                                 "(default: the judgments' folder)")
    p.set_defaults(func=_cmd_show)


def _cmd_answer(args: argparse.Namespace) -> None:
    from . import mt_bench
    from .model import resolve_model

    questions = mt_bench.load_questions(args.questions, args.categories, args.per_category)
    with endpoint_from_args(args, args.model) as endpoint:
        model_id = args.model_id or Path(endpoint.model if endpoint is not None else resolve_model(args.model)).name
        out = mt_bench.answers_file(args.out, model_id)
        records = mt_bench.answer_questions(questions, model=args.model, endpoint=endpoint, model_id=model_id,
                                            out_path=out, batch_size=args.batch_size,
                                            max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                            seed=args.seed, workers=args.workers)
    print_json({"answers": str(out), "model_id": model_id, "n_questions": len(records),
                "n_turns": sum(len(r["choices"][0]["turns"]) for r in records)})


def _cmd_judge(args: argparse.Namespace) -> None:
    from . import mt_bench, mt_bench_judge, mt_bench_results

    questions = mt_bench.load_questions(args.questions, args.categories, args.per_category)
    keep = {q["question_id"] for q in questions}
    answers = [a for path in args.answers for a in mt_bench.read_model_answers(path)]
    if args.categories or args.per_category:
        answers = [a for a in answers if a["question_id"] in keep]
    source = args.references or (args.questions if args.questions in mt_bench.QUESTION_SETS else "none")
    references = {} if source == "none" else mt_bench.load_references(source)
    with endpoint_from_args(args, args.judge_model) as endpoint:
        answers_dir = Path(args.answers[0]).parent
        out = args.out or mt_bench_judge.judgments_file(
            answers_dir.parent if answers_dir.name == "model_answer" else answers_dir, endpoint.model)
        judgments = mt_bench_judge.grade_answers(answers, questions, endpoint, references, max_tokens=args.max_tokens,
                                                 workers=args.workers, out_path=out)
    print_json({"judgments": str(out), "n_null": sum(j["score"] is None for j in judgments)}
               | mt_bench_results.summary(judgments))


def _cmd_show(args: argparse.Namespace) -> None:
    from . import mt_bench_results

    result = mt_bench_results.show(args.judgments, args.out)
    table = result["table"].copy()
    for column in ("mean", "standard_error"):
        table[column] = table[column].map(lambda x: "" if x is None or x != x else f"{x:.2f}")
    print(table.to_string(index=False))
    for note in result["caveats"]:
        print(f"caveat: {note}")
    print("wrote " + ", ".join(result["files"]), file=sys.stderr)

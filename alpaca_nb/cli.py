"""``alpaca-nb``: a thin command line over the same functions the notebooks call.

Each lesson owns one ``_add_*`` function (lesson 05 and the evidence commands in :mod:`alpaca_nb.cli_evaluate`);
handlers import their stage lazily so
``alpaca-nb --help`` stays instant. Errors the user can fix (:class:`AlpacaNbError`)
print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .cli_evaluate import add_evaluate, add_evidence
from .cli_evaluate import print_json as _print_json
from .cli_export import add_export
from .cli_mt_bench import add_mt_bench
from .errors import AlpacaNbError, scrub_secrets


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
    p.add_argument("--solutions", action="store_true",
                   help="run the exercises' solutions (notebooks/solutions/) instead of the lessons")
    p.set_defaults(func=_cmd_run_notebooks)

    p = sub.add_parser("site", help="render the executed lessons to a static HTML site with an index (offline)")
    p.add_argument("--profile", default="demo", help="whose executed copies: demo (outputs/notebooks) or another")
    p.add_argument("--notebooks", help="folder of executed notebooks (default: the profile's notebooks/)")
    p.add_argument("--out", help="site folder (default: outputs/site, or outputs/<profile>/site)")
    p.set_defaults(func=_cmd_site)

    p = sub.add_parser("setup-cells", help="write the setup cell into every notebook and the Colab links into "
                                           "the README, from pyproject.toml's repository URL")
    p.set_defaults(func=_cmd_setup_cells)


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

    for path in notebooks.run_notebooks(args.notebooks or None, profile=args.profile, out_dir=args.out,
                                        solutions=args.solutions):
        print(path)


def _cmd_site(args: argparse.Namespace) -> None:
    from . import site

    print(site.build_site(args.notebooks, args.out, profile=args.profile))


def _cmd_setup_cells(args: argparse.Namespace) -> None:
    from . import notebook_setup

    changed = notebook_setup.install_setup_cells()
    print("\n".join(f"updated {path}" for path in changed) or "every notebook and the README are up to date")


# --- lesson 02: generation (alpaca_nb.generate*, alpaca_nb.dedupe) ----------------------------

def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="lesson 02: Self-Instruct generation of Alpaca-style instructions (resumable)")
    p.add_argument("--num-instructions", type=int, default=100, help="target number of kept instructions")
    p.add_argument("--output-dir", help="folder for regen.json and summary.json (default: "
                   "outputs/02_generate_instructions); rerunning on the same folder resumes")
    p.add_argument("--backend", choices=("local", "openai", "url"), default="local",
                   help="local: transformers serve on the embedded model (default); openai: OPENAI_API_KEY; "
                   "url: any OpenAI-compatible --base-url (vLLM, llama.cpp, Ollama)")
    p.add_argument("--base-url", help="OpenAI-compatible base URL ending in /v1")
    p.add_argument("--model", help="model name (local: a model folder; default: the embedded SmolLM2-135M)")
    p.add_argument("--api", choices=("chat", "completions"),
                   help="endpoint style (default: chat for openai, completions otherwise, as Alpaca)")
    p.add_argument("--seed-tasks", help="seed tasks JSONL (default: the 175 Self-Instruct seeds)")
    p.add_argument("--max-concurrency", type=int, help="requests in flight (default: 1 local, 8 remote)")
    p.add_argument("--request-batch-size", type=int, default=5,
                   help="prompts per legacy-completions request where the server takes a list (Alpaca: 5)")
    p.add_argument("--num-prompt-instructions", type=int, default=3, help="seed tasks shown per prompt")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, help="new tokens per response (default: 160 local, 3072 remote)")
    p.add_argument("--stop", action="append", help="stop sequence, repeatable (default local: '###' and the next "
                   "task's number, so one task per request; remote: Alpaca's '\\n20', '20.')")
    p.add_argument("--seed", type=int, default=42, help="seed for prompt sampling and requests")
    p.add_argument("--max-requests", type=int, help="stop after this many requests in total, even short of the target "
                   "(default: 3x the estimate, at least 10)")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request before retrying")
    p.add_argument("--max-retries", type=int, default=5,
                   help="retries per request on 429, 5xx, timeouts and unusable replies, then the run stops")
    p.add_argument("--prices", help='JSON file of prices per 1M tokens, {"model": {"input": 0.15, "output": 0.6}}')
    p.add_argument("--dry-run", action="store_true", help="print the token and cost estimate and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--recipe", choices=("alpaca", "self-instruct"), default="alpaca",
                   help="alpaca: one prompt asks for whole tasks (default); self-instruct: Self-Instruct's four steps "
                   "(instructions, is-classification, instances output- or input-first, filters) in its file layout, "
                   "by default in outputs/02_generate_instructions/self_instruct")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> None:
    import signal

    from . import generate, generate_config, generate_cost

    config = generate_config.GenerateConfig(
        num_instructions=args.num_instructions, output_dir=args.output_dir, backend=args.backend, model=args.model,
        base_url=args.base_url, api=args.api, seed_tasks=args.seed_tasks, max_concurrency=args.max_concurrency,
        request_batch_size=args.request_batch_size, num_prompt_instructions=args.num_prompt_instructions,
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, stop=args.stop, seed=args.seed,
        max_requests=args.max_requests, request_timeout=args.request_timeout, max_retries=args.max_retries,
        prices=args.prices, progress=not args.no_progress, recipe=args.recipe)
    print(generate_cost.format_estimate(generate_cost.estimate(config)), file=sys.stderr)
    if args.dry_run:
        return

    def interrupt(signum, frame):  # `kill` (SIGTERM) unwinds like Ctrl-C: progress saved, local server stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    summary = generate.generate(config)
    out = config.out_dir()
    if config.recipe == "self-instruct":
        _print_json({k: summary.get(k) for k in ("status", "instructions", "kept", "instances", "classification_share",
                                                 "requests", "prompt_tokens", "completion_tokens", "discarded",
                                                 "retries", "cost_usd", "elapsed_s")})
        names = [*summary["files"].values(), generate_config.SUMMARY_FILE]
    else:
        _print_json({k: summary.get(k) for k in ("status", "kept", "target", "requests", "prompt_tokens",
                                                 "completion_tokens", "discarded", "retries", "cost_usd", "elapsed_s")})
        names = [generate_config.REGEN_FILE, generate_config.SUMMARY_FILE]
    written = [str(out / n) for n in names if (out / n).exists()]
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    if not summary.get("kept") and summary.get("requests"):
        reasons = ", ".join(f"{k} {v}" for k, v in (summary.get("discarded") or {}).items() if v) or "none parsed"
        print(f"alpaca-nb generate: nothing kept: every reply of {summary['requests']} request(s) was discarded "
              f"({reasons}); see discard_examples in {out / generate_config.SUMMARY_FILE}, then raise max_tokens, "
              "read what the model replied (lesson 02, one_response), or use a stronger teacher",
              file=sys.stderr)
        return 1


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
    p = sub.add_parser("train", help="lesson 04: supervised fine-tuning (full, FSDP under torchrun, or 8-bit LoRA)",
                       description="Fine-tune a causal LM on Alpaca-format data with Alpaca's templates, and/or "
                                   "on ShareGPT conversations (loss on the assistant turns). Options left out take "
                                   "the --preset's values.")
    p.add_argument("--mode", choices=("full", "fsdp", "8bit"), default="full",
                   help="full: one device; fsdp: FSDP full_shard under torchrun; 8bit: LLM.int8 base + LoRA")
    p.add_argument("--data", nargs="+", action="extend", metavar="PATH[:WEIGHT]",
                   help="Alpaca-format or ShareGPT .json/.jsonl file(s), repeatable (required unless "
                        "--estimate-memory); PATH:WEIGHT on every file draws a seeded weighted mix (Koala)")
    p.add_argument("--mix-size", type=int, help="records in a weighted mix (default: the files' total)")
    p.add_argument("--conversation-template", choices=("auto", "chat_template", "vicuna_v1.1"),
                   help="ShareGPT conversations: the tokenizer's chat template, or FastChat's vicuna_v1.1 "
                        "(auto, the default: the chat template when the tokenizer has one)")
    p.add_argument("--truncate-long-turns", action="store_true", default=None,
                   help="cut a turn pair longer than --max-length instead of dropping it")
    p.add_argument("--model", default="default", help="Hugging Face model folder (default: embedded SmolLM2-135M)")
    p.add_argument("--output-dir", help="where the model, logs, checkpoints and summary go (required unless "
                                        "--estimate-memory)")
    p.add_argument("--preset", default="cpu-demo",
                   help="alpaca-7b | alpaca-13b | alpaca-lora-7b | vicuna-7b | cpu-demo")
    p.add_argument("--nproc", type=int, help="fsdp: processes to launch (default: one per GPU, 2 on CPU)")
    p.add_argument("--optim", choices=("adamw_torch", "adamw_8bit"), help="adamw_8bit: bitsandbytes 8-bit AdamW")
    p.add_argument("--batching", choices=("grouped", "random"),
                   help="random: micro-batches drawn at random, as the originals (presets alpaca-7b, alpaca-13b, "
                        "alpaca-lora-7b); grouped: by length, less padding, faster, but a jagged loss curve "
                        "(cpu-demo)")
    p.add_argument("--template", choices=("stanford", "alpaca-lora"),
                   help="prompt template: stanford_alpaca's (response header '### Response:') or "
                        "alpaca-lora's templates/alpaca.json ('### Response:\\n'; preset alpaca-lora-7b)")
    p.add_argument("--train-on-inputs", action=argparse.BooleanOptionalAction, default=None,
                   help="compute the loss on the prompt too (alpaca-lora's default, preset alpaca-lora-7b); "
                        "--no-train-on-inputs masks it (Stanford Alpaca)")
    p.add_argument("--val-size", type=int, help="hold out this many records at random and evaluate their loss "
                                                "every --eval-steps (alpaca-lora: 2000; 0: none)")
    p.add_argument("--eval-steps", type=int, help="evaluate the validation split every N optimizer steps (200)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="auto (default): bf16 mixed precision where the GPU/CPU does bf16 natively, else fp16 "
                        "on a GPU (T4, V100) and fp32 on a CPU")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None, help="recompute activations")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None, help="discard checkpoints of an earlier run")
    p.add_argument("--merge-lora", action="store_true", default=None, help="8bit: also save base+adapter merged")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides epochs)")
    p.add_argument("--epochs", type=float, dest="num_epochs")
    p.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    p.add_argument("--micro-batch-size", type=int, help="examples per device per forward pass")
    p.add_argument("--effective-batch-size", type=int, help="micro-batch x accumulation x processes")
    p.add_argument("--max-length", type=int, help="truncate prompt+response to this many tokens")
    p.add_argument("--save-steps", type=int, help="checkpoint every N optimizer steps")
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--lora-dropout", type=float)
    p.add_argument("--lora-target-modules", nargs="+", metavar="NAME")
    p.add_argument("--estimate-memory", action="store_true",
                   help="print the GPU memory and host RAM this run would need (from the model's config.json, or "
                        "--model llama-7b / llama-13b) for --mode, --micro-batch-size, --max-length and --nproc "
                        "GPUs, and exit without loading anything")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> None:
    from . import train_config

    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "func", "preset", "nproc", "estimate_memory")}
    if args.estimate_memory:
        from . import memory

        config = train_config.resolve_config(args.preset, **options | {"data": args.data or [],
                                                                       "output_dir": args.output_dir or ""})
        print(memory.format_estimate(memory.estimate_for_config(config, train_config.check_nproc(args.nproc))))
        return
    if not args.data or not args.output_dir:
        raise AlpacaNbError("the following arguments are required: --data, --output-dir (or give --estimate-memory)")
    from . import train

    summary = train.train(train_config.resolve_config(args.preset, **options), nproc=args.nproc)
    if train.is_main_process():
        _print_json(summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpaca-nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_foundation, _add_generate, _add_diversity, _add_train, add_evaluate, add_evidence, add_mt_bench,
                add_export):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except AlpacaNbError as e:
        print(f"alpaca-nb {args.command}: error: {scrub_secrets(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alpaca-nb {args.command}: interrupted; what was written so far is kept", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())

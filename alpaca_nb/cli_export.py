"""``alpaca-nb export`` (lesson 07): a model folder as one GGUF file for llama.cpp and Ollama, with its Modelfile.

Registered by :func:`alpaca_nb.cli.build_parser`; the work is in :mod:`alpaca_nb.export_gguf` and
:mod:`alpaca_nb.gguf_check`. ``--format`` and ``--quant`` are checked there, so a wrong value gets the same
one-line error as every other bad input (not argparse's usage text).
"""
from __future__ import annotations

import argparse

from .cli_evaluate import print_json


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="lesson 07: write a LLaMA-architecture model (or LoRA adapter) as GGUF for "
                                      "llama.cpp / Ollama, with an Ollama Modelfile beside it")
    p.add_argument("--model", default="default",
                   help="model folder or LoRA adapter folder (merged first); default: the embedded SmolLM2-135M")
    p.add_argument("--format", default="gguf", dest="fmt", metavar="FORMAT", help="gguf (the only one)")
    p.add_argument("--quant", default="f16", help="f16 (float16 weights) or q8_0 (8-bit blocks, ~half the size)")
    p.add_argument("--out", required=True, help="the .gguf file to write; NAME.Modelfile goes beside it")
    p.add_argument("--prompt-format", default="auto", choices=("auto", "stanford", "alpaca-lora", "chatml"),
                   help="the Modelfile's TEMPLATE: auto = the one the model was trained with (lesson 04's fine-tunes: "
                        "their Alpaca template; a ChatML chat model such as the embedded one: ChatML)")
    p.add_argument("--force", action="store_true", help="replace an existing .gguf and its Modelfile")
    p.add_argument("--verify", action="store_true",
                   help="read the file back with transformers and compare tokens, logits and 8 greedy answers "
                        "with the source model (about a minute for 135M parameters on a laptop CPU)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> None:
    from . import export_gguf

    result = export_gguf.export_gguf(args.model, args.out, quant=args.quant, fmt=args.fmt,
                                     prompt_format=args.prompt_format, force=args.force)
    if args.verify:
        from .gguf_check import verify_gguf

        result["verify"] = verify_gguf(args.model, args.out)
    print_json(result)

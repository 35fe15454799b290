"""Lesson 05, step 1: the evaluation sets and the answers of a model to them, in AlpacaEval's format.

Two evaluation sets, each item carrying a reference answer to compare with:

- ``user_oriented``: the 252 user-oriented tasks of Self-Instruct, on which Alpaca was judged blind against
  ``text-davinci-003`` (reference: text-davinci-003's answers from the Self-Instruct repo, or the human target);
- ``alpaca_eval``: AlpacaEval's 805 instructions (reference: ``text_davinci_003``, ``gpt4_1106_preview`` or the
  real ``alpaca-7b``'s answers).

Answers are written as AlpacaEval's ``model_outputs.json``: ``[{instruction, output, generator, dataset}]``.
A task's input is folded into ``instruction`` as ``instruction + "\\n\\n" + input``, exactly as AlpacaEval's
``selfinstruct`` subset stores these same 252 tasks, so our files join with AlpacaEval's on ``instruction``.

A model answers either in process (any Hugging Face model folder, or a LoRA adapter folder from lesson 04:
batched greedy or sampled decoding with left padding, stopping at EOS) or through any OpenAI-compatible
endpoint (:func:`alpaca_nb.server.open_endpoint`).
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .data import Example, load_alpaca_eval, load_davinci_user_oriented, load_user_oriented_tasks
from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json
from .folder_lock import locks_output_folder, parent_of
from .generate_requests import complete_once
from .model import attach_lora_adapter, check_model_folder, model_identity, resolve_model
from .paths import outputs_dir
from .server import Endpoint
from .sft import format_prompt

EVAL_SETS = {"user_oriented": ("text_davinci_003", "human"),
             "alpaca_eval": ("text_davinci_003", "gpt4_1106_preview", "alpaca-7b")}
PROMPT_FORMATS = ("alpaca", "alpaca-lora", "chat")  # alpaca: stanford_alpaca's template
USER_ORIENTED_DATASET = "selfinstruct"  # AlpacaEval's name for the same 252 tasks
OUTPUT_FIELDS = ("instruction", "output", "generator", "dataset")
SETTINGS_FIELD = "answer_settings"  # extra key in each record: what produced it (AlpacaEval ignores it)


# --- evaluation sets ------------------------------------------------------------------------------

def full_instruction(instruction: str, input: str = "") -> str:
    """The task as one text, AlpacaEval-style: the instruction, then a blank line and the input if any."""
    return f"{instruction}\n\n{input}" if input else instruction


def load_eval_set(name: str = "user_oriented", reference: str = "text_davinci_003", n: int | None = None,
                  seed: int = 0) -> list[Example]:
    """The items of eval set ``name``, each with ``reference``'s answer as ``output``.

    ``meta`` holds ``dataset`` and ``generator`` (who wrote ``output``). ``n`` draws a random subset
    (fixed by ``seed``, kept in the set's order); ``None`` keeps every item. For ``user_oriented`` the
    text-davinci-003 answers are joined to the tasks by instruction and input.
    """
    if name not in EVAL_SETS:
        raise AlpacaNbError(f"unknown eval set {name!r}; choose one of {', '.join(EVAL_SETS)}")
    if reference not in EVAL_SETS[name]:
        raise AlpacaNbError(f"eval set {name!r} has no reference {reference!r}; choose one of "
                            f"{', '.join(EVAL_SETS[name])}")
    if name == "alpaca_eval":
        items = [Example(e.instruction, e.input, e.output, e.source, e.id,
                         {"dataset": e.meta.get("dataset"), "generator": reference})
                 for e in load_alpaca_eval(reference)]
    else:
        davinci = {(d.instruction, d.input): d.output for d in load_davinci_user_oriented()}
        items = []
        for task in load_user_oriented_tasks():
            answer = task.output if reference == "human" else davinci.get((task.instruction, task.input))
            if answer is None:
                raise AlpacaNbError(f"no text-davinci-003 answer for user-oriented task {task.id!r}; "
                                    "re-fetch the data with `alpaca-nb fetch`")
            items.append(Example(task.instruction, task.input, answer, task.source, task.id,
                                 {"dataset": USER_ORIENTED_DATASET, "generator": reference,
                                  "motivation_app": task.meta.get("motivation_app")}))
    if n is not None and n < len(items):
        keep = sorted(random.Random(seed).sample(range(len(items)), n))
        items = [items[i] for i in keep]
    return items


def reference_outputs(items: Sequence[Example]) -> list[dict[str, Any]]:
    """The eval items' reference answers as ``model_outputs`` records (generator = the reference)."""
    return [output_record(item, item.output, item.meta["generator"]) for item in items]


def output_record(item: Example, output: str, generator: str) -> dict[str, Any]:
    """One AlpacaEval ``model_outputs`` record for ``item``."""
    return {"instruction": full_instruction(item.instruction, item.input), "output": output,
            "generator": generator, "dataset": item.meta.get("dataset")}


def read_model_outputs(path: str | Path, non_empty: bool = False) -> list[dict[str, Any]]:
    """Read a ``model_outputs.json``; a record missing ``instruction``, ``output`` or ``generator`` is an error,
    and so is an empty list when ``non_empty``."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AlpacaNbError(f"{path}: expected a JSON list of {{instruction, output, generator}} records")
    if non_empty and not rows:
        raise AlpacaNbError(f"{path}: no model outputs in it; answer the eval set first (`alpaca-nb answer`)")
    for i, row in enumerate(rows):
        for key in ("instruction", "output", "generator"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise AlpacaNbError(f"{path}: record {i}: missing or non-text '{key}' (AlpacaEval's model_outputs "
                                    "format is [{instruction, output, generator, dataset}])")
    return rows


def load_outputs(source: str | Path, eval_set: str = "user_oriented") -> list[dict[str, Any]]:
    """``model_outputs`` records from a file, or the named reference's answers on ``eval_set``."""
    if Path(source).is_file():
        return read_model_outputs(source)
    if str(source).endswith(".json"):
        raise AlpacaNbError(f"{source}: file not found")
    return reference_outputs(load_eval_set(eval_set, str(source)))


# --- prompts ----------------------------------------------------------------------------------------

def build_prompt(item: Example, prompt_format: str = "alpaca", tokenizer=None) -> str | list[dict[str, str]]:
    """The prompt for ``item``: Stanford Alpaca's template (``"alpaca"``, a string), alpaca-lora's
    ``templates/alpaca.json`` (``"alpaca-lora"``: for models trained by tloen/alpaca-lora or with
    ``--template alpaca-lora``), or one user chat message (``"chat"``).

    With ``"chat"`` and a ``tokenizer``, the message is rendered with the model's chat template.
    """
    if prompt_format in ("alpaca", "alpaca-lora"):
        template = "stanford" if prompt_format == "alpaca" else "alpaca-lora"
        return format_prompt(item.instruction, item.input, template)
    if prompt_format != "chat":
        raise AlpacaNbError(f"unknown prompt format {prompt_format!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    messages = [{"role": "user", "content": full_instruction(item.instruction, item.input)}]
    if tokenizer is None:
        return messages
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --- in-process generation -----------------------------------------------------------------------

@dataclass
class LocalModel:
    """A causal LM ready for batched generation: the model (in eval mode) and its left-padding tokenizer."""

    model: Any
    tokenizer: Any
    name: str
    path: str | None = None  # the folder it was loaded from (identifies it in answer caches)
    quantize: str | None = None  # "8bit" / "4bit" when loaded quantised (bitsandbytes)


def load_local_model(path: str | Path | None = None, dtype: str = "float32", quantize: str | None = None,
                     quantize_fallback: bool = False, device: str | None = None) -> LocalModel:
    """Load a Hugging Face model folder, or a LoRA adapter folder (``adapter_config.json``) on top of its base.

    The adapter's base comes from its ``base_model_name_or_path``; the tokenizer from the adapter folder
    when it has one, else from the base. ``name`` is the folder's name (used as the default generator).
    ``quantize="8bit"`` (LLM.int8) or ``"4bit"`` (NF4, double quantisation) loads the base's linear weights
    with bitsandbytes on ``device`` (default: the GPU if any, else the CPU; :mod:`alpaca_nb.quantized`); where
    bitsandbytes cannot run that mode there, :class:`AlpacaNbError` says why, or with ``quantize_fallback``
    a printed message says so and the model loads in ``dtype`` (``LocalModel.quantize`` is then ``None``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_folder(resolve_model(path))
    base = path
    if (path / "adapter_config.json").exists():
        from peft import PeftConfig

        base = Path(resolve_model(PeftConfig.from_pretrained(path).base_model_name_or_path))
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if quantize is not None:
        from .quantized import quantized_load_kwargs

        kwargs = quantized_load_kwargs(quantize, dtype, device, fallback=quantize_fallback)
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    tok_dir = path if (path / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, padding_side="left")
    if base != path:
        model = attach_lora_adapter(model, path, tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LocalModel(model.eval(), tokenizer, path.name, str(path),
                      quantize if "quantization_config" in kwargs else None)


def finetuned_model_dir(stage: str = "04_finetune") -> Path | None:
    """Lesson 04's fine-tuned model (``model/``, else the LoRA ``adapter/`` in its outputs), or ``None`` if not run."""
    out = outputs_dir() / stage  # not created when lesson 04 has not run
    for candidate in (out / "model", out / "adapter"):
        if (candidate / "config.json").exists() or (candidate / "adapter_config.json").exists():
            return candidate
    return None


def generate_tokens(lm: LocalModel, prompts: Sequence[str], batch_size: int = 8, max_new_tokens: int = 256,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                    progress: bool = True) -> list[list[int]]:
    """The new token ids for each prompt, in order, without the EOS that ended them.

    Prompts are sorted by length and batched with left padding (the attention mask keeps padding out);
    ``temperature == 0`` is greedy decoding, otherwise sampling (seeded with ``seed``, so a sampled
    run repeats for the same prompts and batch size).
    """
    import torch
    from tqdm.auto import tqdm

    tok = lm.tokenizer
    lengths = [len(ids) for ids in tok(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    torch.manual_seed(seed)
    results: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc="answers", unit="batch", disable=not progress):
        idx = order[start:start + batch_size]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True).to(lm.model.device)
        with torch.no_grad():
            out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                    eos_token_id=tok.eos_token_id, **sampling)
        for i, row in zip(idx, out[:, enc["input_ids"].shape[1]:].tolist()):
            results[i] = row[:row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
    return results


def generate(lm: LocalModel, prompts: Sequence[str], **kwargs) -> list[str]:
    """Decoded answers (stripped) for each prompt; keyword arguments as :func:`generate_tokens`."""
    return [lm.tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in generate_tokens(lm, prompts, **kwargs)]


def ask(lm: LocalModel, instruction: str, input: str = "", prompt_format: str = "alpaca",
        max_new_tokens: int = 128, temperature: float = 0.0) -> str:
    """One answer to a free-form instruction, as Alpaca's web demo gave (greedy unless ``temperature`` > 0)."""
    item = Example(instruction.strip(), input.strip(), "", "ask")
    return generate(lm, [build_prompt(item, prompt_format, lm.tokenizer)], batch_size=1,
                    max_new_tokens=max_new_tokens, temperature=temperature, progress=False)[0]


# --- generation through an endpoint ---------------------------------------------------------------

def generate_with_endpoint(endpoint: Endpoint, items: Sequence[Example], prompt_format: str = "chat",
                           max_new_tokens: int = 256, temperature: float = 0.0, workers: int = 4,
                           progress: bool = True) -> list[str]:
    """Answers from any OpenAI-compatible endpoint: chat messages, or Alpaca's template as a plain completion.

    Requests run ``workers`` at a time; a failed request or an unusable reply (no ``choices``, an HTML page) stops
    with a one-line :class:`AlpacaNbError` naming the server and the item, never the API key.
    """
    from tqdm.auto import tqdm

    client = endpoint.client(max_retries=2)

    def request(item: Example) -> str:
        prompt = build_prompt(item, prompt_format)
        chat = {"messages": prompt} if prompt_format == "chat" else {"prompt": prompt}
        return complete_once(client, endpoint, f"item {item.id!r}", **chat, max_tokens=max_new_tokens,
                             temperature=temperature).strip()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(request, items), total=len(items), desc="answers", disable=not progress))


# --- the whole step ---------------------------------------------------------------------------------

def answer_settings(model: str | Path | LocalModel | None = None, endpoint: Endpoint | None = None,
                    prompt_format: str = "alpaca", max_new_tokens: int = 256, temperature: float = 0.0,
                    seed: int = 0) -> dict[str, Any]:
    """Everything that changes an answer, as stored in each record's ``answer_settings``: where the model
    runs (``endpoint``), which model (:func:`alpaca_nb.model.model_identity`: folder and weights fingerprint,
    or endpoint model name), the prompt format and the decoding settings (``seed`` only when sampling)."""
    if endpoint is not None:
        who = endpoint.identity()
    elif isinstance(model, LocalModel):
        who = {"endpoint": "in process"} | (model_identity(model.path) if model.path else
                                            {"model": model.name, "weights": None})
    else:
        who = {"endpoint": "in process"} | model_identity(resolve_model(model))
    return who | {"prompt_format": prompt_format, "max_new_tokens": max_new_tokens, "temperature": temperature,
                  "seed": seed if temperature > 0 else None}


@locks_output_folder("alpaca-nb answer", parent_of("out_path"))
def answer(items: Sequence[Example], model: str | Path | LocalModel | None = None, endpoint: Endpoint | None = None,
           generator: str | None = None, prompt_format: str = "alpaca", out_path: str | Path | None = None,
           batch_size: int = 8, max_new_tokens: int = 256, temperature: float = 0.0, seed: int = 0,
           workers: int = 4, progress: bool = True) -> list[dict[str, Any]]:
    """Answer every item and return (and write to ``out_path``) AlpacaEval ``model_outputs`` records.

    The model is ``endpoint`` when given, else ``model`` (a folder, an adapter folder, a loaded
    :class:`LocalModel`, or ``None`` for the embedded default). ``generator`` names it in the records
    (default: the folder's or the endpoint model's name). Each record carries its :func:`answer_settings`.
    Resumable: records already in ``out_path`` are kept; those of this generator made with the same
    settings are not asked again, those made with other settings (decoding, prompt format, the model
    retrained in place) are answered again. The file is rewritten atomically after every batch.
    Raises :class:`AlpacaNbError` when ``out_path`` holds answers of this generator from another model
    (another folder or endpoint model: give it another ``generator`` name or file), or the folder holds no model.
    """
    from tqdm.auto import tqdm

    lm = model if isinstance(model, LocalModel) else None
    if endpoint is None and lm is None:
        check_model_folder(resolve_model(model))
    if endpoint is not None:
        generator = generator or Path(endpoint.model).name
    else:
        generator = generator or (lm.name if lm else Path(resolve_model(model)).name)
    settings = answer_settings(model, endpoint, prompt_format, max_new_tokens, temperature, seed)
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if out_path and Path(out_path).exists():
        done = {(r["generator"], r["instruction"]): r for r in read_model_outputs(out_path)}
    for (name, _), record in done.items():
        before = (record.get(SETTINGS_FIELD) or {}).get("model")
        if name == generator and before is not None and before != settings["model"]:
            raise AlpacaNbError(f"{out_path} already holds answers of generator {generator!r} from model {before}, "
                                f"not from {settings['model']}; give this model another name (--generator) "
                                "or another output file (--out)")
    key = lambda it: (generator, full_instruction(it.instruction, it.input))  # noqa: E731
    todo = [it for it in items if (done.get(key(it)) or {}).get(SETTINGS_FIELD) != settings]
    chunk = batch_size if endpoint is None else 4 * workers
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=f"answers of {generator}", unit="answer",
              disable=not progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            if endpoint is not None:
                texts = generate_with_endpoint(endpoint, part, prompt_format, max_new_tokens, temperature, workers,
                                               progress=False)
            else:
                lm = lm or load_local_model(model)
                prompts = [build_prompt(it, prompt_format, lm.tokenizer) for it in part]
                texts = generate(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 temperature=temperature, seed=seed + start, progress=False)
            done.update({key(it): output_record(it, text, generator) | {SETTINGS_FIELD: settings}
                         for it, text in zip(part, texts)})
            if out_path:  # an endpoint's words may echo its key: never written
                atomic_write_json(out_path, list(done.values()),
                                  secrets=[endpoint.api_key] if endpoint is not None else None)
            bar.update(len(part))
    return [done[key(it)] for it in items]

"""Lesson 06, MT-bench step 1: the questions, the reference answers, and a model's multi-turn answers.

MT-bench (Zheng et al., 2023; lm-sys/FastChat ``fastchat/llm_judge``) asks 80 questions in 8 categories, each in two
turns: the second question follows up on the model's own first answer (e.g. "Rewrite your previous response ...").
Vicuna-bench is the earlier set of 80 single-turn questions. Both come from the manifest (``mt_bench_questions``,
``vicuna_bench_questions``); GPT-4's reference answers (``mt_bench_references``) are what the judge sees for the
categories FastChat grades against a reference (``NEED_REF_CATS``: math, reasoning, coding).

Answers are written as FastChat's ``model_answer/<model_id>.jsonl`` (``gen_model_answer.py``): one line per question,
``{question_id, answer_id, model_id, choices: [{index: 0, turns: [answer_1, answer_2]}], tstamp}``, plus our
``answer_settings`` (what produced it, as :func:`alpaca_nb.answers.answer_settings`, with the question's text
fingerprinted), so a rerun with another model, length or temperature answers again instead of reusing stale answers.
Turn 2 is asked with the whole conversation so far: ``[user q1, assistant a1, user q2]`` (:func:`turn_messages`).

Decoding is greedy by default (``temperature=0``); ``temperature="fastchat"`` samples with FastChat's temperature per
category (``common.temperature_config``: writing and roleplay 0.7, stem and humanities 0.1, the rest 0; any other
category 0.7, as ``gen_model_answer.py`` does).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

from .answers import SETTINGS_FIELD, LocalModel, answer_settings, generate, load_local_model
from .data import ensure
from .errors import AlpacaNbError
from .fileio import read_jsonl_numbered, write_jsonl
from .folder_lock import locks_output_folder, parent_of
from .generate_requests import complete_once
from .model import check_model_folder, resolve_model
from .server import Endpoint

QUESTION_SETS = {"mt_bench": "mt_bench_questions", "vicuna_bench": "vicuna_bench_questions"}  # manifest names
REFERENCE_SETS = {"mt_bench": "mt_bench_references"}  # GPT-4's answers (FastChat ships none offline for vicuna_bench)
NEED_REF_CATS = ("math", "reasoning", "coding")  # FastChat common.py: graded against a reference answer
CATEGORY_ORDER = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
FASTCHAT_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}  # FastChat common.temperature_config
FASTCHAT_DEFAULT_TEMPERATURE = 0.7  # gen_model_answer.py: a category not in the table


# --- questions and references ----------------------------------------------------------------------

def _question_file(questions: str | Path) -> Path:
    if str(questions) in QUESTION_SETS:
        return ensure(QUESTION_SETS[str(questions)])
    if str(questions).endswith(".jsonl") and Path(questions).is_file():
        return Path(questions)
    raise AlpacaNbError(f"unknown question set {str(questions)!r}; choose one of {', '.join(QUESTION_SETS)}, "
                        "or give a FastChat question .jsonl file")


def load_questions(questions: str | Path = "mt_bench", categories: Iterable[str] | None = None,
                   per_category: int | None = None) -> list[dict[str, Any]]:
    """The questions of set ``questions`` (``mt_bench``, ``vicuna_bench`` or a FastChat question ``.jsonl``), in
    file order: ``{question_id, category, turns}`` dicts (extra keys kept).

    ``categories`` keeps only those categories; ``per_category`` keeps the first N questions of each (file order,
    so a subset is the same on every run). A line that is not a question (no integer ``question_id``, no
    ``category``, ``turns`` not 1 or 2 non-empty texts, an id seen before) raises :class:`AlpacaNbError` naming
    file and line; so do an unknown category and ``per_category`` < 1.
    """
    path = _question_file(questions)
    rows, seen = [], {}
    for lineno, row in read_jsonl_numbered(path):
        where = f"{path}: line {lineno}"
        if not isinstance(row, dict) or type(row.get("question_id")) is not int:
            raise AlpacaNbError(f"{where}: needs an integer 'question_id' (FastChat's question format is "
                                "{question_id, category, turns})")
        if not isinstance(row.get("category"), str) or not row["category"]:
            raise AlpacaNbError(f"{where}: needs a 'category' (text)")
        turns = row.get("turns")
        if not isinstance(turns, list) or not 1 <= len(turns) <= 2 or \
                not all(isinstance(t, str) and t.strip() for t in turns):
            raise AlpacaNbError(f"{where}: 'turns' must be a list of 1 or 2 non-empty questions")
        if row["question_id"] in seen:
            raise AlpacaNbError(f"{where}: question_id {row['question_id']} already on line {seen[row['question_id']]}")
        seen[row["question_id"]] = lineno
        rows.append(row)
    if not rows:
        raise AlpacaNbError(f"{path}: no questions in it")
    if categories is not None:
        categories = list(categories)
        known = sorted({q["category"] for q in rows})
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise AlpacaNbError(f"unknown category {unknown[0]!r} in {path.name}; choose among {', '.join(known)}")
        rows = [q for q in rows if q["category"] in categories]
    if per_category is not None:
        if per_category < 1:
            raise AlpacaNbError(f"per_category must be at least 1, not {per_category}")
        counts: dict[str, int] = {}
        kept = []
        for q in rows:
            counts[q["category"]] = counts.get(q["category"], 0) + 1
            if counts[q["category"]] <= per_category:
                kept.append(q)
        rows = kept
    return rows


def load_references(references: str | Path = "mt_bench") -> dict[int, list[str]]:
    """Reference answers by question id: ``{question_id: [answer_1, answer_2]}``, from a FastChat answer file
    (``references`` a path) or the named set's GPT-4 references (``mt_bench``; ``vicuna_bench`` has none offline:
    ``{}``). A malformed line raises :class:`AlpacaNbError` naming file and line."""
    if str(references) in QUESTION_SETS:
        if str(references) not in REFERENCE_SETS:
            return {}
        path = ensure(REFERENCE_SETS[str(references)])
    else:
        path = Path(references)
    return {r["question_id"]: r["choices"][0]["turns"] for r in _read_answer_lines(path)}


# --- FastChat's model_answer files ---------------------------------------------------------------------

def _read_answer_lines(path: str | Path) -> list[dict[str, Any]]:
    """The records of a FastChat answer file, each checked: integer ``question_id``, ``choices[0].turns`` texts."""
    rows = []
    for lineno, row in read_jsonl_numbered(path):
        choices = row.get("choices") if isinstance(row, dict) else None
        turns = choices[0].get("turns") if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
            else None
        if not isinstance(row, dict) or type(row.get("question_id")) is not int or not isinstance(turns, list) or \
                not turns or not all(isinstance(t, str) for t in turns):
            raise AlpacaNbError(f"{path}: line {lineno}: not a FastChat answer (needs an integer 'question_id' and "
                                "'choices': [{'index': 0, 'turns': [text, ...]}])")
        rows.append(row)
    return rows


def read_model_answers(path: str | Path, non_empty: bool = True) -> list[dict[str, Any]]:
    """Read a ``model_answer`` JSONL file; every line must be a FastChat answer with a ``model_id`` (errors name
    file and line), and with ``non_empty`` the file must hold at least one."""
    rows = _read_answer_lines(path)
    for i, row in enumerate(rows):
        if not isinstance(row.get("model_id"), str) or not row["model_id"]:
            raise AlpacaNbError(f"{path}: answer {i} (question {row['question_id']}): needs a 'model_id' (text)")
    if non_empty and not rows:
        raise AlpacaNbError(f"{path}: no answers in it; answer the questions first (`alpaca-nb mt-bench answer`)")
    return rows


def answers_file(out_dir: str | Path, model_id: str) -> Path:
    """FastChat's layout: ``out_dir/model_answer/<model_id>.jsonl`` (one file per model)."""
    return Path(out_dir) / "model_answer" / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', model_id)}.jsonl"


# --- answering --------------------------------------------------------------------------------------------

def turn_messages(question: dict[str, Any], earlier: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages that ask turn ``len(earlier) + 1`` of ``question``: every earlier question with the
    model's own answer to it, then the next question (turn 2: ``[user q1, assistant a1, user q2]``)."""
    messages = []
    for q, a in zip(question["turns"], earlier):
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": question["turns"][len(earlier)]}]


def question_temperature(question: dict[str, Any], temperature: float | str = 0.0) -> float:
    """The sampling temperature for ``question``: ``temperature`` itself, or with ``"fastchat"`` FastChat's per
    category (:data:`FASTCHAT_TEMPERATURE`, else 0.7)."""
    if temperature == "fastchat":
        return FASTCHAT_TEMPERATURE.get(question["category"], FASTCHAT_DEFAULT_TEMPERATURE)
    if isinstance(temperature, str):
        raise AlpacaNbError(f"temperature {temperature!r}: give a number (0 = greedy) or 'fastchat'")
    return float(temperature)


def render_chat(lm: LocalModel, messages: list[dict[str, str]]) -> str:
    """``messages`` as the prompt text of ``lm``'s chat template, ready for the assistant's next turn."""
    if not getattr(lm.tokenizer, "chat_template", None):
        raise AlpacaNbError(f"{lm.path or lm.name}: the tokenizer has no chat template, and MT-bench asks "
                            "conversations; give a chat model, or an endpoint that applies its own template")
    return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _answer_locally(lm: LocalModel, questions: Sequence[dict], temperature: float | str, batch_size: int,
                    max_new_tokens: int, seed: int) -> list[list[str]]:
    """Every turn of each question, batched over the questions turn by turn (one batch per temperature)."""
    outs: list[list[str]] = [[] for _ in questions]
    temps = [question_temperature(q, temperature) for q in questions]
    for t in sorted(set(temps)):
        group = [i for i, x in enumerate(temps) if x == t]
        for turn in range(max(len(questions[i]["turns"]) for i in group)):
            active = [i for i in group if len(questions[i]["turns"]) > turn]
            prompts = [render_chat(lm, turn_messages(questions[i], outs[i])) for i in active]
            texts = generate(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=t,
                             seed=seed + turn, progress=False)
            for i, text in zip(active, texts):
                outs[i].append(text)
    return outs


def _answer_with_endpoint(endpoint: Endpoint, questions: Sequence[dict], temperature: float | str,
                          max_new_tokens: int, workers: int) -> list[list[str]]:
    """Every turn of each question through the endpoint, ``workers`` conversations at a time."""
    client = endpoint.client(max_retries=2)

    def converse(q: dict) -> list[str]:
        outs: list[str] = []
        for turn in range(len(q["turns"])):
            outs.append(complete_once(client, endpoint, f"question {q['question_id']} turn {turn + 1}",
                                      messages=turn_messages(q, outs), max_tokens=max_new_tokens,
                                      temperature=question_temperature(q, temperature)).strip())
        return outs

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(converse, questions))


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:22]


@locks_output_folder("alpaca-nb mt-bench answer", parent_of("out_path"))
def answer_questions(questions: Sequence[dict[str, Any]], model: str | Path | LocalModel | None = None,
                     endpoint: Endpoint | None = None, model_id: str | None = None,
                     out_path: str | Path | None = None, batch_size: int = 8, max_new_tokens: int = 256,
                     temperature: float | str = 0.0, seed: int = 0, workers: int = 4,
                     progress: bool = True) -> list[dict[str, Any]]:
    """Answer every turn of every question; return (and write to ``out_path``) FastChat answer records.

    The model is ``endpoint`` when given (chat messages), else ``model`` in process (a folder, an adapter folder,
    a loaded :class:`~alpaca_nb.answers.LocalModel` or ``None`` for the embedded default; rendered with its chat
    template). ``model_id`` names it (default: the folder's or the endpoint model's name). Each record carries
    ``answer_settings``; answers already in ``out_path`` made with the same settings for the same question text
    are reused, others are answered again; answers to questions not in this run are kept. The file (sorted by
    ``question_id``, as FastChat's ``reorg_answer_file``) is rewritten atomically after every ``batch_size``
    questions, the endpoint's API key scrubbed. A file holding another model's answers (another ``model_id``, or
    this ``model_id`` from another folder or endpoint model) is refused with :class:`AlpacaNbError`.
    """
    from tqdm.auto import tqdm

    lm = model if isinstance(model, LocalModel) else None
    if endpoint is None and lm is None:
        check_model_folder(resolve_model(model))
    if model_id is None:
        model_id = Path(endpoint.model).name if endpoint is not None else \
            (lm.name if lm else Path(resolve_model(model)).name)
    base = {t: answer_settings(model, endpoint, "chat", max_new_tokens, t, seed)
            for t in {question_temperature(q, temperature) for q in questions}}

    def settings(q: dict) -> dict[str, Any]:
        return base[question_temperature(q, temperature)] | {"question": _fingerprint(q["turns"])}

    earlier = read_model_answers(out_path, non_empty=False) if out_path and Path(out_path).exists() else []
    done = {r["question_id"]: r for r in earlier}
    now = next(iter(base.values()))["model"] if base else None
    for record in done.values():
        before = (record.get(SETTINGS_FIELD) or {}).get("model")
        if record["model_id"] != model_id or (before is not None and now is not None and before != now):
            raise AlpacaNbError(f"{out_path} holds answers of {record['model_id']!r} from {before}, not of "
                                f"{model_id!r} from {now}; one file per model (give another model_id / --model-id "
                                "or another output folder)")
    todo = [q for q in questions if (done.get(q["question_id"]) or {}).get(SETTINGS_FIELD) != settings(q)]
    chunk = batch_size if endpoint is None else 4 * workers
    with tqdm(total=len(questions), initial=len(questions) - len(todo), desc=f"MT-bench answers of {model_id}",
              unit="question", disable=not progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            if endpoint is not None:
                outs = _answer_with_endpoint(endpoint, part, temperature, max_new_tokens, workers)
            else:
                lm = lm or load_local_model(model)
                outs = _answer_locally(lm, part, temperature, batch_size, max_new_tokens, seed)
            for q, turns in zip(part, outs):
                done[q["question_id"]] = {
                    "question_id": q["question_id"], "answer_id": _fingerprint([model_id, q["question_id"], turns]),
                    "model_id": model_id, "choices": [{"index": 0, "turns": turns}], "tstamp": time.time(),
                    SETTINGS_FIELD: settings(q)}
            if out_path:  # an endpoint's words may echo its key: never written
                write_jsonl(out_path, [done[k] for k in sorted(done)],
                            secrets=[endpoint.api_key] if endpoint is not None else [])
            bar.update(len(part))
    return [done[q["question_id"]] for q in questions]


def answer_table(answers: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]]):
    """A pandas table, one row per answered question: id, category, and each turn's question and answer."""
    import pandas as pd

    by_id = {q["question_id"]: q for q in questions}
    rows = []
    for a in answers:
        q = by_id.get(a["question_id"], {"category": None, "turns": []})
        row = {"question_id": a["question_id"], "category": q["category"]}
        for i, text in enumerate(a["choices"][0]["turns"], start=1):
            row |= {f"question_{i}": q["turns"][i - 1] if i <= len(q["turns"]) else None, f"answer_{i}": text}
        rows.append(row)
    return pd.DataFrame(rows)

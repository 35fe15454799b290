"""Lesson 06, MT-bench step 2: single-answer grading, a 1-10 score for each answer, through any OpenAI-compatible judge.

As FastChat's ``gen_judgment.py --mode single`` (``common.run_judge_single``, prompts ``single-v1``,
``single-math-v1`` and their ``-multi-turn`` versions in ``data/judge_prompts.jsonl``): turn 1 is graded on the
first question and answer; turn 2 on the whole two-turn conversation, the judge told to grade the answer to the
second question. Questions of ``NEED_REF_CATS`` (math, reasoning, coding) are graded against the reference answer
(both turns' references for turn 2) when one is given. The prompts are in our own wording, modelled on the
structure of FastChat's (``JUDGE_PROMPTS``).

The score is read from the reply's text (:func:`parse_score`): ``[[7]]`` or ``[[7.5]]`` (FastChat's
``one_score_pattern``), then ``Rating: 7`` / ``Score: 7``, then ``7/10`` / ``7 out of 10``, then ``[7]``
(FastChat's ``one_score_pattern_backup``). A reply with no score, with conflicting scores, or with a score outside
1-10 gets ``score: null`` and a ``score_note`` saying why: counted, never guessed (FastChat writes -1).

Judgments use FastChat's single format, one JSON line each: ``{question_id, model, judge: [judge model, prompt
name], user_prompt, judgment, score, turn, tstamp}``, plus ``category``, ``score_note`` and ``judge_settings``
(server, judge model, prompts' fingerprint, decoding), so a rerun with other settings grades again.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError
from .fileio import read_jsonl_numbered, write_jsonl
from .folder_lock import locks_output_folder, parent_of
from .generate_requests import complete_once, map_requests
from .mt_bench import NEED_REF_CATS
from .server import Endpoint

SETTINGS_FIELD = "judge_settings"
MIN_SCORE, MAX_SCORE = 1.0, 10.0


@dataclass(frozen=True)
class JudgePrompt:
    """One grading prompt: its name (recorded in each judgment's ``judge``), system message and user template."""

    name: str
    system: str
    template: str


_ASK = ("First explain your assessment in a few sentences. Then give the score on its own line, written exactly as "
        "Rating: [[N]] where N is a whole number from 1 (useless) to 10 (excellent).")
_GENERAL = ("You grade the answer an AI assistant gave to a user. Judge how helpful, relevant, accurate, deep, "
            "creative and detailed it is. Be objective and strict: a long answer is not better for being long.")
_REFERENCED = ("You grade the answer an AI assistant gave to a user. What matters is whether it is correct, then "
               "whether it helps. A reference answer is given: compare the assistant's answer with it and name every "
               "mistake before you grade. Be objective and strict.")
_SECOND = " You see a conversation of two questions; grade only the assistant's answer to the second question."

JUDGE_PROMPTS = {
    "single": JudgePrompt("alpaca-nb-single-v1", _GENERAL + " " + _ASK,
                          "## Question\n{question_1}\n\n## The assistant's answer\n{answer_1}"),
    "single-ref": JudgePrompt("alpaca-nb-single-ref-v1", _REFERENCED + " " + _ASK,
                              "## Question\n{question_1}\n\n## Reference answer\n{ref_answer_1}\n\n"
                              "## The assistant's answer\n{answer_1}"),
    "single-multi-turn": JudgePrompt("alpaca-nb-single-v1-multi-turn", _GENERAL + _SECOND + " " + _ASK,
                                     "## Conversation\n### User\n{question_1}\n\n### Assistant\n{answer_1}\n\n"
                                     "### User\n{question_2}\n\n### Assistant\n{answer_2}"),
    "single-ref-multi-turn": JudgePrompt("alpaca-nb-single-ref-v1-multi-turn", _REFERENCED + _SECOND + " " + _ASK,
                                         "## Reference answers\n### First question\n{ref_answer_1}\n\n"
                                         "### Second question\n{ref_answer_2}\n\n"
                                         "## Conversation\n### User\n{question_1}\n\n### Assistant\n{answer_1}\n\n"
                                         "### User\n{question_2}\n\n### Assistant\n{answer_2}"),
}


def grading_prompt(question: dict[str, Any], answer_turns: Sequence[str], turn: int,
                   reference: Sequence[str] | None = None) -> tuple[JudgePrompt, list[dict[str, str]]]:
    """The prompt and chat messages that grade ``turn`` (1 or 2) of an answer; with ``reference`` (the reference
    answers' turns) for a question of ``NEED_REF_CATS``, the referenced prompt."""
    referenced = reference is not None and question["category"] in NEED_REF_CATS
    prompt = JUDGE_PROMPTS[("single-ref" if referenced else "single") + ("-multi-turn" if turn == 2 else "")]
    fields = {"question_1": question["turns"][0], "answer_1": answer_turns[0]}
    if turn == 2:
        fields |= {"question_2": question["turns"][1], "answer_2": answer_turns[1]}
    if referenced:
        fields |= {f"ref_answer_{i}": text for i, text in enumerate(reference[:turn], start=1)}
    return prompt, [{"role": "system", "content": prompt.system},
                    {"role": "user", "content": prompt.template.format(**fields)}]


# --- reading a score ----------------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)"
_SCORE_PATTERNS = (
    re.compile(rf"\[\[\s*{_NUMBER}\s*(?:/\s*10\s*)?\]\]"),                                  # [[7]], [[7.5]], [[7/10]]
    re.compile(rf"\b(?:rating|score)\s*(?:is|of)?\s*[:=]?\s*\**\s*{_NUMBER}(?!\s*[.\d]*\s*/\s*(?!10\b)\d)",
               re.IGNORECASE),                                                              # Rating: 7, Score = 7/10
    re.compile(rf"(?<![\d.]){_NUMBER}\s*(?:/|out of)\s*10\b(?!\.\d)", re.IGNORECASE),       # 7/10, 7 out of 10
    re.compile(rf"(?<!\[)\[\s*{_NUMBER}\s*\](?!\])"),                                       # [7] (FastChat's backup)
)


def parse_score(text: str | None) -> tuple[float | None, str | None]:
    """The score in a judge's reply and ``None``, or ``None`` and why there is none.

    The first form present decides: ``[[N]]``, then ``Rating: N`` (or ``Score: N``), then ``N/10`` or ``N out
    of 10``, then ``[N]``. Every score of that form must be the same number (else ``"conflicting scores"``) and lie
    in 1-10 (else ``"score N outside 1-10"``); a reply with none is ``"no score"``. Never guessed.
    """
    for pattern in _SCORE_PATTERNS:
        found = {float(m) for m in pattern.findall(text or "")}
        if len(found) > 1:
            return None, f"conflicting scores {', '.join(f'{x:g}' for x in sorted(found))}"
        if found:
            score = found.pop()
            if not MIN_SCORE <= score <= MAX_SCORE:
                return None, f"score {score:g} outside 1-10"
            return score, None
    return None, "no score"


# --- grading -------------------------------------------------------------------------------------------------

def judge_settings(endpoint: Endpoint, max_tokens: int = 2048, temperature: float = 0.0) -> dict[str, Any]:
    """Everything besides the answer that changes a grade, as stored in ``judge_settings``: :meth:`Endpoint.identity`
    (server, judge model, weights), the fingerprint of the four prompts, and the decoding settings."""
    prompts = json.dumps([[p.name, p.system, p.template] for p in JUDGE_PROMPTS.values()])
    return endpoint.identity() | {"prompt": hashlib.sha256(prompts.encode()).hexdigest()[:16],
                                  "max_tokens": max_tokens, "temperature": temperature}


def judgments_file(out_dir: str | Path, judge_model: str) -> Path:
    """FastChat's layout: ``out_dir/model_judgment/<judge>_single.jsonl`` (one file per judge, every model in it)."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(judge_model).name)
    return Path(out_dir) / "model_judgment" / f"{name}_single.jsonl"


def read_judgments(path: str | Path, non_empty: bool = True) -> list[dict[str, Any]]:
    """Read a single-grading judgments JSONL file. Each line needs an integer ``question_id``, a ``model``, ``turn``
    1 or 2, and ``score`` a number or null (FastChat's -1 is read as null); anything else raises
    :class:`AlpacaNbError` naming file and line, and so does an empty file when ``non_empty``."""
    rows = []
    for lineno, row in read_jsonl_numbered(path):
        where = f"{path}: line {lineno}"
        if not isinstance(row, dict) or type(row.get("question_id")) is not int or \
                not isinstance(row.get("model"), str) or row.get("turn") not in (1, 2):
            raise AlpacaNbError(f"{where}: not a single-grading judgment (needs an integer 'question_id', "
                                "'model' and 'turn' 1 or 2)")
        score = row.get("score")
        if score == -1:
            row = row | {"score": None, "score_note": row.get("score_note") or "no score (FastChat's -1)"}
        elif score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise AlpacaNbError(f"{where}: 'score' {score!r} is not a number or null")
        rows.append(row)
    if non_empty and not rows:
        raise AlpacaNbError(f"{path}: no judgments in it; grade answers first (`alpaca-nb mt-bench judge`)")
    return rows


@locks_output_folder("alpaca-nb mt-bench judge", parent_of("out_path"))
def grade_answers(answers: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]], endpoint: Endpoint,
                  references: dict[int, Sequence[str]] | None = None, max_tokens: int = 2048,
                  temperature: float = 0.0, workers: int = 1, out_path: str | Path | None = None,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Grade every turn of every answer (FastChat answer records, :func:`alpaca_nb.mt_bench.read_model_answers`);
    return the judgments, in answer order, turn 1 then turn 2.

    Each answer is matched to its question by ``question_id`` (a missing one is an error naming it); ``references``
    (:func:`alpaca_nb.mt_bench.load_references`) are used for math, reasoning and coding. Resumable: a judgment
    already in ``out_path`` for the same model, question and turn with the same prompt text and settings is reused;
    the others are graded again; judgments of other answers in the file are kept. The file is rewritten atomically
    every 10 judgments and when the run stops (also on an error), the API key scrubbed. A failed request or an
    unusable reply stops with one line naming the server and the question.
    """
    if not answers:
        raise AlpacaNbError("no answers to grade; answer the questions first (`alpaca-nb mt-bench answer`)")
    by_id = {q["question_id"]: q for q in questions}
    missing = [a["question_id"] for a in answers if a["question_id"] not in by_id]
    if missing:
        raise AlpacaNbError(f"answer to question {missing[0]} has no question in the question set; give the set the "
                            "answers were made from (--questions)")
    settings = judge_settings(endpoint, max_tokens, temperature)
    judge_name = Path(endpoint.model).name

    plans = []
    for a in answers:
        q, turns = by_id[a["question_id"]], a["choices"][0]["turns"]
        for turn in range(1, min(len(q["turns"]), len(turns)) + 1):
            prompt, messages = grading_prompt(q, turns, turn, (references or {}).get(q["question_id"]))
            plans.append({"question_id": q["question_id"], "model": a["model_id"], "judge": [judge_name, prompt.name],
                          "user_prompt": messages[1]["content"], "turn": turn, "category": q["category"],
                          SETTINGS_FIELD: settings, "messages": messages})

    def key(j: dict) -> tuple:
        return j["model"], j["question_id"], j["turn"]

    earlier = read_judgments(out_path, non_empty=False) if out_path and Path(out_path).exists() else []
    previous = {key(j): j for j in earlier}
    results = {i: previous[key(p)] for i, p in enumerate(plans)
               if key(p) in previous and previous[key(p)].get(SETTINGS_FIELD) == settings
               and previous[key(p)].get("user_prompt") == p["user_prompt"]}
    todo = [i for i in range(len(plans)) if i not in results]
    client = endpoint.client(max_retries=2)

    def grade(plan: dict) -> dict[str, Any]:
        plan = dict(plan)
        reply = complete_once(client, endpoint, f"grading question {plan['question_id']} turn {plan['turn']}",
                              messages=plan.pop("messages"), max_tokens=max_tokens, temperature=temperature)
        score, note = parse_score(reply)
        return {k: plan[k] for k in ("question_id", "model", "judge", "user_prompt")} | {
            "judgment": reply, "score": score, "turn": plan["turn"], "tstamp": time.time(),
            "category": plan["category"], "score_note": note, SETTINGS_FIELD: plan[SETTINGS_FIELD]}

    def save() -> None:
        if out_path:
            merged = previous | {key(j): j for j in results.values()}
            write_jsonl(out_path, [merged[k] for k in sorted(merged)], secrets=[endpoint.api_key])

    map_requests(grade, plans, todo, results, save, workers, "grading", progress)
    return [results[i] for i in range(len(plans))]

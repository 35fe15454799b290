"""Lesson 05, step 2: a blind pairwise judge, through any OpenAI-compatible endpoint.

For each instruction the judge sees two answers, labelled ``Output (a)`` and ``Output (b)``, never the
names of the models. Which answer is shown first is drawn per item from ``seed`` (``order="random"``),
or both orders are asked and averaged (``order="both"``, twice the requests, cancels position bias).
By default the verdict is *weighted*, as AlpacaEval 2's judge: the probabilities the judge gives the two labels
(:mod:`alpaca_nb.judge_weighted`) make a continuous preference in [1, 2]. The text verdict is read from the reply
too (and is the fallback where a server sends no logprobs); a reply that names no clear winner is recorded as
unparseable (``preference: None``), counted, and never guessed.

Annotations use AlpacaEval's format: ``output_1`` is the reference (baseline), ``output_2`` the model
under test, and ``preference`` is 1 (output_1 wins), 2 (output_2 wins), 1.5 (a draw), anything between for a
weighted verdict, or ``None`` (unparseable). With ``order="both"`` the preference is the mean over the orders. Each annotation also
keeps ``judge_settings`` (judge model, endpoint, prompt, decoding), so a rerun with other settings judges again.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError
from .fileio import atomic_write_json, read_json
from .folder_lock import locks_output_folder, parent_of
from .generate_requests import complete_once, map_requests
from .judge_weighted import TOP_LOGPROBS, LocalLabelReader, label_probabilities_from_response, weighted_preference
from .server import Endpoint

ORDERS = ("random", "both", "fixed")
VERDICTS = ("weighted", "text")  # weighted: the labels' probabilities (AlpacaEval 2); text: the reply parsed
SETTINGS_FIELD = "judge_settings"  # extra key in each annotation: what produced it (AlpacaEval ignores it)

JUDGE_SYSTEM = (
    "You compare two answers to the same instruction and decide which one a careful user would prefer. "
    "Weigh whether each answer does what the instruction asks, is correct, and is clear. "
    "The order of the answers means nothing, and a longer answer is not better for being longer."
)

JUDGE_TEMPLATE = """## Instruction
{instruction}

## Output (a)
{output_a}

## Output (b)
{output_b}

## Verdict
Which output is better? Reply with exactly one of: Output (a), Output (b), or Tie."""


def judge_messages(instruction: str, output_a: str, output_b: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one comparison."""
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_TEMPLATE.format(instruction=instruction, output_a=output_a,
                                                              output_b=output_b)}]


# --- reading a verdict ------------------------------------------------------------------------------

_NAMED = r"(?:output|response|answer|assistant|model|option|candidate)\s*\(?\s*([ab])\s*\)?(?![a-z])"
_BARE = r"\(?([ab])\)?(?=\s*(?:$|[.,;:!)\n]|is\b|wins\b|because\b))"
_KEY = (r"(?:verdict|final answer|answer|winner|decision|choice|better output|best output|prefer(?:red|ence)?"
        r"|choose|pick|select)")
_TIE = r"(?:tie|draw|equal|equally|same quality|both (?:are )?(?:equally )?(?:good|bad|fine))"
_ADJ = (r"(?:helpful|accurate|correct|complete|relevant|appropriate|informative|detailed|useful|thorough|clear"
        r"|concise|coherent|comprehensive|precise)")
# what a label is said to be: a winner (better, wins, ...) or a loser (worse, inferior, less helpful, loses, ...)
_POLAR = re.compile(rf"\b(?:(?P<win>better|best|superior|preferred|preferable|stronger|the winner|wins|won"
                    rf"|outperforms|beats|more {_ADJ})|(?P<lose>worse|worst|inferior|weaker|poorer|loses|lost"
                    rf"|the loser|underperforms|falls short|lacks|misses|fails|has errors|contains errors"
                    rf"|is wrong|is incorrect|less {_ADJ}))\b")
_NEGATION = re.compile(r"\b(?:not|never|neither|nor|no|cannot)\b")
_BRACKETS = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]")
_WHOLE = re.compile(rf"^(?:the better (?:one|output) is\s*)?(?:{_NAMED}|\(?([ab])\)?)(?:\s+is (?:the )?better)?$")
_KEYED_CLAUSE = re.compile(rf"^(?:.*\b{_KEY}\s*(?:is)?\s*[:=\-]?\s*)?(?:{_NAMED}|\(?([ab])\)?|({_TIE}))"
                           r"(?:\s+is (?:the )?(?:better|best))?$")
_KEYED = re.compile(rf"{_KEY}\s*(?:is)?\s*[:=\-]?\s*(?:{_NAMED}|{_BARE}|(?:a )?({_TIE})\b)")
_NOT_AS_GOOD = re.compile(rf"{_NAMED}\s+(?:is|was|does|seems)\s+not\s+(?:quite\s+)?as\s+(?:good|strong|{_ADJ})"
                          rf"\s+as\s+{_NAMED}")
# a label: "Output (b)", "response 2", or a bare "(b)" ("Both are bad, but (b) is slightly better")
_ANY_LABEL = re.compile(r"(?:(?:output|response|answer|assistant|model|option|candidate)\s*\(?\s*|\((?=[a-z]\)))"
                        r"([a-z]|\d+)\s*\)?(?![a-z])")
_MENTION = re.compile(_NAMED)
_OTHER_LABEL = re.compile(r"(?:output|response)\s*\(?\s*(?:[c-z]|\d+)\s*\)?(?![a-z])")
_TIE_WORD = re.compile(rf"\b{_TIE}\b")
# a tie word conceded before a verdict ("Both are bad, but (b) is slightly better") is not a tie claim
_CONCEDED_TIE = re.compile(rf"\b{_TIE}\b\s*,?\s*(?=\b(?:but|however|yet)\b)")
_CLAUSE_END = re.compile(r"[.;!?\n]+|,|\b(?:but|while|whereas|however|although|though|so|hence|therefore)\b")


def _normalise(text: str) -> str:
    text = re.sub(r"n[’']t\b", " not", text.lower())  # isn't -> is not, doesn't -> does not
    text = re.sub(r"[*_`#>\"']", " ", text)
    return re.sub(r"[ \t]+", " ", text).strip().strip(".!:; \n")


def _verdict(match: re.Match) -> str:
    letter = next(g for g in match.groups() if g)
    return letter if letter in ("a", "b") else "tie"


def _other(label: str) -> str:
    return "b" if label == "a" else "a"


def _clause_claims(clause: str, first: bool) -> tuple[set[str], bool]:
    """The winners one clause states (a label said to win, or the other of a label said to lose) and whether
    it says something about a label that cannot be read safely (a negated comparison, a comparison with no
    subject, a label that does not exist)."""
    labels = list(_ANY_LABEL.finditer(clause))
    if _NEGATION.search(clause):
        if m := _NOT_AS_GOOD.search(clause):  # "Output (a) is not as good as Output (b)": b wins
            return {m.group(2)}, False
        return set(), bool(labels) or bool(_POLAR.search(clause))
    if (first or _KEYED_CLAUSE.match(clause) and re.search(_KEY, clause)) and (m := _KEYED_CLAUSE.match(clause)):
        return {_verdict(m)}, False  # the clause is a label, alone or after "Verdict:" ("B", "Answer: A is better")
    winners, unclear = set(), False
    polar = list(_POLAR.finditer(clause))
    for word in polar:
        is_win = word.group("win") is not None
        before = [lab for lab in labels if lab.end() <= word.start()
                  and not re.search(r"\bthan\b|\bto\b", clause[lab.end():word.start()])
                  and not _POLAR.search(clause[lab.end():word.start()])
                  and len(clause[lab.end():word.start()].split()) <= 8]
        after = re.match(rf"\s+(?:(?:than|to|over)\s+)?(?:both\s+)?{_ANY_LABEL.pattern}", clause[word.end():])
        if after and not (re.match(r"\s+(?:than|to|over)\b", clause[word.end():])
                          or word.group(0) in ("outperforms", "beats", "underperforms")):
            after = None
        subject = before[-1].group(1) if before else None
        if subject is None:
            unclear = unclear or after is not None  # "It is better than Output (b)": better than what?
            continue
        if subject not in ("a", "b") or (after and after.group(1) not in ("a", "b")):
            unclear = True
            continue
        winners.add(subject if is_win else _other(subject))
        if after:
            winners.add(_other(after.group(1)) if is_win else after.group(1))
    if not polar:
        winners |= {_verdict(m) for m in _KEYED.finditer(clause)}
    return winners, unclear


def parse_verdict(text: str | None) -> str | None:
    """``"a"``, ``"b"`` or ``"tie"`` from a judge's reply, or ``None`` when it names no clear winner.

    MT-Bench brackets (``[[A]]``, ``[[C]]`` = tie) or a reply that is just a label (``B``, ``Output (a)``) are
    read first. Otherwise the reply is cut into clauses, and a label counts only where a clause says it wins:
    the reply opens with it (``Output (b), because ...``), it follows a key (``Verdict: A``, ``I prefer Output
    (a)``), or it is said to be better (``Output (b) is better``, ``... more helpful``, ``... wins``); a label said
    to lose makes the other one the winner (``Output (a) is worse than / inferior to / less helpful than Output
    (b)``, ``Output (a) loses``, ``Output (a) is not as good as Output (b)``). The reply is read only if all its
    claims name the same winner, and never when a clause says something about a label that cannot be read
    safely: a negated statement (``Output (b) is not better``, ``Output (a) does not ...``), a comparison with no
    subject (``It is better than Output (a)``) or with a label that does not exist (``Output (c)``). With no
    claim at all: a tie word with none or both outputs named
    is a tie, and a single output named, in a reply without any negation or comparison, is the winner.
    Case, markdown and surrounding punctuation are ignored.
    """
    if not text or not text.strip():
        return None
    t = _CONCEDED_TIE.sub("", _normalise(text))
    brackets = {"tie" if x in ("c", "tie") else x for x in _BRACKETS.findall(t)}
    if len(brackets) == 1:
        return brackets.pop()
    if m := _WHOLE.search(t):
        return _verdict(m)
    clauses = [c.strip() for c in _CLAUSE_END.split(t) if c and c.strip()]
    winners, unclear = set(), False
    for i, clause in enumerate(clauses):
        found, vague = _clause_claims(clause, first=i == 0)
        winners |= found
        unclear = unclear or vague
    if unclear:
        return None
    if "tie" in winners:
        return "tie" if winners == {"tie"} else None
    if winners:
        return winners.pop() if len(winners) == 1 and not _TIE_WORD.search(t) else None
    named = set(_MENTION.findall(t))
    if _TIE_WORD.search(t):
        return "tie" if len(named) != 1 else None
    if len(named) != 1 or _OTHER_LABEL.search(t) or _NEGATION.search(t):
        return None
    return named.pop()


def verdict_to_preference(verdict: str | None, first: int) -> float | None:
    """AlpacaEval's preference from a verdict, given which output (1 or 2) was shown as ``Output (a)``."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 1.5
    return float(first if verdict == "a" else 3 - first)


# --- judging pairs ------------------------------------------------------------------------------------

def presentation_orders(instruction: str, order: str = "random", seed: int = 0) -> list[int]:
    """Which output is shown as ``Output (a)`` in each request for this item: ``[1]``, ``[2]`` or ``[1, 2]``.

    ``"random"`` draws from ``seed`` and the instruction, so an item keeps its order across runs and subsets.
    """
    if order == "both":
        return [1, 2]
    if order == "fixed":
        return [1]
    if order != "random":
        raise AlpacaNbError(f"unknown judge order {order!r}; choose one of {', '.join(ORDERS)}")
    return [1 if random.Random(f"{seed}\x00{instruction}").random() < 0.5 else 2]


def pair_outputs(model_outputs: Sequence[dict], reference_outputs: Sequence[dict]) -> list[tuple[dict, dict]]:
    """Join each model output with the reference output of the same instruction (reference first)."""
    references = {r["instruction"]: r for r in reference_outputs}
    missing = [m["instruction"] for m in model_outputs if m["instruction"] not in references]
    if missing:
        raise AlpacaNbError(f"{len(missing)} model output(s) have no reference output with the same instruction, "
                            f"e.g. {missing[0][:80]!r}; answer the same eval set as the reference")
    return [(references[m["instruction"]], m) for m in model_outputs]


def annotations_file(generator: str) -> str:
    """The default annotations file name of a model: ``annotations_<generator>.json`` (one file per model)."""
    return f"annotations_{re.sub(r'[^A-Za-z0-9_.+-]+', '_', generator)}.json"


def judge_settings(endpoint: Endpoint, max_tokens: int = 32, temperature: float = 0.0,
                   verdict: str = "weighted") -> dict[str, Any]:
    """Everything besides the pair and its order that changes a verdict, as stored in ``judge_settings``:
    :meth:`Endpoint.identity` (server, judge model and weights), the prompt's fingerprint, the decoding settings
    and the verdict method."""
    prompt = hashlib.sha256((JUDGE_SYSTEM + "\0" + JUDGE_TEMPLATE).encode()).hexdigest()[:16]
    return endpoint.identity() | {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                                  "verdict": verdict}


def _earlier_annotations(out_path: str | Path | None, generator: str) -> list[dict[str, Any]]:
    """The annotations already in ``out_path``; refuses a file that holds another model's."""
    if not out_path or not Path(out_path).exists():
        return []
    rows = read_json(out_path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "instruction" in r for r in rows):
        raise AlpacaNbError(f"{out_path}: not an annotations file (a JSON list of annotations); "
                            "give another --out")
    others = sorted({str(r.get("generator_2")) for r in rows} - {generator})
    if others:
        raise AlpacaNbError(f"{out_path} holds annotations of model {others[0]!r}, not {generator!r}; judge each "
                            f"model into its own file (--out), e.g. {annotations_file(generator)}")
    return rows


@locks_output_folder("alpaca-nb judge", parent_of("out_path"))
def judge(model_outputs: Sequence[dict], reference_outputs: Sequence[dict], endpoint: Endpoint,
          order: str = "random", seed: int = 0, max_tokens: int = 32, temperature: float = 0.0, workers: int = 1,
          out_path: str | Path | None = None, progress: bool = True, verdict: str = "weighted") -> list[dict[str, Any]]:
    """Judge every model output against the reference output of its instruction; return the annotations.

    ``verdict="weighted"`` (default) makes ``preference`` AlpacaEval 2's continuous one, from the probabilities
    of the labels (:mod:`alpaca_nb.judge_weighted`: the server's ``logprobs``, or a local judge folder's logits),
    averaged over the orders; where none are available it falls back to the text verdict, and the annotation's
    ``verdict_method`` says ``"text (no logprobs)"``. ``verdict="text"`` parses the reply only. Both are stored
    per judgement (``verdict``; ``p_a``/``p_b``), so the judge check can compare the two.

    Each annotation is AlpacaEval's record plus ``annotator`` (the judge model), ``dataset``,
    ``judgements`` (per request: which output was shown first, the raw reply, the parsed verdict) and
    ``judge_settings`` (:func:`judge_settings`). ``model_outputs`` must be one model's, non-empty.
    Resumable: annotations already in ``out_path`` for the same pair, order and settings are reused, others
    for this run's instructions are judged again (each replaced once its new verdict is in); annotations of
    other instructions in the file are kept.
    The file is rewritten atomically every 10 items and when the run stops (also on an error), the API key
    scrubbed. A file holding another model's annotations is refused (:class:`AlpacaNbError`), so nothing is
    overwritten. A failed request or an unusable reply stops with a one-line error naming the server and the item.
    """
    if not model_outputs:
        raise AlpacaNbError("no model outputs to judge; answer the eval set first (`alpaca-nb answer`)")
    generators = sorted({m["generator"] for m in model_outputs})
    if len(generators) > 1:
        raise AlpacaNbError(f"the model outputs mix {len(generators)} generators ({', '.join(generators[:3])}); "
                            "judge one model at a time (answer each into its own --out file)")
    if verdict not in VERDICTS:
        raise AlpacaNbError(f"unknown verdict method {verdict!r}; choose one of {', '.join(VERDICTS)}")
    client = endpoint.client(max_retries=2)
    annotator = Path(endpoint.model).name
    settings = judge_settings(endpoint, max_tokens, temperature, verdict)
    local_folder = verdict == "weighted" and Path(endpoint.model).is_dir()
    reader = LocalLabelReader(endpoint.model) if local_folder else None  # transformers serve sends no logprobs
    extra = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if verdict == "weighted" and not local_folder else {}

    def plan(ref: dict, mod: dict) -> dict[str, Any]:
        return {"instruction": mod["instruction"], "output_1": ref["output"], "generator_1": ref["generator"],
                "output_2": mod["output"], "generator_2": mod["generator"], "dataset": mod.get("dataset"),
                "annotator": annotator, SETTINGS_FIELD: settings,
                "firsts": presentation_orders(mod["instruction"], order, seed)}

    def key(a: dict) -> tuple:
        return (a["instruction"], a["output_1"], a["output_2"], a["annotator"],
                tuple(j["first"] for j in a.get("judgements", [])) or tuple(a.get("firsts", ())),
                json.dumps(a.get(SETTINGS_FIELD), sort_keys=True))

    def annotate(p: dict) -> dict[str, Any]:
        judgements = []
        for first in p.pop("firsts"):
            a, b = (p["output_1"], p["output_2"]) if first == 1 else (p["output_2"], p["output_1"])
            messages, sink = judge_messages(p["instruction"], a, b), []
            raw = complete_once(client, endpoint, f"judge request for instruction {p['instruction'][:60]!r}",
                                messages=messages, max_tokens=max_tokens, temperature=temperature, sink=sink,
                                **extra)
            probs = reader(messages) if reader else (label_probabilities_from_response(sink[0]) if extra else None)
            judgements.append({"first": first, "raw_completion": raw, "verdict": parse_verdict(raw),
                               **(probs or {})})
        prefs = [verdict_to_preference(j["verdict"], j["first"]) for j in judgements]
        prefs = [x for x in prefs if x is not None]
        text_pref = sum(prefs) / len(prefs) if prefs else None
        weighted = weighted_preference(judgements) if verdict == "weighted" else None
        method = "weighted" if weighted is not None else ("text" if verdict == "text" else "text (no logprobs)")
        return p | {"preference": weighted if weighted is not None else text_pref, "verdict_method": method,
                    "judgements": judgements}

    plans = [plan(ref, mod) for ref, mod in pair_outputs(model_outputs, reference_outputs)]
    earlier = _earlier_annotations(out_path, generators[0])
    cached = {key(a): a for a in earlier}
    asked = {p["instruction"] for p in plans}
    kept = [a for a in earlier if a["instruction"] not in asked]  # other items judged before: never dropped
    previous = {a["instruction"]: a for a in earlier}  # a stale verdict stays on disk until its new one is in
    results: dict[int, dict] = {i: cached[key(p)] for i, p in enumerate(plans) if key(p) in cached}
    todo = [i for i in range(len(plans)) if i not in results]

    def save() -> None:
        if out_path:
            current = [results.get(i) or previous.get(p["instruction"]) for i, p in enumerate(plans)]
            atomic_write_json(out_path, kept + [a for a in current if a is not None], secrets=[endpoint.api_key])

    map_requests(annotate, plans, todo, results, save, workers, "judging", progress)
    return [results[i] for i in range(len(plans))]


def count_unparseable(annotations: Sequence[dict]) -> int:
    """How many annotations have no usable verdict (``preference`` is ``None``)."""
    return sum(a.get("preference") is None for a in annotations)

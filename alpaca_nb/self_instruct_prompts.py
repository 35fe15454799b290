"""Self-Instruct's four prompts and parsers: new instructions, is-it-classification, instances, filtering.

Modelled on yizhongw/self-instruct (Wang et al., 2023), ``self_instruct/``: ``bootstrap_instructions.py``
(``encode_prompt``, ``post_process_gpt3_response``), ``templates/clf_task_template.py`` (``template_1``),
``identify_clf_or_not.py``, ``templates/instance_gen_template.py`` (``output_first_template_for_clf``,
``input_first_template_for_gen``), ``generate_instances.py`` and ``prepare_for_finetuning.py``
(``parse_input_output``, ``parse_instances_for_*``, ``filter_invalid_instances``,
``filter_duplicate_instances``). The prompts are in our own wording; the rules are upstream's. Every
deliberate difference (the README's "What differs from the originals" sums them up):

1. Wording: the three prompt headers are reworded with the same content (each marked below).
2. Examples are data, not pasted text: upstream hand-picked 31 instructions for the classification prompt
   (12 "Yes", 19 "No"; most are seed tasks) and hand-wrote ~30 example tasks, many with several instances,
   for the two instance prompts. We draw them from the 175 seed tasks by their ``is_classification`` label
   with a fixed random seed (:func:`pick_examples`): 8 "Yes" + 12 "No" (upstream's proportion, fewer), and
   6 tasks per instance prompt among the short ones. The seeds have one instance each, so our examples never
   show several instances of one task (upstream's do).
3. Seed inputs carry no field name, so an input-first example shows ``Input:`` where upstream wrote e.g.
   ``Paragraph:``; the parser strips either.
4. Capitalisation: upstream's ``str.capitalize()`` also lowercases the rest of the instruction (``NASA`` ->
   ``Nasa``); we only uppercase the first letter.
5. Truncation: upstream drops a whole instruction reply that hit ``max_tokens``; we drop only its last, cut-off
   instruction, as Alpaca does (counted as ``truncated``). A chat model's restated leading number is accepted.
6. The classification answer is read from its first word, any case, punctuation stripped ("Yes." is yes;
   upstream counts only "Yes"/"yes"/"YES" exactly). Anything else is a non-classification task, as upstream,
   and counted as ``unclear``.
7. Instances beyond 5 per task: upstream keeps a random 5; we keep the first 5 (label order stays).
8. Discards are counted by reason with a few examples (upstream drops them silently).
9. The output-first prompt ends with ``Class label:`` (upstream: after the task), so even a weak teacher starts
   with a label; the stored ``raw_instances`` restore that prefix, so upstream's parser reads them as they are.
10. Request settings (:data:`STEP_SETTINGS`): upstream's, except ``top_p=1`` where upstream sends 0 with
    temperature 0 (the same greedy decoding; some servers refuse 0); no ``logprobs``; ``presence_penalty`` only
    for remote servers (``transformers serve`` has none); and, locally, fewer tokens and one new instruction per
    step-1 request (stop at line 10), as the 135M teacher repeats its first line rather than list new ones.
"""
from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from . import prompts
from .data import Example
from .generate_config import GenerateConfig

# --- request settings per step (bootstrap_instructions.py, identify_clf_or_not.py, generate_instances.py) ---


@dataclass(frozen=True)
class StepSettings:
    """One step's request settings: tokens (remote, local), sampling, stop sequences (remote, local)."""

    max_tokens: tuple[int, int]
    temperature: float
    top_p: float
    stop: tuple[tuple[str, ...], tuple[str, ...]]
    presence_penalty: float = 0.0


STEP_SETTINGS = {
    "instructions": StepSettings((1024, 48), 0.7, 0.5, (("\n\n", "\n16", "16.", "16 ."), ("\n\n", "\n10")), 2.0),
    "classification": StepSettings((3, 3), 0.0, 1.0, (("\n", "Task"), ("\n", "Task"))),
    "instances": StepSettings((350, 64), 0.0, 1.0, (("Example 6", "Task:"), ("Example 6", "Task:")), 1.5),
}
CLF_INSTANCE_MAX_TOKENS = 300  # upstream: 300 when a batch holds a classification task ("the template is longer")


def step_config(config: GenerateConfig, step: str, has_classification: bool = False) -> GenerateConfig:
    """``config`` with ``step``'s request settings; ``config.max_tokens``, when set, caps steps 1 and 3."""
    from dataclasses import replace

    s, local = STEP_SETTINGS[step], int(config.backend == "local")
    tokens = s.max_tokens[local]
    if step == "instances" and has_classification and not local:
        tokens = CLF_INSTANCE_MAX_TOKENS
    if config.max_tokens and step != "classification":
        tokens = min(tokens, config.max_tokens)
    return replace(config, max_tokens=tokens, temperature=s.temperature, top_p=s.top_p, stop=list(s.stop[local]))


def step_extra(config: GenerateConfig, step: str) -> dict:
    """Request fields beyond the common ones: upstream's ``presence_penalty``, for remote servers only."""
    penalty = STEP_SETTINGS[step].presence_penalty
    return {"presence_penalty": penalty} if penalty and config.backend != "local" else {}


# --- step 1: new instructions (bootstrap_instructions.py) -------------------------------------------------

# 8 instructions per prompt: 6 seeds and 2 from the model's own pool (fewer while the pool is small).
NUM_PROMPT_INSTRUCTIONS, NUM_MACHINE_INSTRUCTIONS = 8, 2
# Upstream: "Come up with a series of tasks:" (reworded; its classification-only variant is not offered).
INSTRUCTION_HEADER = "Come up with a series of new tasks, one per numbered line:\n"

# Self-Instruct's keyword filter. Alpaca's list (prompts.BLOCKED_WORDS) adds five words that Self-Instruct
# keeps: "video", "audio", "music", "flowchart", "diagram".
BLOCKED_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                 "draw", "plot", "go to")
ALPACA_ONLY_BLOCKED_WORDS = tuple(w for w in prompts.BLOCKED_WORDS if w not in BLOCKED_WORDS)
_BLOCKED_RE = prompts.blocked_words_re(BLOCKED_WORDS)
INSTRUCTION_DISCARD_REASONS = ("empty_reply", "truncated", "too_short", "too_long", "blocked_word", "write_a_program",
                               "starts_with_punctuation", "starts_non_ascii", "similar")


def encode_instruction_prompt(instructions: Sequence[str]) -> str:
    """Step 1's prompt: the header, ``instructions`` numbered 1..n (whitespace collapsed, trailing colon cut,
    as upstream), then ``"n+1."`` for the model to continue."""
    lines = [INSTRUCTION_HEADER]
    for i, text in enumerate(instructions, start=1):
        lines.append(f"{i}. {_one_line(text)}\n")
    lines.append(f"{len(instructions) + 1}.")
    return "".join(lines)


def parse_instructions(text: str, finish_reason: str | None, restated: int | None = None) -> prompts.Parsed:
    """Step 1's reply split into instructions (upstream's split on ``\\n<number>.``) and filtered by upstream's
    rules (:func:`alpaca_nb.prompts.filter_reason` with Self-Instruct's keyword list), not yet by novelty.

    Upstream's completion model continues after the prompt's ``"9."``, so its reply starts with the instruction
    itself, kept whole even when it begins with a number and a dot ("2001. A Space Odyssey: ..."). A chat model restates the
    number first: give ``restated`` (the number the prompt ends with) to strip exactly that ``"9. "``, nothing else.
    Kept tasks are ``{"instruction"}``. A reply with no instruction at all counts as ``empty_reply``.
    """
    parsed = prompts.Parsed()
    if restated is not None:
        text = re.sub(rf"^\s*{restated}\s?\.\s", "", text)
    items = [re.sub(r"\s+", " ", item).strip() for item in re.split(r"\n\d+\s?\. ", text)]
    if finish_reason == "length" and items and items[-1]:
        prompts.reject(parsed, "truncated", items.pop())
    items = [item[0].upper() + item[1:] for item in items if item]
    if not items and not parsed.discarded:
        prompts.reject(parsed, "empty_reply", text)
    for item in items:
        reason = prompts.filter_reason(item, _BLOCKED_RE)
        if reason:
            prompts.reject(parsed, reason, item)
        else:
            parsed.tasks.append({"instruction": item})
    return parsed


# --- step 2: is it a classification task? (identify_clf_or_not.py, templates/clf_task_template.py) ----------

# Upstream: "Can the following task be regarded as a classification task with finite output labels?"
CLF_HEADER = "Is each task below a classification task, one whose answer is a label from a finite set?\n\n"
CLF_QUESTION = "Is it classification?"
NUM_CLF_EXAMPLES = (8, 12)  # (yes, no); upstream: 12 and 19, hand-picked
EXAMPLE_SEED = 0            # the examples are the same for every run and every request, as upstream's template


@dataclass(frozen=True)
class Examples:
    """The seed tasks shown in the step 2 and step 3 prompts (see :func:`pick_examples`)."""

    clf_yes: tuple[Example, ...]
    clf_no: tuple[Example, ...]
    output_first: tuple[Example, ...]
    input_first: tuple[Example, ...]


def pick_examples(seeds: Sequence[Example], n_instance_examples: int = 6, max_words: int = 60) -> Examples:
    """Few-shot examples drawn from the seed tasks by their ``is_classification`` flag, with a fixed seed.

    The classification prompt gets :data:`NUM_CLF_EXAMPLES` (yes, no), shuffled together; each instance
    prompt gets ``n_instance_examples`` tasks of its kind whose instance is at most ``max_words`` words
    (short prompts for a slow local teacher). Seeds without the flag count as non-classification.
    """
    rng = random.Random(EXAMPLE_SEED)
    clf = [s for s in seeds if s.meta.get("is_classification")]
    gen = [s for s in seeds if not s.meta.get("is_classification")]

    def short(pool: list[Example]) -> list[Example]:
        return [s for s in pool if len(f"{s.input} {s.output}".split()) <= max_words] or pool

    yes, no = rng.sample(clf, min(NUM_CLF_EXAMPLES[0], len(clf))), rng.sample(gen, min(NUM_CLF_EXAMPLES[1], len(gen)))
    pool_clf, pool_gen = short(clf), short(gen)
    return Examples(tuple(yes), tuple(no), tuple(rng.sample(pool_clf, min(n_instance_examples, len(pool_clf)))),
                    tuple(rng.sample(pool_gen, min(n_instance_examples, len(pool_gen)))))


def encode_clf_prompt(examples: Examples, instruction: str) -> str:
    """Step 2's prompt: the header, the labelled examples (yes and no mixed), then ``instruction`` to label."""
    shown = [(e, "Yes") for e in examples.clf_yes] + [(e, "No") for e in examples.clf_no]
    random.Random(EXAMPLE_SEED).shuffle(shown)
    body = "".join(f"Task: {_one_line(e.instruction)}\n{CLF_QUESTION} {label}\n\n" for e, label in shown)
    return f"{CLF_HEADER}{body}Task: {instruction.strip()}\n{CLF_QUESTION}"


def parse_clf(text: str) -> bool | None:
    """``True`` for a yes, ``False`` for a no, ``None`` when the answer is neither (treated as no)."""
    words = text.strip().split()
    word = words[0].strip(string.punctuation).lower() if words else ""
    return True if word == "yes" else False if word == "no" else None


# --- step 3: instances, output-first or input-first (generate_instances.py, instance_gen_template.py) -----

# Upstream: "Given the classification task definition and the class labels, generate an input that
# corresponds to each of the class labels. If the task doesn't require input, just generate possible class labels."
OUTPUT_FIRST_HEADER = ("For each classification task, list its possible class labels and, after each label, write "
                       "an input that belongs to it. If the task needs no input, just list the possible labels.\n\n")
# Upstream: "Come up with examples for the following tasks. Try to generate multiple examples when possible.
# If the task doesn't require additional input, you can generate the output directly."
INPUT_FIRST_HEADER = ("Write examples for each task below, several when you can. If a task needs no input, write "
                      "the output directly.\n\n")
MAX_INSTANCES = 5  # upstream's --max_instances_to_generate and prepare_for_finetuning's cap
CLASS_LABEL = "Class label:"


def encode_instance_prompt(examples: Examples, instruction: str, is_classification: bool) -> str:
    """Step 3's prompt: output-first (class label, then an input) for a classification task so every label
    gets inputs, ending with ``"Task: {instruction}\\nClass label:"``; input-first otherwise, ending with
    ``"Task: {instruction}\\n"`` as upstream."""
    if is_classification:
        body = "".join(f"Task: {_one_line(e.instruction)}\nClass label: {e.output.strip()}\n"
                       + (f"{e.input.strip()}\n" if e.input.strip() else "") + "\n" for e in examples.output_first)
        return f"{OUTPUT_FIRST_HEADER}{body}Task: {instruction.strip()}\n{CLASS_LABEL}"
    parts = []
    for e in examples.input_first:
        if e.input.strip():
            parts.append(f"Task: {_one_line(e.instruction)}\nExample 1\nInput: {e.input.strip()}\n"
                         f"Output: {e.output.strip()}\n\n")
        else:
            parts.append(f"Task: {_one_line(e.instruction)}\nOutput: {e.output.strip()}\n\n")
    return f"{INPUT_FIRST_HEADER}{''.join(parts)}Task: {instruction.strip()}\n"


# --- step 4: parse and filter the instances (prepare_for_finetuning.py) ----------------------------------

INSTANCE_DISCARD_REASONS = ("no_instances", "truncated", "input_equals_output", "empty_output", "ends_with_colon",
                            "same_input_different_output", "duplicate", "beyond_max")


@dataclass
class Instances:
    """One task's parsed instances ``(input, output)`` and the discards by reason."""

    instances: list[tuple[str, str]] = field(default_factory=list)
    discarded: Counter = field(default_factory=Counter)


def _input_output(text: str) -> tuple[str, str]:
    """Upstream's ``parse_input_output``: the input before ``Output:``, the output after it (up to a next
    ``Input:``); no ``Output:`` means the whole text is the output."""
    parts = re.split(r"Output\s*\d*\s*:", text)
    inp, out = (parts[0].strip(), parts[1].strip()) if len(parts) > 1 else ("", text.strip())
    out = re.split(r"Input\s*\d*\s*:", out)[0].strip()
    return re.sub(r"^Input\s*\d*\s*:", "", inp).strip(), out


def parse_instances(raw: str, is_classification: bool, finish_reason: str | None) -> Instances:
    """Step 4 on one task: parse ``raw`` (step 3's reply) output-first or input-first, drop the cut-off last
    instance, then upstream's filters (input == output, empty output, a field ending in ``:``; all instances of
    a task where one non-empty input has two outputs; exact duplicates) and the cap of :data:`MAX_INSTANCES`."""
    result, found = Instances(), []
    if is_classification:
        if "Class label:" in raw:
            for chunk in raw.split("Class label:")[1:]:
                label, _, inp = chunk.strip().partition("\n")
                found.append((inp.strip(), label.strip()))
    elif re.search(r"Example\s?\d*\.?", raw):
        found = [_input_output(t) for t in (t.strip() for t in re.split(r"Example\s?\d*\.?", raw.strip())) if t]
    elif re.search(r"Output\s*\d*\s*:", raw):
        found = [_input_output(raw.strip())]
    if not found:
        result.discarded["no_instances"] += 1
        return result
    if finish_reason == "length":
        found.pop()
        result.discarded["truncated"] += 1
    valid = []
    for inp, out in found:
        reason = ("input_equals_output" if inp == out else "empty_output" if not out else
                  "ends_with_colon" if inp.endswith(":") or out.endswith(":") else None)
        if reason:
            result.discarded[reason] += 1
        else:
            valid.append((inp, out))
    outputs: dict[str, set[str]] = {}
    for inp, out in valid:
        if inp:
            outputs.setdefault(inp, set()).add(out)
    if any(len(v) > 1 for v in outputs.values()):
        result.discarded["same_input_different_output"] += len(valid)
        return result
    unique = list(dict.fromkeys(valid))
    result.discarded["duplicate"] += len(valid) - len(unique)
    result.discarded["beyond_max"] += max(0, len(unique) - MAX_INSTANCES)
    result.instances = unique[:MAX_INSTANCES]
    return result


def majority_share(labels: Sequence[str]) -> float:
    """The share of a classification task's instances that carry its most common label (case-insensitive):
    1.0 when all share one label, 1/k when k labels are equally frequent; ``nan`` for no instance. Output-first
    generation exists to bring this down (upstream: "so the labels stay balanced")."""
    if not labels:
        return float("nan")
    counts = Counter(label.strip().lower() for label in labels)
    return max(counts.values()) / len(labels)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(":")

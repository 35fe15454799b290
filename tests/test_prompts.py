"""The generation prompt and Alpaca's parsing and filters of a response."""
from __future__ import annotations

import re

import pytest

from alpaca_nb import data
from alpaca_nb.prompts import DISCARD_REASONS, PROMPT_HEADER, encode_prompt, filter_reason, parse_response


def response(*items: tuple[str, str, str], start: int = 4) -> str:
    """What a completion model writes after the prompt's final ``4. Instruction:``."""
    parts = []
    for n, (instruction, inp, output) in enumerate(items, start=start):
        head = f" {instruction}" if n == start else f"{n}. Instruction: {instruction}"
        parts.append(f"{head}\n{n}. Input:\n{inp}\n{n}. Output:\n{output}\n")
    return "###\n".join(parts)


def test_prompt_numbers_its_requirements_1_to_9_and_continues_the_seed_list(mirror):
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", PROMPT_HEADER, flags=re.M)]
    assert numbers == list(range(1, 10))     # the original reads 1 2 3 2 3 4 5 6 7
    seeds = [e.to_alpaca() for e in data.load_seed_tasks()[:3]]
    seeds[0] = {**seeds[0], "instruction": "  Answer   this:\n", "input": ""}
    prompt = encode_prompt(seeds)
    assert prompt.startswith(PROMPT_HEADER) and "List of 20 tasks:" in prompt
    assert prompt.count("###\n") == 4 and prompt.endswith("###\n4. Instruction:")
    assert "1. Instruction: Answer this\n1. Input:\n<noinput>\n" in prompt
    assert f"2. Instruction: {seeds[1]['instruction']}" in prompt
    assert f"3. Output:\n{seeds[2]['output']}\n" in prompt


# tatsu-lab/stanford_alpaca @ f13496211289def0ff88ae673389ae14a818b4b3, prompt.txt: its requirements in order
# (with the number it gives each) and the content our counterpart must carry.
ALPACA_REQUIREMENTS = [
    (1, ["not to repeat the verb", "maximize diversity"]),
    (2, ["language", "diverse", "questions", "imperative instructions"]),
    (3, ["types", "diverse", "open-ended generation", "classification", "editing"]),
    (2, ["GPT language model", "complete the instruction", "visual or audio output", "wake you up at 5pm",
         "set a reminder", "cannot"]),
    (3, ["in English"]),
    (4, ["1 to 2 sentences long", "Either an imperative sentence or a question is permitted"]),
    (5, ["appropriate input", "specific example", "realistic data", "simple placeholders", "challenging",
         "100 words"]),
    (6, ["Not", "input", "general", '"what is the highest peak in the world"', "specific context",
         '"<noinput>" in the input field']),
    (7, ["output", "appropriate response to the instruction and the input", "less than 100 words"]),
]
ALPACA_TASK_TYPES = ("open-ended generation", "classification", "editing")
# Task types other instruction-generation prompts name and prompt.txt does not: naming them shifts the task mix.
OTHER_TASK_TYPES = ("rewriting", "question answering", "brainstorming", "reasoning", "summarization",
                    "translation", "extraction", "coding", "programming", "math", "role-play", "chat", "dialogue",
                    "creative writing", "closed qa", "open qa")


def test_prompt_has_alpacas_content_requirement_by_requirement():
    assert PROMPT_HEADER.startswith(
        "You are asked to come up with a set of 20 diverse task instructions. These task instructions will be "
        "given to a GPT model and we will evaluate the GPT model for completing the instructions.\n\n"
        "Here are the requirements:\n1. ")
    assert PROMPT_HEADER.endswith(".\n\nList of 20 tasks:\n")
    body = PROMPT_HEADER.split("Here are the requirements:\n")[1].split("\n\nList of")[0]
    ours = re.split(r"^\d+\. ", body, flags=re.M)[1:]
    assert len(ours) == len(ALPACA_REQUIREMENTS)
    for i, (text, (upstream_number, content)) in enumerate(zip(ours, ALPACA_REQUIREMENTS), start=1):
        missing = [c for c in content if c.lower() not in text.lower()]
        assert not missing, f"our requirement {i} (prompt.txt's {upstream_number}.) lacks {missing}"
    types = re.search(r"diverse: (.+?),? and so on\.", ours[2]).group(1)
    assert re.split(r",\s*|\s+and\s+", types) == list(ALPACA_TASK_TYPES)
    extra = [t for t in OTHER_TASK_TYPES if re.search(rf"\b{re.escape(t)}\b", PROMPT_HEADER, re.IGNORECASE)]
    assert not extra, f"the prompt names task types that prompt.txt does not: {extra}"


def test_parse_keeps_well_formed_tasks_and_maps_noinput():
    text = response(("Name three fruits that are red in color.", "<noinput>", "Apple, cherry, strawberry."),
                    ("Classify the sentiment of the review as positive or negative.", "The food was cold.",
                     "Negative"))
    parsed = parse_response(text, num_prompt_tasks=3, finish_reason="stop")
    assert parsed.tasks == [
        {"instruction": "Name three fruits that are red in color.", "input": "", "output": "Apple, cherry, strawberry."},
        {"instruction": "Classify the sentiment of the review as positive or negative.", "input": "The food was cold.",
         "output": "Negative"}]
    assert sum(parsed.discarded.values()) == 0


def test_chat_reply_that_restates_the_number_parses_the_same():
    text = "4. Instruction: Suggest a name for a small bakery in Lisbon.\n4. Input:\n<noinput>\n4. Output:\nPão Doce"
    parsed = parse_response(text, 3, "stop")
    assert parsed.tasks == [{"instruction": "Suggest a name for a small bakery in Lisbon.", "input": "",
                             "output": "Pão Doce"}]


def test_truncated_last_item_is_dropped_only_when_stopped_on_length():
    text = response(("List the planets of the solar system in order.", "<noinput>", "Mercury, Venus, Earth."),
                    ("Summarize the following paragraph in one sentence.", "The", "Th"))
    cut = parse_response(text, 3, "length")
    assert [t["instruction"] for t in cut.tasks] == ["List the planets of the solar system in order."]
    assert cut.discarded == {"truncated": 1}
    assert len(parse_response(text, 3, "stop").tasks) == 2


def test_malformed_items_are_counted():
    text = (" Tell me a joke about cats and dogs.\n4. Output:\nNo input field here.\n###\n"
            "5. Input:\nx\n5. Instruction: Fields in the wrong order here.\n5. Output:\ny\n###\n"
            "just some text without any fields")
    parsed = parse_response(text, 3, "stop")
    assert parsed.tasks == [] and parsed.discarded == {"malformed": 3}
    assert parse_response("", 3, "stop").discarded == {"malformed": 1}


@pytest.mark.parametrize("instruction, reason", [
    ("Write a poem.", "too_short"),                                     # 3 words
    ("Write a short poem.", None),                                      # 4 words: kept
    (" ".join(["word"] * 150), None),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the image in one sentence.", "blocked_word"),
    ("Describe these IMAGES in one sentence.", "blocked_word"),         # plural, any case
    ("Plot the data as a bar chart.", "blocked_word"),
    ("How do I go to the airport from here?", "blocked_word"),          # two-word phrase
    ("Explain the mapping between keys and values.", None),             # whole words only
    ("Write a program that prints the first ten primes.", "write_a_program"),
    ('"Translate this sentence into French."', "starts_with_punctuation"),
    ("Étudiez la phrase suivante et corrigez-la.", "starts_non_ascii"),
])
def test_instruction_filters(instruction, reason):
    assert filter_reason(instruction) == reason
    parsed = parse_response(response((instruction, "<noinput>", "ok")), 3, "stop")
    assert (parsed.discarded == {reason: 1}) if reason else (len(parsed.tasks) == 1)
    assert reason is None or reason in DISCARD_REASONS


def test_discard_examples_keep_at_most_three_per_reason():
    items = [(f"Draw picture number {i} of a cat.", "<noinput>", "ok") for i in range(5)]
    parsed = parse_response(response(*items), 3, "stop")
    assert parsed.discarded == {"blocked_word": 5}
    assert parsed.examples["blocked_word"] == [f"Draw picture number {i} of a cat." for i in range(3)]

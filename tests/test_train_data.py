"""Lesson 04's training set: teacher demonstrations outside the held-out tasks, lesson 02's tasks, the seeds."""
from __future__ import annotations

import json

import pytest

from alpaca_nb import train_data
from alpaca_nb.data import Example, load_user_oriented_tasks
from alpaca_nb.errors import AlpacaNbError


def test_teacher_demonstrations_are_the_553_outside_selfinstruct():
    davinci = train_data.teacher_demonstrations("text_davinci_003")
    gpt4 = train_data.teacher_demonstrations("gpt4_1106_preview")
    assert len(davinci) == len(gpt4) == 553
    assert {e.meta["dataset"] for e in davinci} == {"oasst", "koala", "helpful_base", "vicuna"}
    assert [e.instruction for e in davinci] == [e.instruction for e in gpt4]  # same instructions, other teacher
    assert davinci[0].output != gpt4[0].output
    with pytest.raises(AlpacaNbError, match="unknown teacher"):
        train_data.teacher_demonstrations("gpt-5")


def test_overlap_check_catches_a_planted_duplicate_and_a_paraphrase():
    task = load_user_oriented_tasks()[7]
    text = f"{task.instruction}\n\n{task.input}" if task.input else task.instruction
    clean = train_data.teacher_demonstrations()[:40]
    planted = clean + [Example(task.instruction, task.input, "x", "planted"),
                       Example(text + " Please.", "", "y", "paraphrase")]
    assert train_data.heldout_overlap(clean) == []
    hits = train_data.heldout_overlap(planted)
    assert [h["index"] for h in hits] == [40, 41]
    assert hits[0]["rouge_l"] == 1.0 and hits[0]["heldout"] == text
    assert 0.7 <= hits[1]["rouge_l"] < 1.0


def test_lesson_set_mixes_sources_drops_overlapping_generated_and_falls_back_to_seeds(tmp_path):
    task = load_user_oriented_tasks()[3]
    regen = tmp_path / "regen.json"
    regen.write_text(json.dumps([
        {"instruction": "Name three colours of the rainbow.", "input": "", "output": "Red, orange, yellow."},
        {"instruction": task.instruction, "input": task.input, "output": "copied from the eval set"}]))
    records, mix = train_data.lesson_training_set("text_davinci_003", regen)
    assert mix["sources"] == {"alpaca_eval:text_davinci_003": 553, "lesson_02": 1}
    assert mix["dropped_overlapping"] == 1 and mix["overlap"] == [] and len(records) == 554
    assert train_data.training_record(records[-1])["metadata"] == {"source": "lesson_02"}
    assert "0 overlap" in train_data.describe_mix(mix)

    records, mix = train_data.lesson_training_set(None, tmp_path / "missing.json")
    assert mix["sources"] == {"seed_tasks": 175} and len(records) == 175

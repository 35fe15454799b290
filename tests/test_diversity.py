"""Lesson 03: the verb/object rule on known sentences, counts and files on a small dataset, the parse
cache, figures, and clear errors — all with the real spaCy model and real files."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from alpaca_nb import diversity, diversity_parse
from alpaca_nb import diversity_plots as dp
from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError

SMALL = [  # instruction, input -> the pair Self-Instruct's rule gives
    ("Write a poem about the sea.", "", ("write", "poem")),
    ("Write a poem about autumn leaves.", "", ("write", "poem")),
    ("Write a short poem for a friend's birthday.", "", ("write", "poem")),
    ("Write a story about a lost cat.", "", ("write", "story")),
    ("Explain why the sky is blue.", "", ("explain", None)),
    ("Give three tips for staying healthy.", "The reader is 30 years old.", ("give", "tip")),
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Parse caches go to a per-test folder, so every test starts cold."""
    monkeypatch.setenv("ALPACA_NB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_file(tmp_path) -> Path:
    path = tmp_path / "small.json"
    path.write_text(json.dumps([{"instruction": i, "input": x, "output": "..."} for i, x, _ in SMALL]))
    return path


def test_known_sentences_parse_to_known_pairs():
    texts = ["Write a poem about the sea.", "Explain why the sky is blue.", "What is the capital of France?",
             "Generate a list of ten words. Then sort them alphabetically."]
    pairs = diversity_parse.parse_instructions(texts, cache=False, progress=False)
    assert pairs == [("write", "poem"), ("explain", None), (None, None), ("generate", "list")]
    table = diversity_parse.explain(texts[:2])
    assert table["root"].tolist() == ["Write (VERB)", "Explain (VERB)"]
    assert diversity_parse.first_sentence("  Sort these words. Then count them!  ") == "Sort these words."


def test_worker_processes_give_the_same_pairs():
    texts = [i for i, _, _ in SMALL] * 2
    one = diversity_parse.parse_instructions(texts, cache=False, n_process=1, progress=False)
    two = diversity_parse.parse_instructions(texts, cache=False, n_process=2, progress=False)
    assert one == two == [pair for _, _, pair in SMALL] * 2


def test_second_run_is_served_from_the_cache(isolated_cache):
    texts = [i for i, _, _ in SMALL] + [SMALL[0][0]]  # one repeat: parsed once, counted once
    first = diversity_parse.ParseCache.for_model(diversity_parse.spacy_model_name())
    assert first.path.parent == isolated_cache / "diversity"
    pairs = diversity_parse.parse_instructions(texts, cache=first, progress=False)
    assert (first.hits, first.misses) == (0, len(SMALL))

    rerun = diversity_parse.ParseCache(first.path)  # a fresh connection, as a new session would open
    assert diversity_parse.parse_instructions(texts, cache=rerun, progress=False) == pairs
    assert (rerun.hits, rerun.misses) == (len(SMALL), 0)


def test_unreadable_cache_is_a_clear_error(tmp_path):
    bad = tmp_path / "parses.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AlpacaNbError, match="parses.sqlite.*delete the file"):
        diversity_parse.ParseCache(bad)


def test_counts_summary_and_csv_on_a_small_file(small_file, tmp_path):
    out = tmp_path / "out"
    result = diversity.run([small_file], out_dir=out, progress=False)

    counts = pd.read_csv(out / "small" / "verb_noun_counts.csv")
    assert list(counts.columns) == ["verb", "noun", "count"]
    assert counts.values.tolist() == [["write", "poem", 3], ["give", "tip", 1], ["write", "story", 1]]

    summary = json.loads((out / "small" / "summary.json").read_text())
    assert summary == result["small"]
    verbs = {"write": 4, "explain": 1, "give": 1}
    entropy = -sum(c / 6 * math.log2(c / 6) for c in verbs.values())
    assert summary["instructions"] == 6
    assert summary["parsed_fraction"] == round(5 / 6, 4)
    assert (summary["unique_verbs"], summary["unique_verb_noun_pairs"]) == (3, 3)
    assert summary["verb_entropy"] == pytest.approx(entropy, abs=1e-3)
    assert summary["top_verbs"]["write"] == 4 and list(summary["top_verbs"])[0] == "write"
    assert summary["with_input_fraction"] == round(1 / 6, 4)
    rouge = summary["rouge_l_to_seeds"]
    assert 0 < rouge["mean"] < 1 and rouge["copies_of_seeds"] == 0


def test_figures_are_written_and_not_blank(small_file, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "out"
    result = diversity.run([small_file, "seed_tasks"], out_dir=out, progress=False)
    for folder in ("small", "seed_tasks"):
        for name in ("verb_noun_sunburst", "lengths", "rouge_to_seeds"):
            assert (out / folder / f"{name}.svg").read_text().count("<path") > 5
            pixels = mpimg.imread(out / folder / f"{name}.png")
            assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05
    assert sorted(Path(p).name for p in result["comparison"]) == ["comparison.csv", "comparison.png",
                                                                   "comparison.svg"]
    table = pd.read_csv(out / "comparison.csv")
    assert table["dataset"].tolist() == ["small", "seed_tasks"]
    assert table["instructions"].tolist() == [6, 175]
    # the seed set is scored leave-one-out: no seed counts its own copy as a 1.0 match
    assert result["seed_tasks"]["rouge_l_to_seeds"]["above_0.7"] < 10


def test_sunburst_picks_verbs_and_nouns_as_self_instruct_does():
    # (instruction, parse): "explain" mostly lacks an object; one "write" instruction is repeated four times
    rows = ([(f"Explain topic {i}.", ("explain", None)) for i in range(5)] + [("Explain a concept.", ("explain", "concept"))]
            + [("Write a story.", ("write", "story"))] * 4 + [(f"Write poem {i}.", ("write", "poem")) for i in range(2)]
            + [(f"Give tip {i}.", ("give", "tip")) for i in range(4)] + [("What is it?", (None, None))])
    texts, pairs = [t for t, _ in rows], [p for _, p in rows]
    # Counted over all parses, explain (6) and write (6, story 4) would lead; Self-Instruct first drops
    # repeats and parses without an object: give 4, write 3 (poem 2, story 1), explain 1.
    assert dp.sunburst_data(pairs, top_verbs=2, top_nouns=1, instructions=texts) == [
        ("give", [("tip", 4)]), ("write", [("poem", 2)])]
    assert dp.sunburst_data(pairs, instructions=texts) == [
        ("give", [("tip", 4)]), ("write", [("poem", 2), ("story", 1)]), ("explain", [("concept", 1)])]
    assert dp.sunburst_data(pairs, instructions=texts, min_count=3) == [("give", [("tip", 4)])]  # upstream: 31
    with pytest.raises(ValueError, match="one per pair"):
        dp.sunburst_data(pairs, instructions=texts[:-1])


def test_sunburst_figure_counts_each_instruction_once(tmp_path):
    # five objects of "write", one instruction repeated: counted once, "story" falls out of the top 4
    texts = ["Write a poem about the sea.", "Write an essay about climate change.", "Write a letter to your landlord.",
             "Write a song about summer."] + ["Write a story about a lost cat."] * 3
    path = tmp_path / "repeats.json"
    path.write_text(json.dumps([{"instruction": t, "input": "", "output": "..."} for t in texts]))
    diversity.run([path], out_dir=tmp_path / "out", progress=False)
    labels = re.findall(r"<!-- (\w+) -->", (tmp_path / "out" / "repeats" / "verb_noun_sunburst.svg").read_text())
    assert {"write", "essay", "letter", "poem", "song"} <= set(labels) and "story" not in labels


def test_dependency_tree_svg(tmp_path):
    from alpaca_nb.diversity_plots import dependency_svg

    svg = dependency_svg("Write a poem about the sea. It should rhyme.", tmp_path / "tree.svg")
    assert svg.lstrip().startswith("<svg") and "dobj" in svg and "rhyme" not in svg
    assert (tmp_path / "tree.svg").read_text() == svg


def test_cli_writes_reports_and_reports_bad_input(small_file, tmp_path, capsys):
    assert main(["diversity", str(small_file), "--out", str(tmp_path / "cli")]) == 0
    assert "small: 6 instructions, 83% verb+object" in capsys.readouterr().out
    assert (tmp_path / "cli" / "small" / "verb_noun_counts.csv").exists()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "Write a poem.", "output": "..."}, {"instruction": "Sing."}]))
    assert main(["diversity", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: record 1: missing or empty 'output'" in err
    assert not (tmp_path / "bad").exists()

    assert main(["diversity", "no_such_dataset"]) == 2
    assert "neither a file nor a dataset name" in capsys.readouterr().err


def test_lesson_datasets_fall_back_and_pick_up_later_stages(tmp_path, monkeypatch):
    from alpaca_nb.paths import outputs_dir

    assert diversity.lesson_datasets() == ["seed_tasks", "alpaca_eval"]  # lesson 02 has not run here
    generated = outputs_dir("02_generate_instructions") / "regen.json"
    generated.write_text("[]")  # lesson 02 started but kept nothing yet
    assert diversity.lesson_datasets()[0] == "seed_tasks"
    generated.write_text(json.dumps([{"instruction": "Write a haiku about rain.", "input": "", "output": "..."}]))
    monkeypatch.setenv("ALPACA_NB_SEEDS", str(tmp_path / "seeds"))
    released = tmp_path / "seeds" / "stanford_alpaca" / "alpaca_data.json"
    released.parent.mkdir(parents=True)
    released.write_text(json.dumps([{"instruction": "Name a fruit.", "input": "", "output": "Apple."}]))

    specs = diversity.lesson_datasets(compare="seed_tasks")
    assert specs == [str(generated), "seed_tasks", "alpaca_data"]
    assert [(name, len(examples)) for name, examples in map(diversity.load_dataset, specs[::2])] == [
        ("regen", 1), ("alpaca_data", 1)]

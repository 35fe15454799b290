"""Loaders return typed records with the counts upstream documents."""
import json
import os
import re

import pytest

from alpaca_nb import data
from alpaca_nb.errors import AlpacaNbError


def test_seed_tasks_match_upstream_counts():
    seeds = data.load_seed_tasks()
    assert len(seeds) == 175
    assert sum(bool(e.input) for e in seeds) == 125
    assert sum(bool(e.meta["is_classification"]) for e in seeds) == 26
    assert seeds[0].id == "seed_task_0" and seeds[0].source == "seed_tasks"
    assert set(seeds[0].to_alpaca()) == {"instruction", "input", "output"}


def test_evaluation_sets():
    tasks, davinci = data.load_user_oriented_tasks(), data.load_davinci_user_oriented()
    assert len(tasks) == len(davinci) == 252
    assert davinci[0].meta["generator"] == "text-davinci-003"
    assert tasks[0].instruction.strip() == davinci[0].instruction.strip()
    for generator in data.ALPACA_EVAL_GENERATORS:
        outputs = data.load_alpaca_eval(generator)
        assert len(outputs) == 805 and all(e.output for e in outputs[:50])
    assert data.load_alpaca_eval("alpaca-7b")[0].meta["generator"] == "alpaca-7b"
    with pytest.raises(AlpacaNbError, match="unknown AlpacaEval generator 'gpt5'"):
        data.load_alpaca_eval("gpt5")


def test_alpaca_records_accepts_json_and_jsonl_and_names_bad_records(tmp_path):
    rows = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            {"instruction": "Translate to French.", "input": "cat", "output": "chat", "source": "mine"}]
    as_json, as_jsonl = tmp_path / "a.json", tmp_path / "a.jsonl"
    as_json.write_text(json.dumps(rows))
    as_jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    for path in (as_json, as_jsonl):
        records = data.load_alpaca_records(path)
        assert [r.output for r in records] == ["5", "chat"] and records[1].meta == {"source": "mine"}
    as_json.write_text(json.dumps(rows + [{"instruction": "No answer"}]))
    with pytest.raises(AlpacaNbError, match=r"a.json: record 2: missing or empty 'output'"):
        data.load_alpaca_records(as_json)
    as_json.write_text("")
    with pytest.raises(AlpacaNbError, match="no records"):
        data.load_alpaca_records(as_json)


def test_optional_records_are_empty_when_an_earlier_lesson_kept_nothing(tmp_path):
    path = tmp_path / "regen.json"
    assert data.load_optional_records(path) == []
    path.write_text("[]")
    assert data.load_optional_records(path) == []
    path.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue"}]))
    assert [e.output for e in data.load_optional_records(path)] == ["Blue"]
    path.write_text("[{")
    with pytest.raises(AlpacaNbError, match="regen.json: line 1"):
        data.load_optional_records(path)


@pytest.fixture
def local_seeds(mirror, tmp_path, monkeypatch):
    """An isolated seeds/ folder (and verification cache) holding a verified copy of the seed tasks."""
    monkeypatch.setenv("ALPACA_NB_SEEDS", str(tmp_path / "seeds"))
    monkeypatch.setenv("ALPACA_NB_CACHE", str(tmp_path / "cache"))
    return data.fetch(["seed_tasks"], mirror=mirror, dest=tmp_path / "seeds")[0]


def test_seed_file_cut_at_a_line_boundary_is_fetched_again_from_the_mirror(local_seeds, capsys):
    good = local_seeds.read_bytes()
    local_seeds.write_bytes(b"".join(good.splitlines(keepends=True)[:100]))  # parses fine: 100 tasks
    assert len(data.load_seed_tasks()) == 175
    assert local_seeds.read_bytes() == good
    assert "sha256 differs from seeds/manifest.json; fetching seed_tasks again" in capsys.readouterr().err


def test_seed_file_cut_without_a_mirror_is_an_error_naming_the_file(local_seeds, monkeypatch):
    monkeypatch.delenv("ALPACA_NB_MIRROR")
    cut = b"".join(local_seeds.read_bytes().splitlines(keepends=True)[:100])
    local_seeds.write_bytes(cut)
    with pytest.raises(data.FetchError, match=rf"{re.escape(str(local_seeds))}: sha256 differs .* run `alpaca-nb fetch seed_tasks`"):
        data.load_seed_tasks()
    assert local_seeds.read_bytes() == cut


def test_verified_files_are_not_hashed_again_until_they_change(local_seeds, monkeypatch):
    assert len(data.load_seed_tasks()) == 175  # hashes once and remembers it

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(data, "sha256_of", no_hashing)
    assert len(data.load_seed_tasks()) == 175
    os.utime(local_seeds, ns=(0, 0))  # same bytes, new mtime: checked again
    with pytest.raises(AssertionError, match="hashed again"):
        data.load_seed_tasks()

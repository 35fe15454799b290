"""`alpaca-nb fetch`: verified copies from a mirror, and clear errors that never lose a good file."""
import json
import shutil

import pytest

from alpaca_nb import data
from alpaca_nb.cli import main
from alpaca_nb.errors import AlpacaNbError


def _mirror_copy(mirror, tmp_path):
    """A writable copy of the real mirror, to corrupt."""
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    for p in copy.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return copy


def test_fetch_from_mirror_verifies_and_is_idempotent(mirror, tmp_path):
    dest = tmp_path / "seeds"
    paths = data.fetch(mirror=mirror, dest=dest)
    names = [e.name for e in data.load_manifest() if not e.online_only]
    assert len(paths) == len(names) == 12
    for entry, path in zip([data.manifest_entry(n) for n in names], paths):
        assert data.sha256_of(path) == entry.sha256
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert data.fetch(mirror=mirror, dest=dest) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # a good file is not copied again


def test_corrupted_mirror_copy_is_rejected_and_local_file_left_as_is(mirror, tmp_path):
    bad_mirror = _mirror_copy(mirror, tmp_path)
    dest = tmp_path / "seeds"
    good = data.fetch(["seed_tasks"], mirror=mirror, dest=dest)[0]
    good_bytes = good.read_bytes()
    target = bad_mirror / "self-instruct/seed_tasks.jsonl"
    target.write_bytes(target.read_bytes().replace(b"breakfast", b"dinner"))
    good.write_bytes(good_bytes + b"\n")  # the local copy is now stale, so fetch must try the mirror
    with pytest.raises(data.FetchError, match=r"seed_tasks: sha256 of .* the manifest expects 7779004f") as e:
        data.fetch(["seed_tasks"], mirror=bad_mirror, dest=dest)
    assert "both copies are bad" in str(e.value) and "kept" not in str(e.value)  # the local copy is not good
    assert f"replace {target}" in str(e.value) and "\n" not in str(e.value)
    assert good.read_bytes() == good_bytes + b"\n"  # nothing already there was replaced
    assert not list(good.parent.glob(".*.part"))  # no temporary file left behind


def test_truncated_and_missing_files(mirror, tmp_path):
    bad_mirror = _mirror_copy(mirror, tmp_path)
    target = bad_mirror / "alpaca_eval/alpaca-7b.json"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(data.FetchError, match="corrupt, truncated"):
        data.fetch(["alpaca_eval_alpaca_7b"], mirror=bad_mirror, dest=tmp_path / "seeds")
    (bad_mirror / "self-instruct/user_oriented_instructions.jsonl").unlink()
    with pytest.raises(data.FetchError, match="missing from the mirror"):
        data.fetch(["user_oriented_instructions"], mirror=bad_mirror, dest=tmp_path / "seeds")
    with pytest.raises(data.FetchError, match="unknown data name 'nope'; valid names: seed_tasks"):
        data.fetch(["nope"], mirror=mirror, dest=tmp_path / "seeds")


def test_malformed_line_and_task_without_instances_name_file_and_line(tmp_path, mirror):
    lines = (mirror / "self-instruct/seed_tasks.jsonl").read_text().splitlines()
    broken = tmp_path / "seed_tasks.jsonl"
    broken.write_text("\n".join(lines[:4] + ['{"id": "x", "instruction": "Say hi", '] + lines[4:]) + "\n")
    with pytest.raises(AlpacaNbError, match=r"seed_tasks.jsonl: line 5: malformed JSON"):
        data.validate_file(broken, "seed_tasks")
    task = json.loads(lines[0]) | {"instances": []}
    broken.write_text("\n".join(lines[:2] + [json.dumps(task)]) + "\n")
    with pytest.raises(AlpacaNbError, match=r"line 3: task without instances"):
        data.load_seed_tasks(broken)


def test_fastchat_files_are_checked_record_by_record(tmp_path, mirror):
    """MT-bench, judge-prompt and ShareGPT files: a record missing a key names the file and line or index."""
    assert data.validate_file(mirror / "fastchat/mt_bench_question.jsonl", "mt_bench_questions") == 80
    assert data.validate_file(mirror / "fastchat/data_dummy_conversation.json", "sharegpt") == 500
    lines = (mirror / "fastchat/mt_bench_question.jsonl").read_text().splitlines()
    broken = tmp_path / "question.jsonl"
    broken.write_text("\n".join(lines[:2] + ['{"question_id": 999, "turns": ["hi"]}']) + "\n")
    with pytest.raises(AlpacaNbError, match=r"question.jsonl: line 3: needs 'category'"):
        data.validate_file(broken, "mt_bench_questions")
    conversations = json.loads((mirror / "fastchat/data_dummy_conversation.json").read_text())
    broken = tmp_path / "conversations.json"
    broken.write_text(json.dumps(conversations[:3] + [{"id": "x", "turns": []}]))
    with pytest.raises(AlpacaNbError, match=r"conversations.json: record 3: needs 'conversations'"):
        data.validate_file(broken, "sharegpt")


def test_unpinned_download_content_is_checked(tmp_path):
    """An online-only entry without sha256 is still validated before it replaces anything."""
    entry = data.manifest_entry("alpaca_data")
    fake_mirror = tmp_path / "m"
    (fake_mirror / "stanford_alpaca").mkdir(parents=True)
    (fake_mirror / entry.path).write_text('[{"instruction": "Say hi", "input": ""}]')
    with pytest.raises(data.FetchError, match=r"record 0: needs 'instruction' and 'output'"):
        data.fetch_entry(entry, mirror=fake_mirror, dest=tmp_path / "seeds")
    (fake_mirror / entry.path).write_text('[{"instruction": "Say hi", "input": "", "output": "Hi!"}]')
    path = data.fetch_entry(entry, mirror=fake_mirror, dest=tmp_path / "seeds")
    assert data.load_alpaca_records(path)[0].output == "Hi!"


def test_cli_reports_errors_in_one_line(mirror, tmp_path, capsys):
    assert main(["fetch", "--mirror", str(tmp_path / "nowhere"), "--dest", str(tmp_path), "seed_tasks"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alpaca-nb fetch: error: seed_tasks:") and "missing from the mirror" in err
    assert main(["fetch", "--mirror", str(mirror), "--dest", str(tmp_path), "seed_tasks"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "self-instruct/seed_tasks.jsonl")

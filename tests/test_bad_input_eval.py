"""Bad input to the lesson 04/05 commands: each case runs the real CLI (against the OpenAI stub where a server is
needed) and must exit 2 with one line naming the input, no traceback, and every file already there untouched."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from alpaca_nb.cli import main
from alpaca_nb.fileio import atomic_write_json
from alpaca_nb.human_eval import export_sheet
from tests.openai_stub import OpenAIStub, Reply


@dataclass
class Ctx:
    """What a case's setup and arguments see: a scratch folder and the stub server's URL."""

    tmp: Path
    url: str

    def __truediv__(self, name: str) -> Path:
        return self.tmp / name


def _outputs(generator: str, n: int = 3, tag: str = "answer") -> list[dict]:
    return [{"instruction": f"task {i}", "output": f"{tag} {i}", "generator": generator, "dataset": "test"}
            for i in range(n)]


def _model_and_reference(c: Ctx) -> None:
    atomic_write_json(c / "model_outputs.json", _outputs("model-b"))
    atomic_write_json(c / "reference.json", _outputs("ref", tag="reference"))


def _stub_args(c: Ctx) -> list[str]:
    return ["--backend", "url", "--base-url", c.url]


def _quiet_main(argv: list[str], capsys) -> None:
    """Run a setup command that must succeed, and drop what it printed."""
    assert main(argv) == 0
    capsys.readouterr()


def _judged_model_a(c: Ctx, capsys) -> None:
    _model_and_reference(c)
    atomic_write_json(c / "a_outputs.json", _outputs("model-a"))
    _quiet_main(["judge", "--model-outputs", str(c / "a_outputs.json"), "--reference", str(c / "reference.json"),
                 *_stub_args(c), "--judge-model", "judge", "--out", str(c / "annotations.json")], capsys)


def _sheet(c: Ctx, capsys) -> None:
    _model_and_reference(c)
    _quiet_main(["human-sheet", "--model-outputs", str(c / "model_outputs.json"), "--reference",
                 str(c / "reference.json"), "--out", str(c / "sheet.csv")], capsys)


def _rewrite_sheet(c: Ctx, edit: Callable[[list[dict]], list[dict]]) -> None:
    with open(c / "sheet.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = edit([r | {"label": "A"} for r in rows])
    with open(c / "sheet.csv", "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _first_model_answered(c: Ctx, capsys) -> None:
    """The default model_outputs file already holds 2 answers of generator 'model' (a first trained model)."""
    _quiet_main(["answer", *_stub_args(c), "--model", "first/model", "--eval-set", "alpaca_eval", "-n", "2",
                 "--out", str(c / "answers.json")], capsys)


def _finished_run(c: Ctx) -> None:
    (c / "data.json").write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 2))
    (c / "run" / "model").mkdir(parents=True)
    (c / "run" / "model" / "config.json").write_text("{}")
    atomic_write_json(c / "run" / "train_summary.json", {"steps": 42})
    atomic_write_json(c / "run" / "resolved_config.json", {"learning_rate": 5e-5})


def _filled_sheet(c: Ctx, capsys) -> None:
    """sheet.csv with 3 labels, and its key sheet.key.json."""
    _sheet(c, capsys)
    _rewrite_sheet(c, lambda rows: rows)


def _blank_sheet(c: Ctx, capsys, name: str, n: int = 3) -> None:
    """Another blank sheet ``name`` of ``n`` items (and its own key) beside sheet.csv."""
    atomic_write_json(c / f"outputs_{n}.json", _outputs("model-b", n))
    _quiet_main(["human-sheet", "--model-outputs", str(c / f"outputs_{n}.json"), "--reference",
                 str(c / "reference.json"), "--out", str(c / name), "--seed", "1"], capsys)


def _human_sheet(c: Ctx, out: str, key: str | None = None) -> list[str]:
    return ["human-sheet", "--model-outputs", str(c / "model_outputs.json"), "--reference", str(c / "reference.json"),
            "--out", str(c / out), *(["--key", str(c / key)] if key else [])]


def _first_eval_item() -> str:
    from alpaca_nb.answers import load_eval_set

    return load_eval_set("alpaca_eval", n=1, seed=0)[0].id


def _earlier_answers(c: Ctx) -> None:
    atomic_write_json(c / "answers.json", _outputs("earlier-model"))


HTML = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>proxy login</body></html>\n"
BAD_REPLIES = {  # name: (the server's reply, what the message must say)
    "choices []": (Reply(fields={"choices": []}), "'choices' is []"),
    "choices null": (Reply(fields={"choices": None}), "'choices' is null"),
    "an HTML page": (Reply(raw=HTML, content_type="text/html"), "not a completion: '<!DOCTYPE html>"),
}


def _good_server(body: dict) -> Reply:
    return Reply(text="Output (a)")


@dataclass
class Case:
    """One bad input: ``setup(ctx, capsys)`` writes what is already there, ``argv(ctx)`` is the command, and
    the error line must contain ``names(ctx)``; ``server(body)`` is the stub server's reply to every request."""

    id: str
    setup: Callable[[Ctx, object], None]
    argv: Callable[[Ctx], list[str]]
    names: Callable[[Ctx], str]
    server: Callable[[dict], Reply] = _good_server


CASES = [
    Case("winrate --rouge-l without output_1",
         lambda c, _: atomic_write_json(c / "ann.json", [{"instruction": "t", "output_2": "x", "preference": 2}]),
         lambda c: ["winrate", "--annotations", str(c / "ann.json"), "--rouge-l"],
         lambda c: f"{c / 'ann.json'}: annotation 0"),
    Case("human-score: key is not a JSON object",
         lambda c, capsys: (_sheet(c, capsys), (c / "sheet.key.json").write_text('["A", "B"]')),
         lambda c: ["human-score", "--sheet", str(c / "sheet.csv")],
         lambda c: str(c / "sheet.key.json")),
    Case("human-score: an item's row twice",
         lambda c, capsys: (_sheet(c, capsys), _rewrite_sheet(c, lambda rows: rows + rows[:1])),
         lambda c: ["human-score", "--sheet", str(c / "sheet.csv")],
         lambda c: f"{c / 'sheet.csv'}: row 5: item 1 appears again"),
    Case("human-score: an item's row missing",
         lambda c, capsys: (_sheet(c, capsys), _rewrite_sheet(c, lambda rows: rows[:1] + rows[2:])),
         lambda c: ["human-score", "--sheet", str(c / "sheet.csv")],
         lambda c: f"{c / 'sheet.csv'}: item(s) 2 of the key"),
    Case("human-score --judge-annotations of another model",
         lambda c, capsys: (_judged_model_a(c, capsys), _filled_sheet(c, capsys)),
         lambda c: ["human-score", "--sheet", str(c / "sheet.csv"), "--judge-annotations", str(c / "annotations.json")],
         lambda c: f"{c / 'annotations.json'} holds annotations of model 'model-a', but the sheet {c / 'sheet.csv'}"),
    Case("human-score --judge-annotations of other items",
         lambda c, capsys: (_filled_sheet(c, capsys), atomic_write_json(c / "two.json", _outputs("model-b", 2)),
                            _quiet_main(["judge", "--model-outputs", str(c / "two.json"), "--reference",
                                         str(c / "reference.json"), *_stub_args(c), "--judge-model", "judge",
                                         "--out", str(c / "annotations.json")], capsys)),
         lambda c: ["human-score", "--sheet", str(c / "sheet.csv"), "--judge-annotations", str(c / "annotations.json")],
         lambda c: f"{c / 'annotations.json'} does not judge 1 of the 3 items of {c / 'sheet.csv'}"),
    Case("human-sheet onto a sheet that has labels",
         lambda c, capsys: (_sheet(c, capsys), _rewrite_sheet(c, lambda rows: rows)),
         lambda c: ["human-sheet", "--model-outputs", str(c / "model_outputs.json"), "--reference",
                    str(c / "reference.json"), "--out", str(c / "sheet.csv")],
         lambda c: f"{c / 'sheet.csv'} has 3 label(s)"),
    Case("human-sheet onto a file that is not a sheet",
         lambda c, _: (_model_and_reference(c), (c / "notes.csv").write_text("name,score\nx,1\n")),
         lambda c: ["human-sheet", "--model-outputs", str(c / "model_outputs.json"), "--reference",
                    str(c / "reference.json"), "--out", str(c / "notes.csv"), "--seed", "1"],
         lambda c: f"{c / 'notes.csv'} is not a blind sheet"),
    Case("human-sheet --out new.csv --key of a filled sheet",
         _filled_sheet,
         lambda c: _human_sheet(c, "new.csv", key="sheet.key.json"),
         lambda c: f"{c / 'sheet.key.json'} already holds a key and its sheet {c / 'new.csv'} does not exist"),
    Case("human-sheet onto a deleted sheet whose key is still there",
         lambda c, capsys: (_filled_sheet(c, capsys), (c / "sheet.csv").unlink()),
         lambda c: _human_sheet(c, "sheet.csv"),
         lambda c: f"{c / 'sheet.key.json'} already holds a key and its sheet {c / 'sheet.csv'} does not exist"),
    Case("human-sheet onto a blank sheet with the key of a sheet of other items",
         lambda c, capsys: (_sheet(c, capsys), _blank_sheet(c, capsys, "small.csv", n=2)),
         lambda c: _human_sheet(c, "small.csv", key="sheet.key.json"),
         lambda c: f"{c / 'sheet.key.json'} does not match the sheet {c / 'small.csv'} (other items)"),
    Case("human-sheet onto a blank sheet with the key of a filled sheet of the same items",
         lambda c, capsys: (_filled_sheet(c, capsys), _blank_sheet(c, capsys, "other.csv")),
         lambda c: _human_sheet(c, "other.csv", key="sheet.key.json"),
         lambda c: f"{c / 'sheet.key.json'} is the key of {c / 'sheet.csv'}, which has 3 label(s)"),
    Case("human-sheet with a --key that is not a key",
         lambda c, _: (_model_and_reference(c), atomic_write_json(c / "notes.json", {"todo": "rate"})),
         lambda c: _human_sheet(c, "new.csv", key="notes.json"),
         lambda c: f"{c / 'notes.json'} is not a sheet key"),
    *[Case(f"answer: the server sends {name}",
           lambda c, _: _earlier_answers(c),
           lambda c: ["answer", *_stub_args(c), "--model", "m", "--eval-set", "alpaca_eval", "-n", "1",
                      "--out", str(c / "answers.json")],
           lambda c, says=says: f"{c.url}: item {_first_eval_item()!r}: no usable reply ({says}",
           lambda body, reply=reply: reply)
      for name, (reply, says) in BAD_REPLIES.items()],
    *[Case(f"judge: the server sends {name}",
           lambda c, _: _model_and_reference(c),
           lambda c: ["judge", "--model-outputs", str(c / "model_outputs.json"), "--reference",
                      str(c / "reference.json"), *_stub_args(c), "--judge-model", "judge", "--order", "fixed",
                      "--out", str(c / "annotations.json")],
           lambda c, says=says: f"{c.url}: judge request for instruction 'task 0': no usable reply ({says}",
           lambda body, reply=reply: reply)
      for name, (reply, says) in BAD_REPLIES.items()],
    Case("answer on an empty model folder (named like the first model)",
         lambda c, capsys: (_first_model_answered(c, capsys), (c / "second" / "model").mkdir(parents=True)),
         lambda c: ["answer", "--model", str(c / "second" / "model"), "--eval-set", "alpaca_eval", "-n", "2",
                    "--out", str(c / "answers.json")],
         lambda c: f"{c / 'second' / 'model'} is not a model folder"),
    Case("answer: a second model with the first one's generator name",
         _first_model_answered,
         lambda c: ["answer", *_stub_args(c), "--model", "second/model", "--eval-set", "alpaca_eval", "-n", "2",
                    "--out", str(c / "answers.json")],
         lambda c: f"{c / 'answers.json'} already holds answers of generator 'model' from model first/model"),
    Case("judge an empty model-outputs list",
         lambda c, _: (_model_and_reference(c), (c / "empty.json").write_text("[]")),
         lambda c: ["judge", "--model-outputs", str(c / "empty.json"), "--reference", str(c / "reference.json"),
                    *_stub_args(c), "--judge-model", "judge", "--out", str(c / "annotations.json")],
         lambda c: f"{c / 'empty.json'}: no model outputs"),
    Case("judge a second model into the first one's annotations",
         _judged_model_a,
         lambda c: ["judge", "--model-outputs", str(c / "model_outputs.json"), "--reference", str(c / "reference.json"),
                    *_stub_args(c), "--judge-model", "judge", "--out", str(c / "annotations.json")],
         lambda c: f"{c / 'annotations.json'} holds annotations of model 'model-a'"),
    Case("judge --backend local with a missing model folder",
         lambda c, _: _model_and_reference(c),
         lambda c: ["judge", "--model-outputs", str(c / "model_outputs.json"), "--reference", str(c / "reference.json"),
                    "--backend", "local", "--judge-model", str(c / "no-such-model")],
         lambda c: f"model folder {c / 'no-such-model'} does not exist"),
    Case("answer --backend local with a missing model folder",
         lambda c, _: None,
         lambda c: ["answer", "--backend", "local", "--model", str(c / "no-such-model"), "-n", "1"],
         lambda c: f"model folder {c / 'no-such-model'} does not exist"),
    Case("train into a folder with a finished run",
         lambda c, _: _finished_run(c),
         lambda c: ["train", "--data", str(c / "data.json"), "--output-dir", str(c / "run"), "--max-steps", "1",
                    "--max-length", "32"],
         lambda c: f"{c / 'run'} holds a finished run"),
]


def _snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_keeps_files(case, tmp_path, isolated_outputs, capsys):
    with OpenAIStub(default=case.server, model="stub") as stub:
        ctx = Ctx(tmp_path, stub.base_url)
        case.setup(ctx, capsys)
        capsys.readouterr()
        before = _snapshot(tmp_path, isolated_outputs)
        code = main(case.argv(ctx))
    err = capsys.readouterr().err
    assert code == 2, err
    command = case.argv(ctx)[0]
    lines = err.splitlines()  # a progress bar may come first (its own lines, on stderr)
    errors = [line for line in lines if line.startswith(f"alpaca-nb {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and err.endswith(errors[0] + "\n"), err
    assert case.names(ctx) in errors[0]
    assert "Traceback" not in err
    assert {p: b for p, b in _snapshot(tmp_path, isolated_outputs).items() if p in before} == before

"""Lesson 05, step 4: a blind pairwise study for people, as Alpaca's authors ran against text-davinci-003.

:func:`export_sheet` writes a CSV that raters fill in: one row per instruction with two answers labelled
``A`` and ``B`` (which model is ``A`` is drawn per item from ``seed``) and an empty ``label`` column for
``A``, ``B`` or ``tie``. The key (which model is ``A``) goes to a separate JSON file that raters never
see. :func:`score_sheet` reads a filled sheet with its key and counts wins, ties and losses; blank labels
are items not judged yet. The CSV is UTF-8 with a byte-order mark so spreadsheet programs open it right; cells
a spreadsheet would run as formulas are written as text (:mod:`alpaca_nb.sheet_csv`), and a sheet saved back
in Windows' cp1252 reads too.
Exporting again never replaces a sheet that has labels, nor a key file that belongs to another sheet (or to
none), unless forced; :func:`fresh_sheet_path` finds a name beside a filled sheet where a new one can go.
:func:`scripted_rater` fills a copy of a sheet by a stated rule (longer answer wins, or a seeded coin), marked as
scripted on every row, for demos; :mod:`alpaca_nb.agreement` compares a filled sheet with the judge's verdicts.
"""
from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any, Sequence

from .errors import AlpacaNbError
from .fileio import atomic_write_json, atomic_write_text, read_json
from .judge import pair_outputs
from .sheet_csv import cell_text, read_sheet_text, safe_cell
from .winrate import leaderboard

SHEET_COLUMNS = ("item", "instruction", "output_A", "output_B", "label")
LABELS = {"a": "A", "b": "B", "tie": "tie"}
VERDICTS = ("model_wins", "tie", "reference_wins")  # a rater's label, un-blinded, from the model's side
PREFERENCES = {"reference_wins": 1.0, "tie": 1.5, "model_wins": 2.0}  # as AlpacaEval's preference (output_2 = model)


def key_path_for(sheet_path: str | Path) -> Path:
    """The default key file next to a sheet: ``sheet.csv`` → ``sheet.key.json``."""
    sheet_path = Path(sheet_path)
    return sheet_path.with_name(sheet_path.stem + ".key.json")


def _sheet_state(sheet_path: Path) -> tuple[int, set[str]] | None:
    """How many rows of an existing sheet have a label, and its items (``None``: the file is not a sheet)."""
    with sheet_path.open(encoding="utf-8-sig", newline="", errors="replace") as f:
        reader = csv.DictReader(f)
        if "label" not in (reader.fieldnames or []):
            return None
        rows = list(reader)
    labelled = sum(bool((row.get("label") or "").strip()) for row in rows)
    return labelled, {(row.get("item") or "").strip() for row in rows}


def _overwrite_problem(sheet_path: Path, key_path: Path) -> str | None:
    """Why writing a sheet to ``sheet_path`` and its key to ``key_path`` would lose something, else ``None``.

    A sheet may be replaced only when it is blank; a key only when it is the key of that blank sheet (the
    same items) and the sheet named after the key, if another, has no labels."""
    sheet = _sheet_state(sheet_path) if sheet_path.exists() else None
    if sheet_path.exists() and (sheet is None or sheet[0]):
        found = "is not a blind sheet (no label column)" if sheet is None else f"has {sheet[0]} label(s)"
        return f"{sheet_path} {found}; exporting again would lose them"
    if not key_path.exists():
        return None
    try:
        key_items = set(read_key(key_path)["items"])
    except AlpacaNbError:
        return f"{key_path} is not a sheet key; exporting would overwrite it"
    if sheet is None:
        return (f"{key_path} already holds a key and its sheet {sheet_path} does not exist (deleted, or a new one); "
                "exporting would overwrite the key")
    if key_items != sheet[1]:
        return f"{key_path} does not match the sheet {sheet_path} (other items); exporting would overwrite it"
    own_sheet = key_path.with_name(key_path.name.removesuffix(".key.json") + ".csv")
    labelled = _sheet_state(own_sheet) if own_sheet != sheet_path and own_sheet.exists() else None
    if labelled and labelled[0]:
        return f"{key_path} is the key of {own_sheet}, which has {labelled[0]} label(s); exporting would lose it"
    return None


def fresh_sheet_path(path: str | Path) -> Path:
    """Where :func:`export_sheet` can write a sheet (with its default key) without ``force``: ``path`` when it does
    not exist or is a blank sheet with its own key, else the first such ``<stem>_2.csv``, ``<stem>_3.csv``, ...
    beside it (a blank one left by an earlier export is reused). For a new sheet beside a filled one."""
    path = Path(path)
    candidate, n = path, 1
    while _overwrite_problem(candidate, key_path_for(candidate)):
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def export_sheet(model_outputs: Sequence[dict], reference_outputs: Sequence[dict], sheet_path: str | Path,
                 key_path: str | Path | None = None, seed: int = 0, force: bool = False) -> tuple[Path, Path]:
    """Write the blind sheet (CSV) and its key (JSON) for model vs reference, joined by instruction.

    Returns ``(sheet_path, key_path)``; the key defaults to :func:`key_path_for` the sheet. Unless ``force``,
    refuses (:class:`AlpacaNbError`, nothing written: neither the sheet nor its key) when a file at
    ``sheet_path`` has labels or is not a sheet, or a file at ``key_path`` is not the key of that blank sheet
    (the sheet is missing or has other items, the key's own sheet has labels, it is no key); a blank sheet is
    replaced, with its key.
    """
    pairs = pair_outputs(model_outputs, reference_outputs)
    if not pairs:
        raise AlpacaNbError("no model outputs to put on the sheet")
    if pairs[0][0]["generator"] == pairs[0][1]["generator"]:
        raise AlpacaNbError(f"both sides are named {pairs[0][0]['generator']!r}; give the model's outputs "
                            "another generator name so the key can tell them apart")
    rng = random.Random(seed)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(SHEET_COLUMNS)
    key_items = {}
    for item, (ref, mod) in enumerate(pairs, start=1):
        a, b = (mod, ref) if rng.random() < 0.5 else (ref, mod)
        writer.writerow([item, *map(safe_cell, (mod["instruction"], a["output"], b["output"])), ""])
        key_items[str(item)] = {"A": a["generator"], "B": b["generator"]}
    sheet_path = Path(sheet_path)
    key_path = Path(key_path) if key_path else key_path_for(sheet_path)
    for path, what in ((sheet_path, "sheet"), (key_path, "key")):
        if path.is_dir():
            raise AlpacaNbError(f"{path} is a directory; give the {what} a file name, e.g. "
                                f"{path / ('human_sheet.csv' if what == 'sheet' else 'human_sheet.key.json')}")
    problem = None if force else _overwrite_problem(sheet_path, key_path)
    if problem:
        raise AlpacaNbError(f"{problem}: score a filled sheet with `alpaca-nb human-score`, write the new sheet "
                            "and key elsewhere (--out, --key), or pass --force")
    atomic_write_text(sheet_path, "\ufeff" + buf.getvalue())
    atomic_write_json(key_path, {"model": pairs[0][1]["generator"], "reference": pairs[0][0]["generator"],
                                 "seed": seed, "items": key_items})
    return sheet_path, key_path


def read_sheet(sheet_path: str | Path) -> dict[str, dict[str, Any]]:
    """``{item: {"label": "A" | "B" | "tie" | None, "instruction", "output_A", "output_B"}}`` from a filled sheet.

    A blank label is ``None`` (not judged yet). A label other than A, B or tie (any case) raises
    :class:`AlpacaNbError` naming the row as a spreadsheet shows it (the header is row 1).
    """
    sheet_path = Path(sheet_path)
    if not sheet_path.exists():
        raise AlpacaNbError(f"{sheet_path}: sheet not found")
    if sheet_path.is_dir():
        raise AlpacaNbError(f"{sheet_path} is a directory; give the sheet's CSV file")
    with io.StringIO(read_sheet_text(sheet_path), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AlpacaNbError(f"{sheet_path}: missing column(s) {', '.join(missing)}; "
                                f"the sheet's header must be {','.join(SHEET_COLUMNS)}")
        rows: dict[str, dict[str, Any]] = {}
        first_row: dict[str, int] = {}
        for row_number, row in enumerate(reader, start=2):
            item = (row["item"] or "").strip()
            if item in first_row:
                raise AlpacaNbError(f"{sheet_path}: row {row_number}: item {item or '(blank)'} appears again "
                                    f"(first at row {first_row[item]}); each item must appear once: remove the "
                                    "duplicate row")
            first_row[item] = row_number
            raw = (row["label"] or "").strip()
            if raw and raw.lower() not in LABELS:
                raise AlpacaNbError(f"{sheet_path}: row {row_number} (item {row['item']}): label {raw!r} is not "
                                    "A, B or tie; fix it, or leave it blank for an item not judged yet")
            rows[item] = {"label": LABELS[raw.lower()] if raw else None,
                          **{c: cell_text(row[c]) for c in ("instruction", "output_A", "output_B")}}
    return rows


def read_key(key_path: str | Path) -> dict[str, Any]:
    """A sheet's key ``{model, reference, seed, items: {item: {"A": generator, "B": generator}}}``; anything
    else raises :class:`AlpacaNbError` naming the file."""
    key = read_json(key_path)
    if not (isinstance(key, dict) and isinstance(key.get("model"), str) and isinstance(key.get("reference"), str)
            and isinstance(key.get("items"), dict)):
        raise AlpacaNbError(f"{key_path}: not a sheet key (expected a JSON object with 'model', 'reference' and "
                            "'items', as `alpaca-nb human-sheet` writes it); give the key exported with the sheet")
    return key


def unblind_sheet(sheet_path: str | Path, key_path: str | Path | None = None) -> tuple[dict[str, Any], list[dict]]:
    """A filled sheet un-blinded with its key: ``(key, rows)``, one row per item in sheet order,
    ``{"item", "instruction", "verdict", "output_model", "output_reference"}`` where ``verdict`` is the rater's
    ``"model_wins"``, ``"tie"`` or ``"reference_wins"``, or ``None`` for a blank label (then both outputs are
    ``None`` too). A sheet with items the key lacks or lacking items of the key, or a key entry that does not
    name the model on either side, raises :class:`AlpacaNbError` naming the file and the fix."""
    key_path = Path(key_path) if key_path else key_path_for(sheet_path)
    key = read_key(key_path)
    rows = read_sheet(sheet_path)
    unknown = sorted(set(rows) - set(key["items"]))
    if unknown:
        raise AlpacaNbError(f"{sheet_path}: item(s) {', '.join(unknown)} are not in the key {key_path}; "
                            "score a sheet with the key exported with it")
    missing = sorted(set(key["items"]) - set(rows), key=lambda item: (len(item), item))
    if missing:
        raise AlpacaNbError(f"{sheet_path}: item(s) {', '.join(missing)} of the key {key_path} are missing from the "
                            "sheet; restore their rows (leave the label blank for items not judged yet)")
    unblinded = []
    for item, row in rows.items():
        entry = {"item": item, "instruction": row["instruction"], "verdict": None, "output_model": None,
                 "output_reference": None}
        unblinded.append(entry)
        if row["label"] is None:
            continue
        sides = key["items"][item]
        if not (isinstance(sides, dict) and key["model"] in (sides.get("A"), sides.get("B"))):
            raise AlpacaNbError(f"{key_path}: item {item}: expected {{\"A\": ..., \"B\": ...}} naming the model "
                                f"{key['model']!r}; give the key exported with the sheet")
        model_side = "A" if sides["A"] == key["model"] else "B"
        entry["verdict"] = "tie" if row["label"] == "tie" else (
            "model_wins" if row["label"] == model_side else "reference_wins")
        entry["output_model"] = row[f"output_{model_side}"]
        entry["output_reference"] = row["output_B" if model_side == "A" else "output_A"]
    return key, unblinded


def score_sheet(sheet_path: str | Path, key_path: str | Path | None = None) -> dict[str, Any]:
    """Un-blind a filled sheet with its key: the model's wins, ties and losses against the reference.

    Also returns ``unlabeled`` (blank rows), and AlpacaEval's ``win_rate`` ± ``standard_error`` and
    ``avg_length`` for the model (draws count half), so people's and the judge's verdicts read on one scale.
    """
    key, rows = unblind_sheet(sheet_path, key_path)
    board = leaderboard([{"output_2": r["output_model"], "preference": PREFERENCES[r["verdict"]]}
                         for r in rows if r["verdict"] is not None])
    return {"model": key["model"], "reference": key["reference"], "wins": board["n_wins"],
            "ties": board["n_draws"], "losses": board["n_wins_base"],
            "unlabeled": sum(r["verdict"] is None for r in rows), "win_rate": board["win_rate"],
            "standard_error": board["standard_error"], "avg_length": board["avg_length"]}


SCRIPTED_RULES = ("longer", "coin")
RATER_COLUMN = "rater"  # extra column of a scripted copy: each row says who filled it, never mistaken for people's


def scripted_rater(sheet_path: str | Path, out_path: str | Path, rule: str = "longer", seed: int = 0) -> Path:
    """Fill a copy of a blind sheet's ``label`` column by a stated rule — a script, not a person — for demos and
    for checking the scoring path; returns ``out_path``.

    ``rule="longer"``: the longer answer (in characters) wins, equal lengths tie — a rater with exactly the length
    bias that LLM judges are known for. ``rule="coin"``: ``A`` or ``B`` by a coin per item, seeded by ``seed``,
    never a tie. The rater is as blind as a person: it reads only the sheet, never the key. The copy has the
    sheet's columns plus ``rater`` (``scripted: <rule>`` on every row); score it with the original sheet's key.
    Refuses (:class:`AlpacaNbError`, nothing written) to write over the sheet itself or over any file that is not
    an earlier scripted copy.
    """
    if rule not in SCRIPTED_RULES:
        raise AlpacaNbError(f"unknown scripted rule {rule!r}; choose one of {', '.join(SCRIPTED_RULES)}")
    sheet_path, out_path = Path(sheet_path), Path(out_path)
    rows = read_sheet(sheet_path)
    if out_path.exists():
        if out_path.resolve() == sheet_path.resolve():
            raise AlpacaNbError(f"{out_path} is the sheet itself; a scripted rater writes a copy: give another path")
        with out_path.open(encoding="utf-8-sig", newline="", errors="replace") as f:
            scripted = RATER_COLUMN in (csv.DictReader(f).fieldnames or [])
        if not scripted:
            raise AlpacaNbError(f"{out_path} exists and is not a scripted copy (no {RATER_COLUMN!r} column); "
                                "a scripted rater never writes over it: give another path")
    rng = random.Random(seed)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow((*SHEET_COLUMNS, RATER_COLUMN))
    for item, row in rows.items():
        if rule == "coin":
            label = "A" if rng.random() < 0.5 else "B"
        else:
            a, b = len(row["output_A"]), len(row["output_B"])
            label = "A" if a > b else "B" if b > a else "tie"
        writer.writerow([item, *map(safe_cell, (row["instruction"], row["output_A"], row["output_B"])), label,
                         f"scripted: {rule}"])
    return atomic_write_text(out_path, "\ufeff" + buf.getvalue())

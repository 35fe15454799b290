"""Upstream data: the manifest in ``seeds/``, a verified fetch step, and loaders returning typed records.

``seeds/manifest.json`` pins every file to a URL at a commit and a sha256. :func:`fetch` downloads
(or copies from a local ``mirror`` folder), verifies the checksum and the content, and only then moves
the file into place, so a good file is never replaced by a bad download. Loaders fetch a missing file on
demand (from ``$ALPACA_NB_MIRROR`` when set, else by URL) and check a present one against the manifest's
sha256 (remembered per path, size and mtime in the cache folder, so a normal load does not hash again).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import AlpacaNbError
from .fileio import atomic_write_json, ensure_dir, read_json, read_json_or_jsonl, read_jsonl, read_text, text_lines
from .paths import cache_dir, manifest_path, seeds_dir

VERIFIED_FILE = "verified_data.json"  # in the cache folder: {path: {size, mtime_ns, sha256}} of checked files


class FetchError(AlpacaNbError):
    """A download, copy, checksum or content check failed."""


@dataclass(frozen=True)
class ManifestEntry:
    """One upstream file: where it comes from, how to check it, and under which terms."""

    name: str
    path: str
    url: str
    sha256: str | None
    format: str
    license: str
    description: str
    citation: str
    online_only: bool = False


@dataclass(frozen=True)
class Example:
    """One instruction-following record: Alpaca's instruction/input/output plus where it came from."""

    instruction: str
    input: str
    output: str
    source: str
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_alpaca(self) -> dict[str, str]:
        """The record as Alpaca's JSON: ``{"instruction", "input", "output"}``."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


# --- manifest and fetch ---------------------------------------------------------------------------

def load_manifest(path: str | Path | None = None) -> list[ManifestEntry]:
    """Read the manifest (default ``seeds/manifest.json``)."""
    path = Path(path) if path else manifest_path()
    entries = read_json(path)["entries"]
    return [ManifestEntry(**e) for e in entries]


def manifest_entry(name: str) -> ManifestEntry:
    """The manifest entry called ``name``; an unknown name raises with the list of valid ones."""
    entries = {e.name: e for e in load_manifest()}
    if name not in entries:
        raise FetchError(f"unknown data name {name!r}; valid names: {', '.join(entries)}")
    return entries[name]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_file(path: str | Path, fmt: str) -> int:
    """Check that ``path`` parses as ``fmt`` and has the fields the loaders need; return the record count.

    Raises :class:`~alpaca_nb.fileio.DataFileError` naming the file and line (JSONL) or index (JSON).
    """
    path = Path(path)
    if fmt in ("seed_tasks", "davinci_predictions"):
        rows = read_jsonl(path)
        required = ("instruction", "instances") if fmt == "seed_tasks" else ("instruction", "response")
        for lineno, row in _numbered_lines(path, rows):
            missing = [k for k in required if not isinstance(row, dict) or not row.get(k)]
            if missing:
                raise FetchError(f"{path}: line {lineno}: task without {' / '.join(missing)}; "
                                 "every task needs an instruction and at least one instance")
            if fmt == "seed_tasks" and not all(isinstance(i, dict) and "output" in i for i in row["instances"]):
                raise FetchError(f"{path}: line {lineno}: an instance lacks 'output'")
    elif fmt in ("model_outputs", "alpaca"):
        rows = read_json(path)
        if not isinstance(rows, list):
            raise FetchError(f"{path}: expected a JSON list of records")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or "instruction" not in row or "output" not in row:
                raise FetchError(f"{path}: record {i}: needs 'instruction' and 'output'")
    elif fmt == "annotations":
        rows = read_json(path)
        if not isinstance(rows, list):
            raise FetchError(f"{path}: expected a JSON list of annotations")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not all(k in row for k in ("instruction", "output_1", "output_2",
                                                                         "preference")):
                raise FetchError(f"{path}: annotation {i}: needs 'instruction', 'output_1', 'output_2' and "
                                 "'preference'")
    elif fmt in FASTCHAT_FIELDS:
        rows = _validate_fastchat(path, fmt)
    else:
        raise FetchError(f"{path}: unknown format {fmt!r} in the manifest")
    if not rows:
        raise FetchError(f"{path}: no records; the file is empty or truncated — fetch it again")
    return len(rows)


# FastChat's files (lm-sys/FastChat fastchat/llm_judge/data, data/dummy_conversation.json): the keys each record needs.
FASTCHAT_FIELDS = {"mt_bench_questions": ("question_id", "category", "turns"),
                   "mt_bench_references": ("question_id", "choices"),
                   "judge_prompts": ("name", "type", "system_prompt", "prompt_template", "output_format"),
                   "sharegpt": ("conversations",)}


def _validate_fastchat(path: Path, fmt: str) -> list:
    """Check one FastChat file (JSONL, or a JSON list for ShareGPT) record by record; return the rows."""
    required = FASTCHAT_FIELDS[fmt]
    if fmt == "sharegpt":
        rows = read_json(path)
        if not isinstance(rows, list):
            raise FetchError(f"{path}: expected a JSON list of conversations")
        numbered = [(f"record {i}", row) for i, row in enumerate(rows)]
    else:
        rows = read_jsonl(path)
        numbered = [(f"line {n}", row) for n, row in _numbered_lines(path, rows)]
    for where, row in numbered:
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise FetchError(f"{path}: {where}: needs {', '.join(repr(k) for k in missing)}")
    return rows


def _numbered_lines(path: Path, rows: list) -> Iterable[tuple[int, Any]]:
    """Pair each parsed JSONL row with its 1-based line number (blank lines skipped, as read_jsonl does)."""
    numbers = [n for n, line in enumerate(text_lines(read_text(path)), 1) if line.strip()]
    return zip(numbers, rows)


def matches_manifest(path: Path, sha256: str) -> bool:
    """True when the sha256 of ``path`` is ``sha256``.

    A match is remembered in the cache folder by path, size and modification time, so loading an unchanged
    file again costs one ``stat``; any edit, truncation or replacement is hashed again.
    """
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    record, key = cache_dir() / VERIFIED_FILE, str(path.resolve())
    try:
        verified = read_json(record) if record.exists() else {}
    except AlpacaNbError:  # a damaged record only costs a re-hash
        verified = {}
    verified = verified if isinstance(verified, dict) else {}
    if verified.get(key) == stamp:
        return True
    if sha256_of(path) != sha256:
        return False
    try:
        atomic_write_json(record, verified | {key: stamp})
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return True


def _download(url: str, target: Path) -> None:
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(target, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False) as bar:
                for chunk in iter(lambda: r.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        raise FetchError(f"could not download {url} ({e}); check your connection, or pass --mirror DIR "
                         "with a local copy of the files") from e


def fetch_entry(entry: ManifestEntry, mirror: str | Path | None = None, dest: str | Path | None = None) -> Path:
    """Make ``dest/entry.path`` a verified copy of ``entry`` and return its path.

    An existing file whose checksum matches is kept as is. Otherwise the file is fetched to a temporary
    name beside the target, checked (sha256, then content), and only then moved into place.
    """
    target = Path(dest or seeds_dir()) / entry.path
    if target.exists() and entry.sha256 and sha256_of(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if mirror:
            src = Path(mirror) / entry.path
            if not src.exists():
                raise FetchError(f"{entry.name}: {src} is missing from the mirror; pass a mirror folder that "
                                 f"holds {entry.path}, or drop --mirror to download {entry.url}")
            shutil.copyfile(src, tmp)
        else:
            _download(entry.url, tmp)
        digest = sha256_of(tmp)
        where = src if mirror else entry.url
        if entry.sha256 and digest != entry.sha256:
            fix = (f"replace {src}, or run `alpaca-nb fetch {entry.name}` without a mirror to download {entry.url}"
                   if mirror else f"try `alpaca-nb fetch {entry.name}` again later, or pass --mirror DIR with a "
                   "good copy")
            if target.exists():  # reaching here means it does not match the manifest either
                fix = (f"the local copy {target} does not match the manifest either and was left as it is: both "
                       f"copies are bad; {fix}")
            raise FetchError(f"{entry.name}: sha256 of {where} is {digest}, the manifest expects {entry.sha256}: "
                             f"the file is corrupt, truncated or a different version; {fix}")
        try:
            validate_file(tmp, entry.format)
        except AlpacaNbError as e:
            raise FetchError(f"{entry.name}: {where} is not valid: {str(e).replace(str(tmp), entry.path)}") from e
        if not entry.sha256:
            print(f"{entry.name}: sha256 {digest} (not pinned in the manifest; add it to seeds/manifest.json)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(names: Iterable[str] | None = None, mirror: str | Path | None = None,
          dest: str | Path | None = None) -> list[Path]:
    """Fetch the named entries (default: all that are not online-only); return their local paths.

    ``dest`` must be a folder (created if missing); a file there raises :class:`AlpacaNbError`."""
    if dest:
        ensure_dir(dest, "--dest")
    entries = [manifest_entry(n) for n in names] if names else [e for e in load_manifest() if not e.online_only]
    return [fetch_entry(e, mirror=mirror, dest=dest) for e in entries]


def ensure(name: str) -> Path:
    """The local path of manifest entry ``name``, fetched first if missing (mirror: ``$ALPACA_NB_MIRROR``).

    A local copy whose sha256 differs from the manifest (see :func:`matches_manifest`) is fetched again from
    the mirror when one is set; without a mirror it raises :class:`FetchError` naming the file and the fix.
    """
    entry = manifest_entry(name)
    target = seeds_dir() / entry.path
    mirror = os.environ.get("ALPACA_NB_MIRROR") or None
    if target.exists():
        if not entry.sha256 or matches_manifest(target, entry.sha256):
            return target
        if not mirror:
            raise FetchError(f"{target}: sha256 differs from seeds/manifest.json ({name}): the file is corrupt, "
                             f"truncated or edited; run `alpaca-nb fetch {name}` to fetch a verified copy")
        print(f"{target}: sha256 differs from seeds/manifest.json; fetching {name} again from {mirror}",
              file=sys.stderr)
        return fetch_entry(entry, mirror=mirror)
    if entry.online_only and not mirror:
        raise FetchError(f"{name} is not fetched yet: run `alpaca-nb fetch {name}` on a machine with internet "
                         f"({entry.license}; {entry.url})")
    return fetch_entry(entry, mirror=mirror)


# --- loaders ----------------------------------------------------------------------------------------

def _tasks_to_examples(rows: list[dict], source: str, meta_keys: tuple[str, ...]) -> list[Example]:
    """Self-Instruct tasks → Examples, using the first instance as Alpaca's seed prompt does."""
    out = []
    for row in rows:
        first = row["instances"][0]
        meta = {k: row[k] for k in meta_keys if k in row} | {"n_instances": len(row["instances"])}
        out.append(Example(row["instruction"].strip(), first.get("input", "").strip(), first["output"].strip(),
                           source, row.get("id", ""), meta))
    return out


def load_seed_tasks(path: str | Path | None = None) -> list[Example]:
    """The 175 Self-Instruct seed tasks (``meta``: name, is_classification, n_instances)."""
    path = Path(path) if path else ensure("seed_tasks")
    validate_file(path, "seed_tasks")
    return _tasks_to_examples(read_jsonl(path), "seed_tasks", ("name", "is_classification"))


def load_user_oriented_tasks(path: str | Path | None = None) -> list[Example]:
    """The 252 user-oriented evaluation tasks; ``output`` is the human-written target (``meta``: motivation_app)."""
    path = Path(path) if path else ensure("user_oriented_instructions")
    validate_file(path, "seed_tasks")
    return _tasks_to_examples(read_jsonl(path), "user_oriented_instructions", ("motivation_app",))


def load_davinci_user_oriented(path: str | Path | None = None) -> list[Example]:
    """text-davinci-003's answers to the 252 user-oriented tasks (``meta``: generator, target)."""
    path = Path(path) if path else ensure("davinci003_user_oriented")
    validate_file(path, "davinci_predictions")
    return [Example(r["instruction"].strip(), r.get("input", "").strip(), r["response"].strip(),
                    "davinci003_user_oriented", str(i), {"generator": "text-davinci-003", "target": r.get("target")})
            for i, r in enumerate(read_jsonl(path))]


ALPACA_EVAL_GENERATORS = {"text_davinci_003": "alpaca_eval_text_davinci_003",
                          "alpaca-7b": "alpaca_eval_alpaca_7b",
                          "gpt4_1106_preview": "alpaca_eval_gpt4_1106_preview"}


def load_alpaca_eval(generator: str = "text_davinci_003") -> list[Example]:
    """The 805 AlpacaEval instructions with ``generator``'s answers (``meta``: dataset, generator)."""
    if generator not in ALPACA_EVAL_GENERATORS:
        raise AlpacaNbError(f"unknown AlpacaEval generator {generator!r}; choose one of "
                            f"{', '.join(ALPACA_EVAL_GENERATORS)}")
    name = ALPACA_EVAL_GENERATORS[generator]
    path = ensure(name)
    return [Example(r["instruction"], "", r["output"], name, str(i),
                    {"dataset": r.get("dataset"), "generator": r.get("generator", generator)})
            for i, r in enumerate(read_json(path))]


def load_alpaca_records(path: str | Path) -> list[Example]:
    """Any Alpaca-format file: a ``.json`` list or ``.jsonl`` of ``{instruction, input?, output}``.

    Extra fields go to ``meta``. A record without a non-empty ``instruction`` or without ``output``
    raises :class:`AlpacaNbError` naming the file and the record's index; so does an empty file.
    """
    path = Path(path)
    rows = read_json_or_jsonl(path)
    if not rows:
        raise AlpacaNbError(f"{path}: no records; expected a JSON list (or JSONL) of "
                            "{instruction, input, output} objects")
    return [alpaca_example(row, path, i) for i, row in enumerate(rows)]


def alpaca_example(row: Any, path: str | Path, index: int, where: str | None = None) -> Example:
    """One Alpaca record (``row``, record ``index`` of ``path``) as an :class:`Example`; extra fields go to ``meta``.

    A non-object, or a record without a non-empty ``instruction`` or without ``output``, raises
    :class:`AlpacaNbError` naming ``path`` and ``where`` (default ``"record {index}"``; e.g. ``"line 7"``).
    """
    where = where or f"record {index}"
    if not isinstance(row, dict):
        raise AlpacaNbError(f"{path}: {where} is not an object")
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or (key == "instruction" and not row[key].strip()):
            raise AlpacaNbError(f"{path}: {where}: missing or empty '{key}' (every record needs "
                                "'instruction' and 'output'; 'input' may be empty)")
    meta = {k: v for k, v in row.items() if k not in ("instruction", "input", "output")}
    return Example(row["instruction"].strip(), (row.get("input") or "").strip(), row["output"].strip(),
                   str(path), str(index), meta)


def load_optional_records(path: str | Path) -> list[Example]:
    """Like :func:`load_alpaca_records`, but a missing file or an empty list gives ``[]``.

    For reading an earlier lesson's output (e.g. lesson 02's ``regen.json``) that may not exist yet or may
    have kept nothing; a damaged file is still an error.
    """
    path = Path(path)
    if not path.is_file() or not path.stat().st_size or read_json_or_jsonl(path) == []:
        return []
    return load_alpaca_records(path)


def load_alpaca_data() -> list[Example]:
    """The released 52K Alpaca training set, once fetched with ``alpaca-nb fetch alpaca_data`` (online only)."""
    return load_alpaca_records(ensure("alpaca_data"))

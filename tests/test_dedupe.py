"""The novelty filter gives rouge-score's exact ROUGE-L F-measure and Alpaca's exact decisions."""
from __future__ import annotations

import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from alpaca_nb import data
from alpaca_nb.dedupe import RougeDeduplicator, max_scores

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def real_instructions(mirror) -> list[str]:
    """Seed tasks, user-oriented tasks and AlpacaEval instructions (about 1,200 real texts)."""
    texts = [e.instruction for e in data.load_seed_tasks() + data.load_user_oriented_tasks()]
    texts += [e.instruction for e in data.load_alpaca_eval("text_davinci_003")]
    return list(dict.fromkeys(texts))


def edited(text: str, rng: random.Random) -> str:
    """A near-duplicate: drop, swap or add a word or two (as a teacher model paraphrases)."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        op = rng.choice(("drop", "swap", "add"))
        i = rng.randrange(len(words))
        if op == "drop" and len(words) > 2:
            del words[i]
        elif op == "swap":
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        else:
            words.insert(i, rng.choice(("please", "briefly", "new", "the")))
    return " ".join(words)


def test_scores_equal_rouge_score_on_real_instructions(real_instructions):
    rng = random.Random(0)
    pool = real_instructions
    longest = sorted(pool, key=lambda t: len(SCORER._tokenizer.tokenize(t)))[-3:]  # > 64 tokens
    assert len(SCORER._tokenizer.tokenize(longest[-1])) > 128
    candidates = rng.sample(pool, 12) + [edited(t, rng) for t in rng.sample(pool, 8)] + longest
    candidates += ["", "?!", "Write a haiku about São Paulo's café culture."]
    dedup = RougeDeduplicator(pool)
    assert len(dedup) == len(pool)
    for cand in candidates:
        got = dedup.scores(cand)
        expected = np.array([rouge_l(p, cand) for p in pool])
        assert got.dtype == np.float64 and got.shape == (len(pool),)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert np.array_equal(got > 0.7, expected > 0.7)
    assert dedup.scores(pool[5])[5] == 1.0


def test_add_decides_like_alpaca_filter_on_a_stream_with_near_duplicates(real_instructions):
    rng = random.Random(1)
    seeds = real_instructions[:175]
    stream = []
    for text in rng.sample(real_instructions[175:], 60):
        stream += [text, edited(text, rng), edited(rng.choice(seeds), rng)]
    dedup = RougeDeduplicator(seeds, threshold=0.7)
    pool, kept, decisions = list(seeds), [], []
    for cand in stream:
        novel = max(rouge_l(p, cand) for p in pool) <= 0.7   # Alpaca: reject when any score > 0.7
        if novel:
            pool.append(cand)
        decisions.append(novel)
        kept.append(dedup.add(cand))
    assert kept == decisions
    assert 0 < sum(kept) < len(stream)            # the stream exercises both outcomes
    assert dedup.instructions == pool


def test_threshold_uses_rouge_scores_own_float_arithmetic():
    # LCS 7 of 8 and 12 tokens is 0.7 on paper but 0.7000000000000001 in rouge-score's arithmetic:
    # Alpaca rejects it. LCS 7 of 10 and 10 is exactly 0.7: kept.
    pool_text = "alpha beta gamma delta epsilon zeta eta one two three four five"
    over = "alpha beta gamma delta epsilon zeta eta theta"
    equal_pool = "apple banana cherry date elder fig grape x1 x2 x3"
    equal = "apple banana cherry date elder fig grape y1 y2 y3"
    assert rouge_l(pool_text, over) > 0.7 and rouge_l(equal_pool, equal) == 0.7
    dedup = RougeDeduplicator([pool_text, equal_pool])
    assert dedup.scores(over)[0] == rouge_l(pool_text, over)
    assert dedup.add(over) is False
    assert dedup.add(equal) is True


def test_texts_longer_than_64_tokens_with_repeated_words():
    rng = random.Random(2)
    vocab = "the a of to and in data model list write explain why how what".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(n)) for n in (1, 63, 64, 65, 127, 128, 129, 300)]
    dedup = RougeDeduplicator(texts)
    for cand in texts + [" ".join(rng.choice(vocab) for _ in range(n)) for n in (5, 70, 200)]:
        expected = [rouge_l(p, cand) for p in texts]
        np.testing.assert_allclose(dedup.scores(cand), expected, rtol=0, atol=1e-9)


def test_max_scores_and_most_similar(real_instructions):
    seeds, others = real_instructions[:175], real_instructions[175:185]
    got = max_scores(others, seeds)
    assert np.allclose(got, [max(rouge_l(s, o) for s in seeds) for o in others], rtol=0, atol=1e-9)
    assert np.array_equal(max_scores(others, []), np.zeros(len(others)))
    dedup = RougeDeduplicator(seeds)
    scores = dedup.scores(others[0])
    top = dedup.most_similar(scores, k=10)
    assert len(top) == 10 and list(top.values()) == sorted(scores, reverse=True)[:10]
    assert all(scores[seeds.index(text)] == value for text, value in top.items())


def test_max_scores_leaves_out_copies_only_when_asked(real_instructions):
    seeds = real_instructions[:30]
    assert np.array_equal(max_scores(seeds, seeds), np.ones(len(seeds)))
    loo = max_scores(seeds, seeds, leave_out_copies=True)
    expected = [max(rouge_l(s, t) for j, s in enumerate(seeds) if s != t) for t in seeds]
    assert np.allclose(loo, expected, rtol=0, atol=1e-9) and loo.max() < 1.0

"""The text-overlap baselines against direct computations: scikit-learn's cosine of TF-IDF rows,
and Okapi BM25 written out by hand (Lucene's variant, bm25s' defaults)."""

import math
import re
from collections import Counter

import numpy as np
import pytest

from untrac.methods.overlap import TOKEN_PATTERN, bm25_scores, tfidf_scores

TRAIN = {"numbers": ["fifty seven plus one is fifty eight", "twelve plus one", "one hundred and one"],
         "animals": ["the cat sat on the mat", "dogs bark at the cat", "fifty cats"]}
TEST = {"sums": ["what is fifty plus one", "twelve plus twelve"], "pets": ["a cat and a dog"]}


def test_tfidf_is_the_mean_cosine_of_scikit_learn_tfidf_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    vectorizer = TfidfVectorizer().fit([t for texts in TRAIN.values() for t in texts])
    scores = tfidf_scores(TRAIN, TEST)
    for z, texts in TRAIN.items():
        for s, queries in TEST.items():
            direct = cosine_similarity(vectorizer.transform(texts), vectorizer.transform(queries)).mean(axis=1)
            np.testing.assert_allclose(scores[z, s], direct, rtol=1e-12, atol=1e-15)
    assert scores["numbers", "sums"].mean() > scores["animals", "sums"].mean()
    assert scores["animals", "pets"].mean() > scores["numbers", "pets"].mean()


def _bm25_by_hand(documents: list[list[str]], query: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """Lucene's BM25: idf = ln(1 + (N − df + 0.5)/(df + 0.5)), tf saturated by k1, length-normalised by b."""
    n, avg = len(documents), np.mean([len(d) for d in documents])
    df = Counter(w for d in documents for w in set(d))
    out = np.zeros(n)
    for i, doc in enumerate(documents):
        tf = Counter(doc)
        for w in query:
            if df[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                out[i] += idf * tf[w] / (tf[w] + k1 * (1 - b + b * len(doc) / avg))
    return out


def test_bm25_is_the_mean_okapi_score_over_the_test_queries():
    words = lambda text: re.findall(TOKEN_PATTERN, text.lower())  # noqa: E731
    documents = [words(t) for texts in TRAIN.values() for t in texts]
    scores = bm25_scores(TRAIN, TEST)
    for s, queries in TEST.items():
        expected = np.mean([_bm25_by_hand(documents, words(q)) for q in queries], axis=0)
        np.testing.assert_allclose(np.concatenate([scores[z, s] for z in TRAIN]), expected, rtol=1e-5)
    assert scores["animals", "pets"].mean() > scores["numbers", "pets"].mean() > 0  # "and" is in a numbers row


def test_a_query_with_no_known_word_scores_zero():
    assert bm25_scores(TRAIN, {"none": ["zzz qqq"]})["numbers", "none"] == pytest.approx(np.zeros(3))

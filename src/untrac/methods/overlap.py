"""Text-overlap baselines: TF-IDF cosine and BM25 (issue 19: does a method beat plain word overlap?).

Neither looks at the model. A training example's score on a test subset is its mean similarity
to the subset's examples; a dataset's influence is its examples' mean score, the same "mean over
examples" that makes GradCos a dataset score. Higher = more similar = reported as more influential
(the shared sign: positive means "helped"). Text is each example as examples.csv shows it
(prompt, and " → target" for seq2seq pairs), words as scikit-learn's default token pattern finds
them, lower-cased, no stop words: the synthetic tasks' numbers and short words are the signal.

- ``tfidf``: rows of ``TfidfVectorizer`` (fit on the scored training examples, L2-normalised), so
  score(z, Z') = x_z · mean_{z'∈Z'} x_{z'} = the mean cosine (scikit-learn's own TF-IDF).
- ``bm25``: Okapi BM25 (``bm25s``, Lucene's variant, k1 = 1.5, b = 0.75: its defaults) with the
  training examples as documents and each test example as a query; score(z, Z') = the mean over
  Z' of BM25(z', z).
"""

import numpy as np
import pandas as pd

from untrac.method_config import MethodConfig
from untrac.methods import Context, Method, Needs, final_rows, register

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default, given to both so they see the same words


def tfidf_scores(train: dict[str, list[str]], test: dict[str, list[str]]) -> dict[tuple[str, str], np.ndarray]:
    """(training dataset, test subset) → each training example's mean TF-IDF cosine to the subset."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True)
    vectorizer.fit([text for texts in train.values() for text in texts])
    centroids = {s: np.asarray(vectorizer.transform(texts).mean(axis=0)).ravel() for s, texts in test.items()}
    out = {}
    for z, texts in train.items():
        rows = vectorizer.transform(texts)
        for s, centroid in centroids.items():
            out[z, s] = np.asarray(rows @ centroid).ravel()
    return out


def bm25_scores(train: dict[str, list[str]], test: dict[str, list[str]]) -> dict[tuple[str, str], np.ndarray]:
    """(training dataset, test subset) → each training example's mean BM25 score over the subset's queries."""
    import re

    import bm25s

    def words(text: str) -> list[str]:
        return re.findall(TOKEN_PATTERN, text.lower())

    names = list(train)
    documents = [words(text) for z in names for text in train[z]]
    index = bm25s.BM25()  # bm25s' defaults: Lucene's BM25, k1 = 1.5, b = 0.75
    index.index(documents, show_progress=False)
    bounds = np.cumsum([0] + [len(train[z]) for z in names])
    out = {}
    for s, queries in test.items():
        total = np.zeros(len(documents))
        for query in queries:
            known = [w for w in words(query) if w in index.vocab_dict]
            if known:
                total += index.get_scores(known)
        mean = total / len(queries)
        out.update({(z, s): mean[bounds[i]:bounds[i + 1]] for i, z in enumerate(names)})
    return out


def _score(context: Context, scores_of) -> pd.DataFrame:
    train, test = context.texts["train"], context.texts["test"]
    scores = scores_of(train, test)
    if context.examples is not None:
        context.examples.extend(pd.DataFrame({"train_dataset": z, "example": np.arange(len(v)), "test_subset": s,
                                              "score": v}) for (z, s), v in scores.items())
    return final_rows({key: float(np.mean(v)) for key, v in scores.items()})


register(Method("tfidf", MethodConfig, lambda context: _score(context, tfidf_scores), Needs(examples=True, texts=True)))
register(Method("bm25", MethodConfig, lambda context: _score(context, bm25_scores), Needs(examples=True, texts=True)))

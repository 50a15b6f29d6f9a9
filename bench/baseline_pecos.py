"""The classical XC anchor on a text XC data set: PECOS XR-Linear, evaluated with xcops.metrics.

Not a test and not a dependency of xcops. PECOS (PyPI ``libpecos``) pins numpy < 2, so it
usually lives in a virtual environment of its own (see bench/baseline_common.py, or
``bash tasks.sh baselines``): the PECOS part runs under ``--baseline-python`` (default: this
interpreter) and its top-k are scored with the same metrics and inverse propensities as
``xcops evaluate``.

    python -m venv /tmp/pecos && /tmp/pecos/bin/pip install libpecos
    python bench/baseline_pecos.py ../shared/data/yso-finna-en --baseline-python /tmp/pecos/bin/python

The set-up is the one ../shared/data/README.md gives for yso-finna-en: TF-IDF of word uni- and
bigrams, PIFA label features, a 16-way tree with leaves of at most 100 labels, beam 10,
threshold 0.1.
"""

from __future__ import annotations

import time

import numpy as np

import baseline_common

SETTINGS = dict(vectorizer={"type": "tfidf", "kwargs": {"ngram_range": [1, 2], "min_df_cnt": 2}},
                label_features="pifa", indexer="hierarchicalkmeans", nr_splits=16, max_leaf_size=100,
                threshold=0.1, beam_size=10)


def train_and_predict(train_texts, train_Y, test_texts, args):
    from pecos.utils.featurization.text.vectorizers import Vectorizer
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    start = time.perf_counter()
    vectorizer = Vectorizer.train(train_texts, config=SETTINGS["vectorizer"])
    X_trn = vectorizer.predict(train_texts)
    label_features = LabelEmbeddingFactory.create(train_Y, X_trn, method=SETTINGS["label_features"])
    tree = Indexer.gen(label_features, indexer_type=SETTINGS["indexer"], nr_splits=SETTINGS["nr_splits"],
                       max_leaf_size=SETTINGS["max_leaf_size"], threads=args.threads)
    model = XLinearModel.train(X_trn, train_Y, C=tree, threshold=SETTINGS["threshold"], threads=args.threads)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.predict(vectorizer.predict(test_texts), beam_size=SETTINGS["beam_size"], only_topk=args.k,
                           threads=args.threads).tocsr()
    predict_seconds = time.perf_counter() - start
    ranked = []
    for row in range(scores.shape[0]):
        span = slice(scores.indptr[row], scores.indptr[row + 1])
        ids, values = scores.indices[span], scores.data[span]
        ranked.append(ids[np.lexsort((ids, -values))])  # ties by label id, so runs repeat exactly
    return baseline_common.top_k_array(ranked, args.k), train_seconds, predict_seconds, SETTINGS


if __name__ == "__main__":
    baseline_common.main(__doc__.split("\n\n")[0], lambda args: "pecos", train_and_predict,
                         python_aliases=["--pecos-python"])

"""The tree baseline that Annif users run on this kind of data: Omikuji (PyPI ``omikuji``), with
Parabel or Bonsai settings, evaluated with xcops.metrics.

Not a test and not a dependency of xcops. It runs under ``--baseline-python``, a venv with
omikuji and scikit-learn (see bench/baseline_common.py, or ``bash tasks.sh baselines``), and
its top-k are scored with the same metrics and inverse propensities as ``xcops evaluate``.

    python bench/baseline_omikuji.py ../shared/data/yso-finna-en --settings bonsai \
        --baseline-python .venv-baselines/bin/python --json bench/results/omikuji-bonsai.json

Features: scikit-learn TF-IDF of word uni- and bigrams with sublinear tf and min_df 2, as
Annif's omikuji backend builds them. Omikuji's defaults otherwise: 3 trees, beam 10. Parabel:
balanced 2-means trees. Bonsai: regular (unbalanced) 100-means, depth at most 3, as in the
Omikuji README's Bonsai comparison.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import baseline_common

VECTORIZER = dict(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
TREES = {"parabel": dict(n_trees=3), "bonsai": dict(n_trees=3, cluster_k=100, max_depth=3, cluster_balanced=False)}
BEAM_SIZE = 10


def write_training_file(path: Path, X, Y) -> None:
    """Omikuji reads its training data from a file in the XC repository's BoW format."""
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for row in range(X.shape[0]):
            labels = ",".join(map(str, Y.indices[Y.indptr[row]:Y.indptr[row + 1]]))
            span = slice(X.indptr[row], X.indptr[row + 1])
            # No space after the labels of a title without features: omikuji rejects an empty pair.
            f.write(" ".join([labels, *(f"{i}:{v:.6g}" for i, v in zip(X.indices[span], X.data[span]))]) + "\n")


def train_and_predict(train_texts, train_Y, test_texts, args):
    import omikuji
    from sklearn.feature_extraction.text import TfidfVectorizer

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(dtype=np.float32, **VECTORIZER)
    X_trn = vectorizer.fit_transform(train_texts)
    X_trn.sort_indices()
    hyper_param = omikuji.Model.default_hyper_param()
    for key, value in TREES[args.settings].items():
        setattr(hyper_param, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        write_training_file(Path(tmp) / "train.txt", X_trn, train_Y)
        model = omikuji.Model.train_on_data(str(Path(tmp) / "train.txt"), hyper_param, n_threads=args.threads)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.init_prediction_thread_pool(args.threads)
    X_tst = vectorizer.transform(test_texts)
    ranked = []
    for row in range(X_tst.shape[0]):
        span = slice(X_tst.indptr[row], X_tst.indptr[row + 1])
        pairs = list(zip(X_tst.indices[span].tolist(), X_tst.data[span].tolist()))
        ranked.append([label for label, _ in model.predict(pairs, beam_size=BEAM_SIZE, top_k=args.k)])
    predict_seconds = time.perf_counter() - start
    settings = dict(vectorizer=VECTORIZER, trees=TREES[args.settings], beam_size=BEAM_SIZE,
                    omikuji=omikuji.__version__)
    return baseline_common.top_k_array(ranked, args.k), train_seconds, predict_seconds, settings


def add_arguments(parser) -> None:
    parser.add_argument("--settings", choices=sorted(TREES), default="parabel", help="tree settings (default parabel)")


if __name__ == "__main__":
    baseline_common.main(__doc__.split("\n\n")[0], lambda args: f"omikuji-{args.settings}", train_and_predict,
                         add_arguments)

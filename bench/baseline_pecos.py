"""The classical XC anchor on a text XC data set: PECOS XR-Linear, evaluated with xcops.metrics.

Not a test and not a dependency of xcops. PECOS (PyPI ``libpecos``) pins numpy < 2, so it
usually lives in a virtual environment of its own: this script runs the PECOS part with
``--pecos-python`` (default: this interpreter) and scores its top-k with the same metrics and
inverse propensities as ``xcops evaluate``.

    python -m venv /tmp/pecos && /tmp/pecos/bin/pip install libpecos
    python bench/baseline_pecos.py ../shared/data/yso-finna-en --pecos-python /tmp/pecos/bin/python

The set-up is the one ../shared/data/README.md gives for yso-finna-en: TF-IDF of word uni- and
bigrams, PIFA label features, a 16-way tree with leaves of at most 100 labels, beam 10,
threshold 0.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Runs under the PECOS interpreter: reads the data itself (numpy < 2, no xcops there), writes
# the top-k label ids to an .npy file and its timings to a JSON file.
PECOS_PART = r'''
import json, lzma, sys, time
import numpy as np
import scipy.sparse as sp
from pecos.utils.featurization.text.vectorizers import Vectorizer
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel

data, out, k, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def lines(name):
    with lzma.open(f"{data}/{name}.xz", "rt", encoding="utf-8") as f:
        return f.read().split("\n")

def labels(name):
    rows = lines(name)
    n, L = map(int, rows[0].split())
    indptr, indices = [0], []
    for row in rows[1:n + 1]:
        indices += [int(pair.split(":")[0]) for pair in row.split()]
        indptr.append(len(indices))
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, L))

Y_trn = labels("trn_X_Y.txt")
trn, tst = lines("trn_X.txt")[:Y_trn.shape[0]], lines("tst_X.txt")
tst = tst[:len(tst) - (tst[-1] == "")]
start = time.perf_counter()
vectorizer = Vectorizer.train(trn, config={"type": "tfidf", "kwargs": {"ngram_range": [1, 2], "min_df_cnt": 2}})
X_trn = vectorizer.predict(trn)
label_features = LabelEmbeddingFactory.create(Y_trn, X_trn, method="pifa")
tree = Indexer.gen(label_features, indexer_type="hierarchicalkmeans", nr_splits=16, max_leaf_size=100,
                   threads=threads)
model = XLinearModel.train(X_trn, Y_trn, C=tree, threshold=0.1, threads=threads)
train_seconds = time.perf_counter() - start
start = time.perf_counter()
scores = model.predict(vectorizer.predict(tst), beam_size=10, only_topk=k, threads=threads).tocsr()
predict_seconds = time.perf_counter() - start
top = np.full((scores.shape[0], k), -1, dtype=np.int64)
for row in range(scores.shape[0]):
    ids, vals = scores.indices[scores.indptr[row]:scores.indptr[row + 1]], scores.data[scores.indptr[row]:scores.indptr[row + 1]]
    ranked = ids[np.lexsort((ids, -vals))][:k]
    top[row, :len(ranked)] = ranked
np.save(out, top)
json.dump(dict(train_seconds=train_seconds, predict_seconds=predict_seconds), open(out + ".json", "w"))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="an XC text data directory (trn_X.txt.xz, trn_X_Y.txt.xz, tst_*)")
    parser.add_argument("--pecos-python", default=sys.executable, help="a Python interpreter with libpecos")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    args = parser.parse_args()

    from xcops.data import read_sparse
    from xcops.metrics import evaluate, format_metrics, inv_propensity

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "top.npy")
        start = time.perf_counter()
        subprocess.run([args.pecos_python, "-c", PECOS_PART, str(args.data), out, str(args.k), str(args.threads)],
                       check=True)
        wall = time.perf_counter() - start
        top = np.load(out)
        timings = json.loads(Path(out + ".json").read_text())
    train_Y = read_sparse(args.data / "trn_X_Y.txt.xz")
    test_Y = read_sparse(args.data / "tst_X_Y.txt.xz")
    metrics = evaluate(test_Y, top, k=(1, 3, 5), inv_propensity=inv_propensity(train_Y))
    metrics.update(timings, wall_seconds=wall)
    print(f"PECOS XR-Linear on {args.data} ({args.threads} threads)")
    print(format_metrics(metrics))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

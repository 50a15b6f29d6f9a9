"""What the classical baselines of bench/ (baseline_pecos.py, baseline_omikuji.py) share.

Each baseline script runs twice. Under xcops' interpreter it starts itself again under the
baseline's interpreter (``--baseline-python``: a venv with libpecos or omikuji, which pin
their own numpy and need no torch) with a hidden ``--worker OUT`` flag. The worker reads the
data with numpy and scipy only, trains and predicts, and saves the top-k label ids and its
timings to OUT. Back in xcops' interpreter, the top-k are scored with xcops.metrics and the
inverse propensities of ``xcops train`` (same A and B), so the numbers compare with
``metrics.json`` of an xcops run. This module must therefore import nothing beyond numpy and
scipy at module level.

A venv for both baselines (or ``bash tasks.sh baselines``, which makes .venv-baselines):

    python3 -m venv .venv-baselines
    .venv-baselines/bin/pip install libpecos==1.2.8 omikuji==0.5.2 scikit-learn==1.9.1
"""

from __future__ import annotations

import argparse
import datetime
import json
import lzma
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp


def read_split(data: Path, split: str, max_rows: int | None = None) -> tuple[list[str], sp.csr_matrix]:
    """The texts and binary label matrix of ``split`` ("trn" or "tst"), the first ``max_rows``
    rows of each when given."""
    with lzma.open(data / f"{split}_X_Y.txt.xz", "rt", encoding="utf-8") as f:
        rows = f.read().split("\n")
    n, num_labels = map(int, rows[0].split())
    n = n if max_rows is None else min(n, max_rows)
    indptr, indices = [0], []
    for row in rows[1:n + 1]:
        indices += [int(pair.split(":")[0]) for pair in row.split()]
        indptr.append(len(indices))
    labels = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, num_labels))
    # Split on "\n" only, as xcops.data.read_text does, so that texts stay aligned with label rows.
    with lzma.open(data / f"{split}_X.txt.xz", "rt", encoding="utf-8", newline="") as f:
        texts = f.read().split("\n")[:n]
    return texts, labels


def top_k_array(ranked_ids: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """``[N, k]`` int64 label ids from per-row rankings (best first), padded with -1."""
    top = np.full((len(ranked_ids), k), -1, dtype=np.int64)
    for row, ids in enumerate(ranked_ids):
        ids = np.asarray(ids[:k], dtype=np.int64)
        top[row, :len(ids)] = ids
    return top


# (train_texts, train_Y, test_texts, args) -> (top-k ids [N_test, k], train seconds,
# predict seconds, settings to record). Runs in the worker.
TrainAndPredict = Callable[[list, sp.csr_matrix, list, argparse.Namespace], tuple[np.ndarray, float, float, dict]]


def main(description: str, model_name: Callable[[argparse.Namespace], str], train_and_predict: TrainAndPredict,
         add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
         python_aliases: Sequence[str] = ()) -> None:
    """The command line of a baseline script: ``DATA [--baseline-python PY] [--json OUT] ...``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data", type=Path, help="an XC text data directory (trn_X.txt.xz, trn_X_Y.txt.xz, tst_*)")
    parser.add_argument("--baseline-python", *python_aliases, dest="baseline_python", default=sys.executable,
                        help="a Python interpreter with the baseline's package (default: this one)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-train", type=int, help="use only the first N training titles (a quick check)")
    parser.add_argument("--max-test", type=int, help="use only the first N test titles")
    parser.add_argument("--json", type=Path, help="also write the metrics, timings and provenance here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        _work(args, train_and_predict)
    else:
        _drive(args, model_name(args))


def _work(args, train_and_predict: TrainAndPredict) -> None:
    train_texts, train_Y = read_split(args.data, "trn", args.max_train)
    test_texts, _ = read_split(args.data, "tst", args.max_test)
    top, train_seconds, predict_seconds, settings = train_and_predict(train_texts, train_Y, test_texts, args)
    np.save(args.worker, top)
    Path(args.worker + ".json").write_text(json.dumps(dict(
        train_seconds=train_seconds, predict_seconds=predict_seconds, settings=settings)))


def _drive(args, name: str) -> None:
    from xcops.data import read_sparse
    from xcops.metrics import evaluate, format_metrics, inv_propensity
    from xcops.train import TrainConfig

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "top.npy")
        start = time.perf_counter()
        subprocess.run([args.baseline_python, sys.argv[0], *sys.argv[1:], "--worker", out], check=True)
        wall = time.perf_counter() - start
        top = np.load(out)
        worker = json.loads(Path(out + ".json").read_text())
    train_Y = read_sparse(args.data / "trn_X_Y.txt.xz")[:args.max_train]
    test_Y = read_sparse(args.data / "tst_X_Y.txt.xz")[:args.max_test]
    propensity = inv_propensity(train_Y, TrainConfig.propensity_a, TrainConfig.propensity_b)
    metrics = evaluate(test_Y, top, k=(1, 3, 5), inv_propensity=propensity)
    if args.max_train or args.max_test:  # so that a quick check never replaces a full row of a table
        name += f" (first {train_Y.shape[0]} training, {test_Y.shape[0]} test titles)"
    record = dict(model=name, **metrics, train_seconds=worker["train_seconds"],
                  predict_seconds=worker["predict_seconds"], wall_seconds=wall,
                  train_rows=train_Y.shape[0], test_rows=test_Y.shape[0], settings=worker["settings"],
                  hardware=describe_hardware(args.threads, (load_before, os.getloadavg()[0])),
                  command=shlex.join(["python", *sys.argv]), date=utc_date())
    print(f"{name} on {args.data} ({args.threads} thread{'s' * (args.threads != 1)})")
    print(format_metrics({key: record[key] for key in (*metrics, "train_seconds", "predict_seconds")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))


def cpu_name() -> str:
    """The CPU model and core count of this machine, e.g. "AMD EPYC, 2 cores"."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def describe_hardware(threads: int, loads: tuple[float, float]) -> str:
    # Timings on the shared machine swing with its load, so the load goes with them.
    return (f"{cpu_name()}, {threads} thread{'s' * (threads != 1)}, "
            f"load {loads[0]:.1f} at start and {loads[1]:.1f} at end")


def utc_date(timestamp: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")

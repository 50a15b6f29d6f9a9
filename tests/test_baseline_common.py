"""bench/baseline_common.py, the numpy-only part that the baselines run in their own venv:
reading an XC text split as xcops reads it, and top-k arrays from rankings."""

import importlib
import lzma
import pathlib

import numpy as np
import pytest

from xcops.data import read_sparse, read_text

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("baseline_common")


def write_split(directory, rng, n, num_labels):
    texts = [" ".join(rng.choice(["a", "b\u2028c", "d\re"], size=rng.integers(0, 4))) for _ in range(n)]
    rows = [" ".join(f"{label}:1" for label in sorted(rng.choice(num_labels, rng.integers(0, 4), replace=False)))
            for _ in range(n)]
    with lzma.open(directory / "trn_X.txt.xz", "wt", encoding="utf-8", newline="") as f:
        f.write("\n".join(texts) + "\n")
    with lzma.open(directory / "trn_X_Y.txt.xz", "wt", encoding="utf-8") as f:
        f.write(f"{n} {num_labels}\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("max_rows", [None, 1, 7])
def test_read_split_reads_what_xcops_reads(common, tmp_path, max_rows):
    rng = np.random.default_rng()
    n = int(rng.integers(8, 40))
    write_split(tmp_path, rng, n, num_labels=int(rng.integers(5, 30)))
    texts, labels = common.read_split(tmp_path, "trn", max_rows)
    expected = read_sparse(tmp_path / "trn_X_Y.txt.xz")[:max_rows]
    assert texts == read_text(tmp_path / "trn_X.txt.xz")[:max_rows]
    assert labels.shape == expected.shape and (labels != expected).nnz == 0


def test_top_k_array_pads_short_rankings(common):
    rng = np.random.default_rng()
    k = int(rng.integers(1, 6))
    ranked = [rng.permutation(50)[:rng.integers(0, 2 * k)] for _ in range(20)]
    top = common.top_k_array(ranked, k)
    assert top.shape == (20, k) and top.dtype == np.int64
    for row, ids in zip(top, ranked):
        assert list(row) == list(ids[:k]) + [-1] * (k - len(ids[:k]))

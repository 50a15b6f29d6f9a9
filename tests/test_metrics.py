"""Metrics against hand-computed values and a per-row reference written out plainly."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xcops.metrics import evaluate, format_metrics, inv_propensity


def csr(rows, num_labels):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = [c for r in rows for c in r]
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(rows), num_labels))


# Four rows: three labels, one label, no labels, two labels.
TRUE = csr([[0, 1, 2], [3], [], [1, 4]], 6)
# Hits: row 0 ranks 1 and 3; row 1 rank 1 (then padding); row 2 none; row 3 rank 1 and, after
# a repeated label that must not count twice, rank 3.
PRED = np.array([[2, 5, 0], [3, -1, -1], [0, 1, 2], [4, 4, 1]])


def test_hand_computed_example():
    m = evaluate(TRUE, PRED, k=(1, 3, 5))
    d2, d3 = 1 / math.log2(3), 1 / math.log2(4)  # discounts of ranks 2 and 3
    assert m["P@1"] == pytest.approx(100 * 3 / 4)
    assert m["P@3"] == pytest.approx(100 * (2 + 1 + 0 + 2) / 12)
    assert m["P@5"] == pytest.approx(100 * (2 + 1 + 0 + 2) / 20)  # ranks 4-5 missing = misses
    assert m["nDCG@1"] == pytest.approx(100 * 3 / 4)
    ndcg3 = [(1 + d3) / (1 + d2 + d3), 1 / 1, 0, (1 + d3) / (1 + d2)]
    assert m["nDCG@3"] == pytest.approx(100 * sum(ndcg3) / 4)
    assert m["nDCG@5"] == pytest.approx(m["nDCG@3"])  # ideal DCG stops at |y| <= 3
    assert m["R@1"] == pytest.approx(100 * (1 / 3 + 1 + 0 + 1 / 2) / 4)
    assert m["R@3"] == pytest.approx(100 * (2 / 3 + 1 + 0 + 1) / 4)
    assert list(m) == ["P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5", "R@1", "R@3", "R@5"]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_torch_predictions_give_the_same(dtype):
    expected = evaluate(TRUE, PRED, k=3)
    assert evaluate(TRUE, torch.tensor(PRED, dtype=dtype), k=3) == expected
    assert evaluate(TRUE, PRED.astype(np.int16), k=3) == expected


def test_perfect_ranking_scores_100():
    true = csr([[0, 1, 2], [3], [1, 4]], 6)
    pred = np.array([[2, 0, 1, 5, 4], [3, 0, 1, 2, 5], [4, 1, 0, 2, 3]])
    w = inv_propensity(true)
    m = evaluate(true, pred, k=(1, 3, 5), inv_propensity=w)
    for key in ["P@1", "nDCG@1", "nDCG@3", "nDCG@5", "R@5"]:
        assert m[key] == pytest.approx(100.0)
    # Propensity-scored metrics are 100 only for the best weighted order: rare label 4 before 1.
    assert m["PSP@5"] == pytest.approx(100.0)
    assert m["PSnDCG@5"] == pytest.approx(100.0)
    assert evaluate(true, np.array([[0, 1, 2], [3, 0, 1], [1, 4, 0]]), k=1, inv_propensity=w)["PSP@1"] < 100


def test_inv_propensity_formula():
    train = csr([[0, 1], [0], [0, 2], [1]], 4)  # label counts 3, 2, 1, 0; N = 4
    for A, B in [(0.55, 1.5), (0.6, 2.6), (0.5, 0.4)]:
        c = (math.log(4) - 1) * (B + 1) ** A
        expected = [1 + c * (n + B) ** -A for n in (3, 2, 1, 0)]
        np.testing.assert_allclose(inv_propensity(train, A, B), expected, rtol=1e-12)
    w = inv_propensity(train)
    assert np.all(np.diff(w) > 0)  # rarer labels weigh more


def reference_metrics(true_rows, pred, w, ks):
    """Every metric row by row, as pyxclib defines it."""
    n = len(true_rows)
    out = {}
    for k in ks:
        p = ndcg = r = 0.0
        psp_num = psp_den = psn_num = psn_den = 0.0
        for y, ranked in zip(true_rows, pred):
            y = set(y)
            seen, hits, dcg, wdcg, whits = set(), 0, 0.0, 0.0, 0.0
            for rank, label in enumerate(ranked[:k]):
                if label in y and label not in seen:
                    hits += 1
                    dcg += 1 / math.log2(rank + 2)
                    whits += w[label]
                    wdcg += w[label] / math.log2(rank + 2)
                seen.add(label)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(y))))
            best = sorted((w[label] for label in y), reverse=True)[:k]
            p += hits / k
            r += hits / len(y) if y else 0
            ndcg += dcg / idcg if y else 0
            psp_num += whits
            psp_den += sum(best)
            psn_num += wdcg / idcg if y else 0
            psn_den += sum(g / math.log2(i + 2) for i, g in enumerate(best)) / idcg if y else 0
        out.update({f"P@{k}": p / n, f"nDCG@{k}": ndcg / n, f"R@{k}": r / n})
        out.update({f"PSP@{k}": psp_num / psp_den, f"PSnDCG@{k}": psn_num / psn_den})
    return {key: 100 * v for key, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_per_row_reference(seed):
    rng = np.random.default_rng(seed)
    n, num_labels, kmax = 80, 25, 7
    # label counts skewed so propensities differ; some rows empty, some with more than k labels
    popularity = rng.dirichlet(np.full(num_labels, 0.3))
    true_rows = [
        sorted(rng.choice(num_labels, rng.integers(0, 10), replace=False, p=popularity).tolist())
        for _ in range(n)
    ]
    pred = rng.integers(-1, num_labels, (n, kmax))
    for i, y in enumerate(true_rows[: n // 2]):  # half the rows rank some true labels high
        pred[i, : min(len(y), 3)] = y[:3]
    true = csr(true_rows, num_labels)
    w = inv_propensity(csr([[int(c) for c in rng.choice(num_labels, 3, p=popularity)] for _ in range(200)], num_labels))
    ks = (1, 3, 5, 7)
    got = evaluate(true, pred, k=ks, inv_propensity=w)
    expected = reference_metrics(true_rows, pred.tolist(), w, ks)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-9), key


def test_bad_input():
    with pytest.raises(ValueError, match="rows"):
        evaluate(TRUE, PRED[:2])
    with pytest.raises(ValueError, match=r"\[-1, 6\)"):
        evaluate(TRUE, PRED + 6)
    with pytest.raises(TypeError, match="integer"):
        evaluate(TRUE, PRED.astype(np.float32))
    with pytest.raises(ValueError, match="6 entries"):
        evaluate(TRUE, PRED, inv_propensity=np.ones(5))
    with pytest.raises(ValueError, match="k must be"):
        evaluate(TRUE, PRED, k=0)


def test_format_metrics_table():
    table = format_metrics(evaluate(TRUE, PRED, k=(1, 3), inv_propensity=np.ones(6)))
    lines = table.splitlines()
    assert lines[0].split() == ["@1", "@3"]
    assert [line.split()[0] for line in lines[1:]] == ["P", "nDCG", "R", "PSP", "PSnDCG"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert "75.00" in lines[1] and "41.67" in lines[1]

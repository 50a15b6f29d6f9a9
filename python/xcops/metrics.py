"""Ranking metrics of extreme classification, defined as pyxclib (xclib.evaluation.xc_metrics)
defines them, computed for all rows at once with numpy/scipy.

Relevance is binary: every nonzero of the true label matrix is a relevant label.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import scipy.sparse as sp


def inv_propensity(train_Y, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Inverse propensity of every label (Jain et al. 2016), float64 ``[L]``:
    ``1 + C (N_l + B)^-A`` with ``C = (ln N - 1) (B + 1)^A``, ``N`` the number of training rows
    and ``N_l`` the number of training rows with label ``l``.

    Typical ``(A, B)``: (0.55, 1.5) by default, (0.6, 2.6) Amazon, (0.5, 0.4) Wikipedia.
    """
    Y = sp.csr_matrix(train_Y)
    n = Y.shape[0]
    if n < 1:
        raise ValueError("inv_propensity needs at least one training row")
    freq = np.bincount(Y.indices[Y.data != 0], minlength=Y.shape[1]).astype(np.float64)
    c = (np.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 + c * (freq + B) ** -A


def _index_array(pred) -> np.ndarray:
    if hasattr(pred, "detach"):  # a torch tensor, on any device
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"pred_indices must be 2-D [N, k], got shape {pred.shape}")
    if not np.issubdtype(pred.dtype, np.integer):
        raise TypeError(f"pred_indices must hold integer label ids, got dtype {pred.dtype}")
    return pred.astype(np.int64, copy=False)


def _ks(k) -> list[int]:
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not ks or any(int(v) < 1 for v in ks):
        raise ValueError(f"k must be a positive int or a non-empty list of them, got {k!r}")
    return sorted({int(v) for v in ks})


def _canonical_binary(true_Y) -> sp.csr_matrix:
    Y = sp.csr_matrix(true_Y, copy=True)
    Y.sum_duplicates()
    Y.eliminate_zeros()
    Y.data = np.ones_like(Y.data, dtype=np.float64)
    return Y


def _hits(Y: sp.csr_matrix, pred: np.ndarray) -> np.ndarray:
    """``hits[i, r]``: whether ``pred[i, r]`` is a true label of row ``i`` and its first
    occurrence in the row (a label repeated in a ranking counts once)."""
    n, num_labels = Y.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr))
    true_keys = rows * num_labels + Y.indices  # sorted: canonical CSR is row-major, columns sorted
    query = np.arange(n, dtype=np.int64)[:, None] * num_labels + pred
    pos = np.searchsorted(true_keys, query).clip(max=max(len(true_keys) - 1, 0))
    hits = (pred >= 0) & (true_keys[pos] == query) if len(true_keys) else np.zeros(pred.shape, bool)

    order = np.argsort(pred, axis=1, kind="stable")
    sorted_pred = np.take_along_axis(pred, order, axis=1)
    repeat = np.zeros(pred.shape, dtype=bool)
    repeat[:, 1:] = sorted_pred[:, 1:] == sorted_pred[:, :-1]
    is_repeat = np.empty_like(repeat)
    np.put_along_axis(is_repeat, order, repeat, axis=1)
    return hits & ~is_repeat


def _best_weights(Y: sp.csr_matrix, w: np.ndarray, kmax: int) -> np.ndarray:
    """``[N, kmax]``: each row's true-label weights in decreasing order (zero-padded), i.e. the
    gains of the best possible ranking."""
    n = Y.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr))
    gains = w[Y.indices]
    order = np.lexsort((-gains, rows))
    rank = np.arange(len(order)) - Y.indptr[rows[order]]
    keep = rank < kmax
    best = np.zeros((n, kmax))
    best[rows[order][keep], rank[keep]] = gains[order][keep]
    return best


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def evaluate(true_Y, pred_indices, k: int | Iterable[int] = (1, 3, 5), inv_propensity=None) -> dict:
    """P@k, nDCG@k and R@k (and PSP@k, PSnDCG@k given propensities) of top-k predictions.

    ``true_Y``: scipy sparse ``[N, L]`` (nonzeros are the relevant labels).
    ``pred_indices``: ``[N, K]`` label ids ranked best first (numpy or torch, any integer dtype,
    any device). ``-1`` pads a row with misses; a label repeated in a row counts once. With
    ``K < max(k)`` the missing ranks count as misses.
    ``inv_propensity``: ``[L]`` inverse propensities (see :func:`inv_propensity`) or ``None``.

    Returns ``{"P@1": ..., ...}``: floats in percent (0-100), means over all ``N`` rows as in
    pyxclib, so rows without labels count as 0 in every metric:

    - ``P@k`` = hits in the top k / k;
    - ``nDCG@k`` = DCG@k / ideal DCG for ``min(k, |y|)`` relevant labels, discounts
      ``1 / log2(rank + 1)``;
    - ``R@k`` = hits in the top k / ``|y|``;
    - ``PSP@k`` = sum over rows of propensity-weighted hits / sum over rows of the k largest
      weights of the true labels (the best possible ranking's score);
    - ``PSnDCG@k`` = mean of weighted DCG@k / ideal DCG, divided by the same for the best
      possible ranking (pyxclib's psndcg).
    """
    Y = _canonical_binary(true_Y)
    n, num_labels = Y.shape
    pred = _index_array(pred_indices)
    ks = _ks(k)
    kmax = ks[-1]
    if pred.shape[0] != n:
        raise ValueError(f"pred_indices has {pred.shape[0]} rows but true_Y has {n}")
    if pred.size and (pred.min() < -1 or pred.max() >= num_labels):
        raise ValueError(f"pred_indices must be in [-1, {num_labels}), got range [{pred.min()}, {pred.max()}]")
    pred = pred[:, :kmax]
    if pred.shape[1] < kmax:
        pred = np.pad(pred, ((0, 0), (0, kmax - pred.shape[1])), constant_values=-1)

    hits = _hits(Y, pred).astype(np.float64)
    num_true = np.diff(Y.indptr)
    discount = 1.0 / np.log2(np.arange(kmax) + 2.0)
    ideal_dcg = np.concatenate([[0.0], np.cumsum(discount)])  # ideal_dcg[m]: m relevant labels

    hits_at = np.cumsum(hits, axis=1)
    dcg_at = np.cumsum(hits * discount, axis=1)
    out = {}
    for kk in ks:
        out[f"P@{kk}"] = 100.0 * hits_at[:, kk - 1].mean() / kk if n else 0.0
    for kk in ks:
        idcg = ideal_dcg[np.minimum(num_true, kk)]
        out[f"nDCG@{kk}"] = 100.0 * _safe_div(dcg_at[:, kk - 1], idcg).mean() if n else 0.0
    for kk in ks:
        out[f"R@{kk}"] = 100.0 * _safe_div(hits_at[:, kk - 1], num_true).mean() if n else 0.0

    if inv_propensity is not None:
        w = np.asarray(inv_propensity, dtype=np.float64).ravel()
        if w.shape != (num_labels,):
            raise ValueError(f"inv_propensity must have {num_labels} entries, got {w.shape}")
        gains = hits * w[pred.clip(min=0)]
        best = _best_weights(Y, w, kmax)
        gain_at, best_at = np.cumsum(gains, axis=1), np.cumsum(best, axis=1)
        wdcg_at, best_dcg_at = np.cumsum(gains * discount, axis=1), np.cumsum(best * discount, axis=1)
        for kk in ks:
            den = best_at[:, kk - 1].sum()
            out[f"PSP@{kk}"] = 100.0 * gain_at[:, kk - 1].sum() / den if den > 0 else 0.0
        for kk in ks:
            idcg = ideal_dcg[np.minimum(num_true, kk)]
            den = _safe_div(best_dcg_at[:, kk - 1], idcg).sum()
            num = _safe_div(wdcg_at[:, kk - 1], idcg).sum()
            out[f"PSnDCG@{kk}"] = 100.0 * num / den if den > 0 else 0.0
    return {key: float(v) for key, v in out.items()}


def format_metrics(metrics: dict, digits: int = 2) -> str:
    """An aligned table: one row per metric name, one column per k (``"P@1"`` -> row P, col 1)."""
    table: dict[str, dict[int, float]] = {}
    other = {}
    for key, value in metrics.items():
        name, sep, kk = key.rpartition("@")
        if sep and kk.isdigit():
            table.setdefault(name, {})[int(kk)] = value
        else:
            other[key] = value
    ks = sorted({kk for row in table.values() for kk in row})
    name_w = max([len(n) for n in list(table) + list(other)] + [1])
    cell_w = max(6, digits + 5)
    lines = []
    if table:
        lines.append(" " * name_w + "".join(f"{'@' + str(kk):>{cell_w + 1}}" for kk in ks))
        for name, row in table.items():
            cells = "".join(
                f"{row[kk]:>{cell_w + 1}.{digits}f}" if kk in row else " " * (cell_w + 1) for kk in ks
            )
            lines.append(f"{name:<{name_w}}{cells}")
    for key, value in other.items():
        shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{name_w}} {shown}")
    return "\n".join(lines)

"""Exact top-k over all labels, and hard-negative mining on top of it."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import checks
from .csr import as_csr
from .autocast import match_weight_dtype
from .shortlist import shortlist_score

_ops = torch.ops.xcops


def _exclusion_csr(exclude, batch: int, name: str):
    if exclude is None:
        return None, None
    if not isinstance(exclude, (tuple, list)):
        raise TypeError(f"{name} must be a CSR tuple (indptr [B + 1], indices [nnz])")
    indptr, indices, _ = as_csr(exclude, batch, name)
    return indptr, indices


def dense_topk(
    query: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` labels with the highest score ``<query[b], weight[l]> + bias[l]``, best first.

    Exact: scores accumulate in float32 (float64 for float64 inputs). The ``[B, L]`` score
    matrix is never built: labels are scored in tiles of at most 16 MB of scores (48 MB on the
    CUDA top-k kernel) at any ``B``, and each tile's top-k is merged into a running ``[B, k]``
    result. The
    ``weight`` is read in place, never copied or extended by a bias column.

    Args:
        query: ``[B, d]`` float tensor.
        weight: ``[L, d]`` label vectors, same dtype and device, contiguous.
        k: ``1 <= k <= L``.
        exclude: optional CSR tuple ``(indptr [B + 1], indices)`` of label ids that must not be
            returned for each row (e.g. the known positives when mining negatives).
        bias: optional ``[L]`` per-label bias, same dtype and device as ``weight``.

    Returns:
        ``(values [B, k]`` in the query dtype, ``indices [B, k]`` int64). Where fewer than
        ``k`` labels remain after exclusion the last slots hold ``-inf`` and -1. A label
        scoring ``-inf`` counts as no candidate. Ranking, identical on every device: NaN
        ranks above every number (as ``torch.topk`` does); ties, NaNs included, go to the
        lower label id (-0.0 ties +0.0). Not differentiable: re-score the returned ids with
        :func:`xcops.shortlist_score` to train through them.

    Example:
        >>> import torch, xcops
        >>> values, labels = xcops.dense_topk(torch.randn(4, 16), torch.randn(1000, 16), k=5)
        >>> labels.shape
        torch.Size([4, 5])
    """
    op = "xcops.dense_topk"
    checks.dense_matrix(op, "query", query)
    checks.dense_matrix(op, "weight", weight)
    k = checks.k_within_labels(op, k, weight.shape[0])
    query, bias = match_weight_dtype(weight, query, bias)
    indptr, indices = _exclusion_csr(exclude, query.shape[0], "exclude")
    bias = None if bias is None else bias.detach()
    return _ops.dense_topk(query.detach().contiguous(), weight.detach(), k, indptr, indices, bias)


def hard_negatives(
    query: torch.Tensor,
    labels: torch.Tensor,
    positives: Tuple[torch.Tensor, torch.Tensor],
    k: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest-scoring non-positive columns of ``query @ labels.T``, best first.

    NGAME's in-batch mining: ``labels`` holds the ``P`` label embeddings of the batch and
    ``positives`` the CSR tuple ``(indptr [B + 1], indices)`` of each row's positive columns
    in ``[0, P)``; ``1 <= k <= P``. Where a row has fewer than ``k`` negatives the remaining
    slots hold index -1 and score ``-inf``. Ranked as :func:`dense_topk` ranks: NaN first, ties to the lower id.

    The selection runs on :func:`dense_topk` without gradient; the returned scores are then
    recomputed with :func:`xcops.shortlist_score`, so they are differentiable with respect to
    both ``query`` and ``labels`` (empty slots pass no gradient).

    Returns:
        ``(scores [B, k], indices [B, k])``.

    Example:
        >>> import torch, xcops
        >>> q, lab = torch.randn(3, 8), torch.randn(6, 8)
        >>> pos = (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2]))
        >>> scores, idx = xcops.hard_negatives(q, lab, pos, k=2)
        >>> bool((idx[0] != 0).all())
        True
    """
    op = "xcops.hard_negatives"
    checks.dense_matrix(op, "query", query)
    checks.dense_matrix(op, "labels", labels)
    k = checks.hard_negatives_k(op, k, labels)
    if not isinstance(positives, (tuple, list)):
        raise TypeError("positives must be a CSR tuple (indptr [B + 1], indices [nnz])")
    indptr, indices = _exclusion_csr(positives, query.shape[0], "positives")
    (query_c,) = match_weight_dtype(labels, query)
    _, negatives = _ops.hard_negatives(query_c.detach().contiguous(), labels.detach(), indptr, indices, k)
    scores = shortlist_score(query, labels, negatives)
    return scores.masked_fill(negatives < 0, float("-inf")), negatives


@torch.library.register_fake("xcops::dense_topk")
def _dense_topk_fake(query, weight, k, exclude_indptr=None, exclude_indices=None, bias=None):
    checks.dense_topk_args("xcops.dense_topk", query, weight, k, exclude_indptr, exclude_indices, bias)
    rows = query.shape[0]
    return query.new_empty(rows, k), query.new_empty(rows, k, dtype=torch.int64)


@torch.library.register_fake("xcops::hard_negatives")
def _hard_negatives_fake(query, labels, positives_indptr, positives_indices, k):
    checks.hard_negatives_args("xcops.hard_negatives", query, labels, positives_indptr, positives_indices, k)
    rows = query.shape[0]
    return query.new_empty(rows, k), query.new_empty(rows, k, dtype=torch.int64)

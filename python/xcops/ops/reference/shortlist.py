"""References of the shortlist ops."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..csr import Shortlist, as_csr


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _entry_scores(query, weight, indptr, indices, bias):
    """fp32 (fp64 for fp64) scores of every CSR entry, their rows, and a validity mask."""
    acc = _accumulation_dtype(query.dtype)
    rows = torch.repeat_interleave(
        torch.arange(query.shape[0], device=query.device), (indptr[1:] - indptr[:-1]).long()
    )
    valid = indices >= 0
    labels = indices.long().clamp_min(0)
    scores = (query[rows].to(acc) * weight[labels].to(acc)).sum(-1)
    if bias is not None:
        scores = scores + bias[labels].to(acc)
    return torch.where(valid, scores, torch.zeros_like(scores)), rows, valid


def shortlist_score(
    query: torch.Tensor,
    weight: torch.Tensor,
    shortlist: Shortlist,
    bias: Optional[torch.Tensor] = None,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Reference of :func:`xcops.shortlist_score` (``sparse_grad`` is accepted and ignored)."""
    indptr, indices, padded_shape = as_csr(shortlist, query.shape[0])
    scores = _entry_scores(query, weight, indptr, indices, bias)[0].to(query.dtype)
    return scores.view(padded_shape) if padded_shape is not None else scores


def shortlist_topk(
    query: torch.Tensor,
    weight: torch.Tensor,
    shortlist: Shortlist,
    k: int,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`xcops.shortlist_topk`: ties broken by the lower label id."""
    indptr, indices, _ = as_csr(shortlist, query.shape[0])
    with torch.no_grad():
        scores, rows, valid = _entry_scores(query, weight, indptr, indices, bias)
    batch = query.shape[0]
    lengths = (indptr[1:] - indptr[:-1]).long()
    width = max(int(lengths.max()) if batch else 0, k)
    columns = torch.arange(indices.numel(), device=query.device) - indptr[:-1].long()[rows]
    grid_scores = torch.full((batch, width), float("-inf"), dtype=scores.dtype, device=query.device)
    grid_labels = torch.full((batch, width), -1, dtype=torch.int64, device=query.device)
    grid_valid = torch.zeros((batch, width), dtype=torch.bool, device=query.device)
    grid_scores[rows, columns] = scores
    grid_labels[rows, columns] = indices.long()
    grid_valid[rows, columns] = valid
    grid_labels[~grid_valid] = -1
    grid_scores[~grid_valid] = float("-inf")
    # Stable sorts, least significant key first: label ascending, score descending, NaN
    # first (above every number, as torch.topk ranks it), valid entries before empty slots.
    order = torch.argsort(grid_labels, dim=1, stable=True)
    for key in (-grid_scores, (~torch.isnan(grid_scores)).to(torch.int8), (~grid_valid).to(torch.int8)):
        order = order.gather(1, torch.argsort(key.gather(1, order), dim=1, stable=True))
    top = order[:, :k]
    return grid_scores.gather(1, top).to(query.dtype), grid_labels.gather(1, top)

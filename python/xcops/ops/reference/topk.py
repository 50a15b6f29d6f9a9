"""References of dense_topk and hard_negatives: the full score matrix, masked, then sorted.

The ranking rule of every xcops top-k: higher score first, NaN above every number (as
``torch.topk`` ranks it), ties (NaNs included) to the lower label id. A stable descending
sort is exactly that rule.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _mask_csr(scores: torch.Tensor, csr) -> torch.Tensor:
    indptr, indices = csr
    rows = torch.repeat_interleave(
        torch.arange(scores.shape[0], device=scores.device), (indptr[1:] - indptr[:-1]).long()
    )
    keep = indices >= 0
    masked = scores.clone()
    masked[rows[keep], indices[keep].long()] = float("-inf")
    return masked


def _ranked(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.sort(scores, dim=1, descending=True, stable=True)
    values, indices = values[:, :k], indices[:, :k]
    return values, indices.masked_fill(torch.isneginf(values), -1)


def dense_topk(
    query: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`xcops.dense_topk`."""
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    scores = query.to(acc) @ weight.to(acc).T
    if bias is not None:
        scores = scores + bias.to(acc)
    if exclude is not None:
        scores = _mask_csr(scores, exclude)
    values, indices = _ranked(scores, k)
    return values.to(query.dtype), indices


def hard_negatives(query, labels, positives, k):
    """Reference of :func:`xcops.hard_negatives` (differentiable through the scores)."""
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    scores = _mask_csr(query.to(acc) @ labels.to(acc).T, positives)
    values, indices = _ranked(scores, k)
    return values.to(query.dtype), indices

"""``HardNegativeTripletLoss``: NGAME's triplet margin loss over the hardest in-batch negatives."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..losses import triplet_ohnm


class HardNegativeTripletLoss(nn.Module):
    """Triplet margin loss with online hard negative mining (the module form of
    :func:`xcops.losses.triplet_ohnm`, which defines the maths).

    ``forward(query [B, d], labels [P, d], positive [B], positives)`` compares each query's
    similarity to its sampled positive ``labels[positive[b]]`` with its ``k`` hardest
    negatives: the highest-scoring columns of ``labels`` outside the row's CSR ``positives``
    ``(indptr [B + 1], indices)``, found by :func:`xcops.hard_negatives` without building the
    ``[B, P]`` score matrix. Returns the mean of ``max(0, s_neg - s_pos + margin)`` over rows
    and negative slots; with ``temperature`` each slot is weighted by the softmax of the
    negatives' scores over the row. Inputs are usually L2-normalised embeddings.

    Args:
        margin: the margin between positive and negative similarity.
        k: hardest negatives per query.
        temperature: ``None`` for uniform weights, else the softmax temperature.
        violators_only: the softmax over the violating negatives only (see
            :func:`xcops.losses.triplet_ohnm`).

    Example:
        >>> import torch
        >>> from xcops.nn import HardNegativeTripletLoss
        >>> criterion = HardNegativeTripletLoss(margin=0.3, k=2)
        >>> query = torch.nn.functional.normalize(torch.randn(3, 8), dim=1).requires_grad_()
        >>> labels = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
        >>> positive = torch.arange(3)                          # row b's positive is column b
        >>> positives = (torch.arange(4), torch.arange(3))      # CSR: and it is its only one
        >>> loss = criterion(query, labels, positive, positives)
        >>> loss.backward()
        >>> loss.dim(), query.grad.shape
        (0, torch.Size([3, 8]))
    """

    def __init__(self, margin: float, k: int, temperature: Optional[float] = None, violators_only: bool = False):
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be None or > 0, got {temperature!r}")
        self.margin = margin
        self.k = k
        self.temperature = temperature
        self.violators_only = violators_only

    def forward(self, query: torch.Tensor, labels: torch.Tensor, positive: torch.Tensor,
                positives: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return triplet_ohnm(query, labels, positive, positives, self.k, self.margin, self.temperature,
                            self.violators_only)

    def extra_repr(self) -> str:
        text = f"margin={self.margin}, k={self.k}, temperature={self.temperature}"
        return text + ", violators_only=True" if self.violators_only else text

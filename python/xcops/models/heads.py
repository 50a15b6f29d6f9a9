"""Classifier heads built on the fused shortlist ops."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..ops import reference
from ..ops.csr import Shortlist
from ..ops.shortlist import shortlist_score, shortlist_topk


class ShortlistClassifier(nn.Module):
    """One vector and one bias per label, scored only on a per-query shortlist.

    ``forward(query, shortlist)`` gives the ``[B, K]`` logits of the shortlisted labels;
    ``topk(query, shortlist, k)`` ranks them for inference. With ``sparse_grad=True`` the
    gradients of ``weight`` and ``bias`` are sparse rows, for ``torch.optim.SparseAdam``.
    ``fused=False`` runs the same maths with the plain-PyTorch reference ops, to compare speed
    on identical training.
    """

    def __init__(self, num_labels: int, dim: int, sparse_grad: bool = False, fused: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_labels, dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.sparse_grad = sparse_grad
        self.fused = fused

    def forward(self, query: torch.Tensor, shortlist: Shortlist) -> torch.Tensor:
        if self.fused:
            return shortlist_score(query, self.weight, shortlist, self.bias, self.sparse_grad)
        return reference.shortlist_score(query, self.weight, shortlist, self.bias)

    @torch.no_grad()
    def init_bias_from_label_rates(self, labels) -> None:
        """Start each label's bias at the logit of its training rate (``labels``: scipy sparse
        ``[N, L]``). Adam moves a bias by about lr per step, so from 0 it would take hundreds of
        steps to reach the strongly negative logits of rare labels, steps in which the rest of
        the network learns to predict "negative" instead of learning from the input."""
        counts = torch.from_numpy(labels.tocsc().getnnz(0)).to(self.bias.dtype)
        self.bias.copy_(torch.logit((counts + 0.5) / (labels.shape[0] + 1.0)).to(self.bias.device))

    @torch.no_grad()
    def topk(self, query: torch.Tensor, shortlist: Shortlist, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        op = shortlist_topk if self.fused else reference.shortlist_topk
        return op(query, self.weight, shortlist, k, self.bias)

    def extra_repr(self) -> str:
        labels, dim = self.weight.shape
        return f"num_labels={labels}, dim={dim}, sparse_grad={self.sparse_grad}, fused={self.fused}"


def masked_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor,
                           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean binary cross-entropy over the shortlist slots where ``mask`` is true."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / mask.sum().clamp_min(1)

"""Helpers shared by the models' classifier heads (the heads themselves are
:class:`xcops.nn.ShortlistLinear`)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


@torch.no_grad()
def init_bias_from_label_rates(bias: torch.Tensor, labels) -> None:
    """Start each label's bias at the logit of its training rate (``labels``: scipy sparse
    ``[N, L]``). Adam moves a bias by about lr per step, so from 0 it would take hundreds of
    steps to reach the strongly negative logits of rare labels, steps in which the rest of
    the network learns to predict "negative" instead of learning from the input."""
    counts = torch.from_numpy(labels.tocsc().getnnz(0)).to(bias.dtype)
    bias.copy_(torch.logit((counts + 0.5) / (labels.shape[0] + 1.0)).to(bias.device))


def masked_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor,
                           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean binary cross-entropy over the shortlist slots where ``mask`` is true."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / mask.sum().clamp_min(1)


def shortlist_targets(shortlist: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor,
                      num_labels: int) -> torch.Tensor:
    """``[B, K]`` bool: whether ``shortlist[b, j]`` is one of row b's ``labels`` (CSR ``rows``,
    ``labels``), by binary search in the sorted ``row * L + label`` keys of the positives:
    O(B K log P), where ``torch.isin`` sorted the B K slot keys too."""
    positives = torch.sort(rows * num_labels + labels).values
    keys = torch.arange(len(shortlist), device=shortlist.device).unsqueeze(1) * num_labels + shortlist
    if positives.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    where = torch.searchsorted(positives, keys).clamp_max(positives.numel() - 1)
    return positives[where] == keys

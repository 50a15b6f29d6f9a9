"""Losses of the XC models built on the xcops ops."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .ops.dense_topk import hard_negatives
from .ops.shortlist import shortlist_score


def triplet_ohnm(
    query: torch.Tensor,
    labels: torch.Tensor,
    positive: torch.Tensor,
    positives: Tuple[torch.Tensor, torch.Tensor],
    k: int = 10,
    margin: float = 0.3,
    temperature: Optional[float] = None,
    violators_only: bool = False,
) -> torch.Tensor:
    """NGAME's triplet margin loss with online hard negative mining.

    For each query row ``b`` with anchor similarity ``s_p = <query[b], labels[positive[b]]>``
    and its ``k`` hardest in-batch negatives ``s_n`` (the highest-scoring columns of
    ``labels`` that are not among the row's ``positives``, found by
    :func:`xcops.hard_negatives`), the loss is the mean over rows and negative slots of
    ``max(0, s_n - s_p + margin)``; with ``temperature`` each slot is weighted by
    ``softmax(s_n / temperature)`` over the row's negatives, as NGAME does to focus on the
    hardest ones. With ``violators_only`` that softmax runs over the violators alone (the
    negatives with a positive loss; NGAME's "aggressive" mode), so a row's weights sum to 1
    over the negatives that still need pushing away. Slots without a negative contribute 0.
    Inputs are usually L2-normalised.

    Args:
        query: ``[B, d]`` query embeddings.
        labels: ``[P, d]`` embeddings of the labels in the batch.
        positive: ``[B]`` the column of each row's sampled positive.
        positives: CSR ``(indptr [B + 1], indices)`` of all positive columns of each row
            (multi-positive aware: none of them is used as a negative).
    """
    batch = query.shape[0]
    # bf16/fp16 scores are compared in float32; float64 stays float64 (gradcheck needs it).
    acc = torch.promote_types(query.dtype, torch.float32)
    anchor = shortlist_score(query, labels, positive.view(batch, 1)).to(acc)
    # A batch with fewer than k label columns mines all of them; the missing slots count as 0
    # in the mean over k, as slots without a negative always do.
    negative_scores, negatives = hard_negatives(query, labels, positives, min(k, max(labels.shape[0], 1)))
    present = negatives >= 0
    negative_scores = negative_scores.to(acc).masked_fill(~present, 0.0)
    loss = torch.relu(negative_scores - anchor + margin) * present
    if temperature is not None:
        weighted = present & (loss > 0) if violators_only else present
        logits = (negative_scores / temperature).masked_fill(~weighted, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # rows with nothing weighted: 0
        loss = loss * weights
    return loss.sum() / max(batch * k, 1)

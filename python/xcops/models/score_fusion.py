"""Ranking candidates by a fitted mix of two scores: NGAME's inference, and SyncXML's fusion
with TF-IDF label centroids (which mixes the logs of its two scores).

In NGAME, a query's candidates are the union of its nearest label embeddings and its nearest classifier
vectors (both by :func:`xcops.dense_topk`). Each candidate then gets both of its scores
exactly, the cosine to the label embedding ``e`` and the classifier's cosine ``c``, so a label
found by only one index is not scored 0 by the other. The ranking score is
``alpha * e + (1 - alpha) * c``.

``alpha`` is fitted, not fixed: :func:`fit_alpha` tries a grid of values on training rows that
the model never trained on and keeps the one with the best mean of P@1, P@3 and P@5.
A grid over one weight is enough, as only the ratio of the two weights changes the ranking,
and it optimises the metric that is reported rather than a calibration loss. Ties go to the
value nearest 0.5, so a flat objective (tiny data) keeps both scores.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

ALPHAS = tuple(i / 20 for i in range(21))  # the grid of fit_alpha


def union_candidates(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``[B, K1 + K2]`` label ids of both ``[B, K]`` lists, each id once per row, -1 elsewhere."""
    merged = torch.cat([first, second], 1).sort(1).values
    repeated = torch.zeros_like(merged, dtype=torch.bool)
    repeated[:, 1:] = merged[:, 1:] == merged[:, :-1]
    return merged.masked_fill(repeated, -1)


def fused_scores(alpha: float, embedding_scores: torch.Tensor, classifier_scores: torch.Tensor,
                 candidates: torch.Tensor) -> torch.Tensor:
    """``alpha * e + (1 - alpha) * c`` per candidate, ``-inf`` at padding."""
    scores = alpha * embedding_scores.float() + (1 - alpha) * classifier_scores.float()
    return scores.masked_fill(candidates < 0, float("-inf"))


def relevant(candidates: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``[B, K]`` bool: whether each candidate is a positive of its row (CSR ``indptr, indices``
    over the same B rows)."""
    rows = torch.arange(len(candidates), device=candidates.device)
    truth = torch.repeat_interleave(rows, (indptr[1:] - indptr[:-1]).to(candidates.device)) * num_labels
    truth = truth + indices.to(candidates.device)
    return torch.isin(rows.unsqueeze(1) * num_labels + candidates, truth) & (candidates >= 0)


def mean_precision(scores: torch.Tensor, hits: torch.Tensor, ks=(1, 3, 5)) -> float:
    """The mean over ``ks`` of P@k of ranking each row's candidates by ``scores``."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    found = hits.gather(1, top).float()
    return sum(float(found[:, :k].sum(1).mean()) / k for k in ks) / len(ks)


def fit_alpha(embedding_scores: torch.Tensor, classifier_scores: torch.Tensor, candidates: torch.Tensor,
              hits: torch.Tensor, total: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
    """The ``alpha`` of :data:`ALPHAS` with the best mean P@1/3/5 (see the module docstring).
    ``total`` combines the ``[len(ALPHAS)]`` objectives of this process's rows with the other
    processes' (a sum over the ranks of a distributed run), so that all of them pick the same."""
    objectives = torch.tensor([mean_precision(fused_scores(alpha, embedding_scores, classifier_scores, candidates),
                                              hits) for alpha in ALPHAS], dtype=torch.float64)
    if total is not None:
        objectives = total(objectives)
    return max(zip(ALPHAS, objectives.tolist()), key=lambda pair: (pair[1], -abs(pair[0] - 0.5)))[0]

"""Ranking candidates by a fitted mix of scores: NGAME's inference, and SyncXML's fusion with
TF-IDF label centroids and training-title neighbours (which mixes the logs of its scores).

In NGAME, a query's candidates are the union of its nearest label embeddings and its nearest classifier
vectors (both by :func:`xcops.dense_topk`). Each candidate then gets both of its scores
exactly, the cosine to the label embedding ``e`` and the classifier's cosine ``c``, so a label
found by only one index is not scored 0 by the other. The ranking score is
``alpha * e + (1 - alpha) * c``.

The weights are fitted, not fixed: :func:`fit_weights` (:func:`fit_alpha` for two scores) tries
a grid of them on training rows that the model never trained on and keeps the one with the
best mean of P@1, P@3 and P@5. A grid over weights that sum to 1 is enough, as only their
ratios change the ranking, and it optimises the metric that is reported rather than a
calibration loss. Ties go to the mix nearest an even one, so a flat objective (tiny data)
keeps every score.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

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
    return mixed_scores((alpha, 1 - alpha), (embedding_scores, classifier_scores), candidates)


def mixed_scores(weights: Sequence[float], terms: Sequence[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """``sum_i weights[i] * terms[i]`` per candidate, ``-inf`` at padding."""
    scores = sum(weight * term.float() for weight, term in zip(weights, terms))
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
    return fit_weights((embedding_scores, classifier_scores), candidates, hits, total)[0]


def weight_grid(num_terms: int) -> list[tuple[float, ...]]:
    """Every way to split 1 into ``num_terms`` multiples of 1/20 (the simplex of :data:`ALPHAS`)."""
    steps = len(ALPHAS) - 1
    splits = [split for split in itertools.product(range(steps + 1), repeat=num_terms - 1) if sum(split) <= steps]
    return [tuple(i / steps for i in split) + ((steps - sum(split)) / steps,) for split in splits]


def fit_weights(terms: Sequence[torch.Tensor], candidates: torch.Tensor, hits: torch.Tensor,
                total: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> tuple[float, ...]:
    """The weights of :func:`mixed_scores` (a point of :func:`weight_grid`) with the best mean
    P@1/3/5 of ranking the candidates by the mix; ties go to the mix nearest an even one.
    ``total`` sums the objectives over the processes of a distributed run, as in :func:`fit_alpha`."""
    grid = weight_grid(len(terms))
    objectives = torch.tensor([mean_precision(mixed_scores(weights, terms, candidates), hits) for weights in grid],
                              dtype=torch.float64)
    if total is not None:
        objectives = total(objectives)
    even = 1 / len(terms)
    return max(zip(grid, objectives.tolist()),
               key=lambda pair: (pair[1], -sum((w - even) ** 2 for w in pair[0])))[0]

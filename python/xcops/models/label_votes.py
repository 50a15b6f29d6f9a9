"""Label votes of a title's nearest training titles: what a kNN classifier predicts.

Each candidate label gets the softmax-weighted share of the ``k`` nearest training titles that
carry it. :class:`~xcops.models.title_neighbours.TitleNeighbours` finds the neighbours in the
model's query space, :class:`~xcops.models.tfidf_neighbours.TfidfNeighbours` by the TF-IDF of
their exact words; this base holds what they share, the training titles' labels.

The labels are kept as the sorted keys ``title * L + label``, so a (candidate, neighbour) pair is
one binary search. A neighbour row of -1 (fewer than ``k`` found) carries no label.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelVotes(nn.Module):
    """The labels of ``num_titles`` training titles (``num_pairs`` title-label pairs), and the
    votes of ``k`` of them with softmax weights at ``temperature``."""

    def __init__(self, num_pairs: int, num_labels: int, k: int, temperature: float):
        super().__init__()
        self.num_labels = num_labels
        self.k = k
        self.temperature = temperature
        self.register_buffer("keys", torch.zeros(num_pairs, dtype=torch.int64))

    def set_labels(self, labels) -> None:
        """Keys of the training titles' ``labels`` (scipy sparse ``[N, L]``, ``num_pairs`` nonzeros)."""
        labels = labels.tocsr()
        labels.sort_indices()
        # CSR with sorted columns: row-major keys are already in ascending order.
        rows = torch.repeat_interleave(torch.arange(labels.shape[0]), torch.from_numpy(labels.getnnz(1)).long())
        self.keys.copy_(rows * labels.shape[1] + torch.from_numpy(labels.indices).long())

    def softmax(self, cosines: torch.Tensor) -> torch.Tensor:
        return torch.softmax(cosines / self.temperature, dim=1)

    def votes(self, nearest: tuple[torch.Tensor, torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` votes in [0, 1] of the neighbours ``nearest = (weights, titles)``, both
        ``[B, k]``: the summed weights of those that carry each candidate; 0 at padding
        candidates (-1)."""
        weights, titles = nearest
        keys = titles.unsqueeze(1) * self.num_labels + candidates.clamp_min(0).unsqueeze(2)  # [B, C, k]
        where = torch.searchsorted(self.keys, keys).clamp_max(max(self.keys.numel() - 1, 0))
        carried = self.keys[where] == keys if self.keys.numel() else torch.zeros_like(keys, dtype=torch.bool)
        votes = (carried * (titles >= 0).unsqueeze(1) * weights.unsqueeze(1)).sum(2)
        return votes.masked_fill(candidates < 0, 0.0)

    def labels_of(self, titles: torch.Tensor) -> torch.Tensor:
        """``[B, T * W]`` the labels of training titles ``titles [B, T]`` (rows of the index, -1
        for none), -1 padded, where ``W`` is the most labels any of them carries; a label carried
        by several of a row's titles appears once for each."""
        first = torch.searchsorted(self.keys, titles * self.num_labels)
        counts = (torch.searchsorted(self.keys, (titles + 1) * self.num_labels) - first) * (titles >= 0)
        width = int(counts.max()) if counts.numel() else 0
        slots = torch.arange(width, device=titles.device)
        where = (first.unsqueeze(2) + slots).clamp_max(max(self.keys.numel() - 1, 0))
        labels = self.keys[where] % self.num_labels if self.keys.numel() else torch.zeros_like(where)
        return labels.masked_fill(slots >= counts.unsqueeze(2), -1).flatten(1)

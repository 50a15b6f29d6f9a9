"""Label votes of a title's nearest training titles, in the model's own query space
(:class:`~xcops.models.label_votes.LabelVotes`).

A deep XC model fits its training titles far better than it generalises (the yso-finna-en
SyncXML model: 62% P@1 on training titles, 35% on test ones). A test title close to training
titles in the encoder's space can borrow their labels, which is what a kNN classifier does:
each candidate label gets the softmax-weighted share of the ``k`` nearest training titles
that carry it. SyncXML mixes that vote into its ranking (:mod:`xcops.models.syncxml`), and can
add the labels of the nearest few titles to the candidates its own shortlist found.

Query vectors are projected onto their top principal directions (``dim``, fitted on a sample)
and normalised, so that :func:`xcops.dense_topk` searches all training titles exactly at a
fraction of the cost of the full query width.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

from ..ops import dense_topk
from ..progress import progress_bar
from .label_votes import LabelVotes

PCA_SAMPLE = 65536  # rows the principal directions are fitted on


class TitleNeighbours(LabelVotes):
    """Scores ``[B, C]`` candidate labels of ``[B, D]`` query vectors by the labels of their
    ``k`` nearest training titles. Build it with :meth:`build`; the buffers go into checkpoints."""

    def __init__(self, input_dim: int, dim: int, num_titles: int, num_pairs: int, num_labels: int, k: int = 20,
                 temperature: float = 0.1):
        super().__init__(num_pairs, num_labels, k, temperature)
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("basis", torch.zeros(input_dim, dim))
        self.register_buffer("vectors", torch.zeros(num_titles, dim))

    @classmethod
    @torch.no_grad()
    def build(cls, encode: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor, labels, dim: int,
              k: int = 20, temperature: float = 0.1, seed: int = 0, batch_size: int = 1024,
              progress: bool = False) -> "TitleNeighbours":
        """From the training titles ``input_ids [N, T]``, their ``labels`` (scipy sparse
        ``[N, L]``) and ``encode`` (token ids -> query vectors ``[B, D]``). Titles are encoded
        twice, a sample for the projection and then all of them in batches, so that no ``[N, D]``
        table is held. Deterministic for a ``seed``. ``progress`` shows a bar over the second pass
        (minutes for the 500k titles of yso-finna-en on 2 CPU cores)."""
        if len(input_ids) == 0:
            raise ValueError("TitleNeighbours.build needs at least one training title, got none")
        labels = labels.tocsr()
        sample = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(seed))[:PCA_SAMPLE]
        sample = torch.cat([encode(chunk).float() for chunk in input_ids[sample.sort().values].split(batch_size)])
        dim = min(dim, sample.shape[1])
        module = cls(sample.shape[1], dim, len(input_ids), labels.nnz, labels.shape[1], k, temperature)
        module.to(sample.device)
        mean = sample.mean(0)
        centred = (sample - mean).double()
        # eigh returns ascending eigenvalues: the last ``dim`` eigenvectors are the top directions.
        _, eigenvectors = torch.linalg.eigh(centred.T @ centred)
        module.mean.copy_(mean)
        module.basis.copy_(eigenvectors[:, -dim:].flip(1).float())
        starts = range(0, len(input_ids), batch_size)
        for start in progress_bar(starts, desc="indexing training titles", unit="batch", disable=not progress):
            module.vectors[start : start + batch_size] = module.project(encode(input_ids[start : start + batch_size]))
        module.set_labels(labels)
        return module

    @property
    def num_titles(self) -> int:
        return len(self.vectors)

    def project(self, queries: torch.Tensor) -> torch.Tensor:
        return F.normalize((queries.float() - self.mean) @ self.basis, dim=1)

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights, titles)``, both ``[B, k]``: the rows of the ``k`` nearest training titles,
        nearest first, and the softmax of their cosines over ``temperature``."""
        cosines, titles = dense_topk(self.project(queries), self.vectors, min(self.k, len(self.vectors)))
        return self.softmax(cosines), titles

    def forward(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` votes in [0, 1]: the summed weights of the neighbours that carry each
        candidate; 0 at padding candidates (-1)."""
        if len(self.vectors) == 0 or candidates.shape[1] == 0:
            return torch.zeros(candidates.shape, device=candidates.device)
        return self.votes(self.nearest(queries), candidates)

"""TF-IDF label centroids: the cosine between a title's TF-IDF vector and the PIFA vector of a
label (the normalised sum of the TF-IDF vectors of its training titles), for given
(title, label) candidate pairs.

This needs no training and keys on exact words, rare ones included, which is where a deep
encoder trained on few titles per label generalises worst: the yso-finna-en SyncXML model
ranks 62% of training titles right at P@1 but 35% of test titles, and on a 50k-title subset
the centroids alone (16.6 P@1) beat it (13.3). SyncXML mixes the two
(:mod:`xcops.models.syncxml`).

PIFA is kept as the sorted keys ``label * V + word`` of its nonzeros and their values, so a
pair's cosine is one binary search per word of the title: O(K T log nnz) for K candidates of a
T-token title, with no ``[B, L]`` or ``[L, V]`` dense table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .label_features import inverse_document_frequency, pifa, tfidf, token_counts


class TfidfCentroids(nn.Module):
    """Scores ``[B, K]`` candidate labels of ``[B, T]`` token ids by TF-IDF cosine to their
    centroids. Build it with :meth:`from_training_set`; the buffers go into checkpoints."""

    def __init__(self, vocab_size: int, num_nonzeros: int, pad_id: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.register_buffer("idf", torch.zeros(vocab_size))
        self.register_buffer("keys", torch.zeros(num_nonzeros, dtype=torch.int64))
        self.register_buffer("values", torch.zeros(num_nonzeros))

    @classmethod
    def from_training_set(cls, input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int) -> "TfidfCentroids":
        """From the training ``input_ids [N, T]`` and ``labels`` (scipy sparse ``[N, L]``), with the
        same idf as the clustering's PIFA."""
        counts = token_counts(input_ids, vocab_size, pad_id)
        idf = inverse_document_frequency(counts)
        centroids = pifa(labels, tfidf(counts, idf)).tocsr()
        centroids.sort_indices()
        rows = np.repeat(np.arange(centroids.shape[0], dtype=np.int64), np.diff(centroids.indptr))
        module = cls(vocab_size, centroids.nnz, pad_id)
        module.idf.copy_(torch.from_numpy(idf))
        # CSR with sorted columns: row-major keys are already in ascending order.
        module.keys.copy_(torch.from_numpy(rows * vocab_size + centroids.indices.astype(np.int64)))
        module.values.copy_(torch.from_numpy(centroids.data.astype(np.float32)))
        return module

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` cosines in [0, 1]; 0 at padding candidates (-1) and for titles with no
        known word."""
        ids = input_ids.clamp(0, self.vocab_size - 1)
        weight = self.idf[ids] * (input_ids != self.pad_id)  # a repeated word adds up to tf * idf
        same = ids.unsqueeze(2) == ids.unsqueeze(1)
        norm = (weight.unsqueeze(2) * same * weight.unsqueeze(1)).sum((1, 2)).sqrt().clamp_min(1e-12)
        if self.keys.numel() == 0:
            return torch.zeros(candidates.shape, device=candidates.device)
        keys = candidates.clamp_min(0).unsqueeze(2) * self.vocab_size + ids.unsqueeze(1)  # [B, K, T]
        where = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        found = self.values[where] * (self.keys[where] == keys)
        scores = (found * weight.unsqueeze(1)).sum(2) / norm.unsqueeze(1)
        return scores.masked_fill(candidates < 0, 0.0)

"""TF-IDF label centroids: the cosine between a title's TF-IDF vector and the PIFA vector of a
label (the normalised sum of the TF-IDF vectors of its training titles), for given
(title, label) candidate pairs.

This needs no training and keys on exact words, rare ones included, which is where a deep
encoder trained on few titles per label generalises worst: the yso-finna-en SyncXML model
ranks 62% of training titles right at P@1 but 35% of test titles, and on a 50k-title subset
the centroids alone (16.6 P@1) beat it (13.3). SyncXML mixes the two
(:mod:`xcops.models.syncxml`). The features are those of a
:class:`~xcops.models.tfidf_vocabulary.TfidfVocabulary` (tokens, optionally with bigrams).

PIFA is kept as the sorted keys ``label * F + feature`` of its nonzeros and their values, so a
pair's cosine is one binary search per feature of the title: O(K T log nnz) for K candidates of
a T-token title, with no ``[B, L]`` or ``[L, F]`` dense table. :meth:`TfidfCentroids.top_labels`
ranks all labels instead, by one sparse product with the transposed centroids.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .label_features import pifa
from .tfidf_vocabulary import TfidfVocabulary, sparse_row_topk


class TfidfCentroids(nn.Module):
    """Scores ``[B, K]`` candidate labels of ``[B, T]`` token ids by TF-IDF cosine to their
    centroids. Build it with :meth:`from_training_set`; the buffers go into checkpoints."""

    def __init__(self, vocab_size: int, num_nonzeros: int, pad_id: int = 0, num_bigrams: int = 0):
        super().__init__()
        self.vocabulary = TfidfVocabulary(vocab_size, num_bigrams, pad_id)
        self.register_buffer("keys", torch.zeros(num_nonzeros, dtype=torch.int64))
        self.register_buffer("values", torch.zeros(num_nonzeros))
        self._by_feature: Optional[sp.csr_matrix] = None

    @classmethod
    def from_training_set(cls, input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int,
                          bigrams: bool = False, unknown_id: Optional[int] = None) -> "TfidfCentroids":
        """From the training ``input_ids [N, T]`` and ``labels`` (scipy sparse ``[N, L]``), with
        the idf of those titles; ``bigrams`` and ``unknown_id`` as in
        :meth:`TfidfVocabulary.build <xcops.models.tfidf_vocabulary.TfidfVocabulary.build>`."""
        vocabulary = TfidfVocabulary.build(input_ids, vocab_size, pad_id, bigrams, unknown_id)
        centroids = pifa(labels, vocabulary.tfidf(input_ids)).tocsr()
        centroids.sort_indices()
        rows = np.repeat(np.arange(centroids.shape[0], dtype=np.int64), np.diff(centroids.indptr))
        module = cls(vocab_size, centroids.nnz, pad_id, len(vocabulary.bigrams))
        module.vocabulary.load_state_dict(vocabulary.state_dict())
        # CSR with sorted columns: row-major keys are already in ascending order.
        module.keys.copy_(torch.from_numpy(rows * vocabulary.num_features + centroids.indices.astype(np.int64)))
        module.values.copy_(torch.from_numpy(centroids.data.astype(np.float32)))
        return module

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` cosines in [0, 1]; 0 at padding candidates (-1) and for titles with no
        known feature."""
        features = self.vocabulary.features(input_ids)
        weight = self.vocabulary.weights(features)
        if self.keys.numel() == 0:
            return torch.zeros(candidates.shape, device=candidates.device)
        keys = candidates.clamp_min(0).unsqueeze(2) * self.vocabulary.num_features + features.clamp_min(0).unsqueeze(1)
        where = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        found = self.values[where] * (self.keys[where] == keys)
        scores = (found * weight.unsqueeze(1)).sum(2)
        return scores.masked_fill(candidates < 0, 0.0)

    def top_labels(self, input_ids: torch.Tensor, n: int) -> torch.Tensor:
        """``[B, n]`` the labels of the ``n`` centroids nearest to each title over all labels,
        nearest first (ties to the lower label), -1 where fewer share a feature with it."""
        _, labels = sparse_row_topk(self.vocabulary.tfidf(input_ids) @ self.by_feature(), n)
        return labels.to(input_ids.device)

    def by_feature(self) -> sp.csr_matrix:
        """The centroids as a scipy ``[F, L']`` CSR (``L'``: up to the last label with a centroid),
        made once from the buffers."""
        if self._by_feature is None:
            keys, features = self.keys.cpu().numpy(), self.vocabulary.num_features
            labels = int(keys[-1] // features) + 1 if len(keys) else 0
            self._by_feature = sp.csr_matrix((self.values.cpu().numpy(), (keys % features, keys // features)),
                                             shape=(features, labels))
        return self._by_feature

    def _load_from_state_dict(self, *args, **kwargs):
        self._by_feature = None
        super()._load_from_state_dict(*args, **kwargs)

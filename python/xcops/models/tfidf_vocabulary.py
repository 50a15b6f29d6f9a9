"""The TF-IDF features of titles: their token ids and, optionally, the bigrams of adjacent tokens
seen in at least two training titles, with the idf of the training titles.

Bigrams are what the tree baselines of yso-finna-en use (Omikuji and PECOS on TF-IDF 1-2 grams);
on that set they lift the TF-IDF label-centroid ranking from 27.8 to 29.3 P@1 (10,000 test
titles over all labels, bench/RESULTS.md). The unknown-word id stands for unrelated rare words:
it gets no weight, and no bigram holds it.

Feature ``f < vocab_size`` is token ``f``; feature ``vocab_size + i`` is the ``i``-th kept
bigram, kept as the sorted codes ``first * vocab_size + second``, so that finding a title's
bigrams is one binary search each and no ``[V, V]`` table exists.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .label_features import inverse_document_frequency, row_normalize, token_counts

MIN_BIGRAM_TITLES = 2  # as the baselines' min_df 2


class TfidfVocabulary(nn.Module):
    """Maps ``[B, T]`` token ids to ``[B, T + T - 1]`` feature ids (-1 where none) and their
    unit-length TF-IDF weights. Build it with :meth:`build`; the buffers go into checkpoints."""

    def __init__(self, vocab_size: int, num_bigrams: int = 0, pad_id: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.register_buffer("idf", torch.zeros(vocab_size + num_bigrams))
        self.register_buffer("bigrams", torch.zeros(num_bigrams, dtype=torch.int64))

    @property
    def num_features(self) -> int:
        return len(self.idf)

    @classmethod
    def build(cls, input_ids: torch.Tensor, vocab_size: int, pad_id: int, bigrams: bool = False,
              unknown_id: Optional[int] = None) -> "TfidfVocabulary":
        """From the training titles ``input_ids [N, T]``: the idf of their tokens and, with
        ``bigrams``, of the bigrams of two known tokens that at least two of them hold;
        ``unknown_id`` (the tokenizer's, if any) gets idf 0."""
        codes = torch.empty(0, dtype=torch.int64)
        if bigrams and input_ids.shape[1] > 1:
            first, second = input_ids[:, :-1], input_ids[:, 1:]
            known = (first != pad_id) & (second != pad_id)
            if unknown_id is not None:
                known &= (first != unknown_id) & (second != unknown_id)
            pairs = first * vocab_size + second
            # A bigram counts once per title, as idf counts titles.
            space = vocab_size * vocab_size
            per_title = torch.unique(known.nonzero()[:, 0] * space + pairs[known]) % space
            values, counts = torch.unique(per_title, return_counts=True)
            codes = values[counts >= MIN_BIGRAM_TITLES]
        module = cls(vocab_size, len(codes), pad_id)
        module.bigrams.copy_(codes)
        module.idf.copy_(torch.from_numpy(inverse_document_frequency(module.counts(input_ids))))
        if unknown_id is not None and 0 <= unknown_id < vocab_size:
            module.idf[unknown_id] = 0.0
        return module

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T + T - 1]`` (``[B, T]`` without bigrams) feature ids of the titles, -1 at padding
        and at bigrams outside the vocabulary."""
        ids = input_ids.masked_fill((input_ids == self.pad_id) | (input_ids < 0) | (input_ids >= self.vocab_size), -1)
        if self.bigrams.numel() == 0 or input_ids.shape[1] < 2:
            return ids
        pairs = ids[:, :-1] * self.vocab_size + ids[:, 1:]
        where = torch.searchsorted(self.bigrams, pairs).clamp_max(len(self.bigrams) - 1)
        found = (self.bigrams[where] == pairs) & (ids[:, :-1] >= 0) & (ids[:, 1:] >= 0)
        return torch.cat([ids, torch.where(found, self.vocab_size + where, -1)], 1)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """The ``[B, F]`` TF-IDF weights of :meth:`features`, scaled so that each title's vector is
        of unit length (a repeated feature adds up to tf * idf); 0 at -1 and for a title with no
        weighted feature."""
        weight = self.idf[features.clamp_min(0)] * (features >= 0)
        same = features.unsqueeze(2) == features.unsqueeze(1)
        norm = (weight.unsqueeze(2) * same * weight.unsqueeze(1)).sum((1, 2)).sqrt().clamp_min(1e-12)
        return weight / norm.unsqueeze(1)

    def counts(self, input_ids: torch.Tensor) -> sp.csr_matrix:
        """``[N, num_features]`` float32 feature counts of the titles."""
        return token_counts(self.features(input_ids.to(self.idf.device)), self.num_features, pad_id=-1)

    def tfidf(self, input_ids: torch.Tensor) -> sp.csr_matrix:
        """``[N, num_features]`` row-normalised TF-IDF of the titles."""
        return row_normalize(self.counts(input_ids) @ sp.diags(self.idf.cpu().numpy())).tocsr()


def sparse_row_topk(matrix: sp.spmatrix, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values [B, k], columns [B, k])``: each row's ``k`` largest stored entries of a scipy
    sparse ``[B, N]`` matrix, largest first, ties to the lower column; columns -1 (values 0)
    where a row stores fewer. One pass of a partial sort per row, so no ``[B, N]`` dense table."""
    matrix = matrix.tocsr()
    matrix.sort_indices()  # so that ties go to the lower column, whatever made the matrix
    best = np.zeros((matrix.shape[0], k), np.float32)
    columns = np.full((matrix.shape[0], k), -1, np.int64)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        values, found = matrix.data[start:end], matrix.indices[start:end]
        if len(values) > k:
            # The k-th largest value; of the columns at it, the lowest (they ascend).
            threshold = -np.partition(-values, k - 1)[k - 1]
            above = np.flatnonzero(values > threshold)
            keep = np.concatenate([above, np.flatnonzero(values == threshold)[: k - len(above)]])
            values, found = values[keep], found[keep]
        order = np.lexsort((found, -values))
        best[row, : len(order)], columns[row, : len(order)] = values[order], found[order]
    return torch.from_numpy(best), torch.from_numpy(columns)

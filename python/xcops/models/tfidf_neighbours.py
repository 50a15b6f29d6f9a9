"""Label votes of a title's nearest training titles by the TF-IDF cosine of their exact words
(:class:`~xcops.models.label_votes.LabelVotes`).

The kNN of :class:`~xcops.models.title_neighbours.TitleNeighbours` searches the model's query
space, which a deep encoder learns well only for the titles it trained on. This one needs no
training and sees every word, rare ones included. On yso-finna-en it alone ranks 34.8 P@1 (50
neighbours, temperature 0.2, 2,000 test titles), where the TF-IDF label centroids rank 27.8
and the SyncXML model alone 35.4 (bench/RESULTS.md); SyncXML mixes it in
(:mod:`xcops.models.syncxml`).

The training titles' TF-IDF vectors are kept transposed, as posting lists (CSR ``[F, N]``: for
each feature, the titles that hold it and their weights), so that a title's cosines to all
training titles are one sparse product over the lists of its own few features.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch

from .label_votes import LabelVotes
from .tfidf_vocabulary import TfidfVocabulary, sparse_row_topk


class TfidfNeighbours(LabelVotes):
    """Scores ``[B, C]`` candidate labels of ``[B, T]`` token ids by the labels of their ``k``
    nearest training titles in TF-IDF space. Build it with :meth:`build`; the buffers go into
    checkpoints."""

    def __init__(self, vocab_size: int, num_titles: int, num_postings: int, num_pairs: int, num_labels: int,
                 k: int = 50, temperature: float = 0.2, pad_id: int = 0):
        super().__init__(num_pairs, num_labels, k, temperature)
        self.vocabulary = TfidfVocabulary(vocab_size, 0, pad_id)
        self.num_titles = num_titles
        self.register_buffer("posting_starts", torch.zeros(vocab_size + 1, dtype=torch.int64))
        self.register_buffer("posting_titles", torch.zeros(num_postings, dtype=torch.int64))
        self.register_buffer("posting_weights", torch.zeros(num_postings))
        self._postings: Optional[sp.csr_matrix] = None

    @classmethod
    def build(cls, input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int, k: int = 50,
              temperature: float = 0.2, unknown_id: Optional[int] = None) -> "TfidfNeighbours":
        """From the training titles ``input_ids [N, T]`` and their ``labels`` (scipy sparse
        ``[N, L]``), with the idf of those titles (``unknown_id`` gets none)."""
        vocabulary = TfidfVocabulary.build(input_ids, vocab_size, pad_id, unknown_id=unknown_id)
        postings = vocabulary.tfidf(input_ids).T.tocsr()
        postings.sort_indices()
        labels = labels.tocsr()
        module = cls(vocab_size, len(input_ids), postings.nnz, labels.nnz, labels.shape[1], k, temperature, pad_id)
        module.vocabulary.load_state_dict(vocabulary.state_dict())
        module.posting_starts.copy_(torch.from_numpy(postings.indptr.astype(np.int64)))
        module.posting_titles.copy_(torch.from_numpy(postings.indices.astype(np.int64)))
        module.posting_weights.copy_(torch.from_numpy(postings.data.astype(np.float32)))
        module.set_labels(labels)
        return module

    def _load_from_state_dict(self, *args, **kwargs):
        self._postings = None
        super()._load_from_state_dict(*args, **kwargs)

    def postings(self) -> sp.csr_matrix:
        """The posting lists as a scipy ``[F, N]`` CSR over the buffers' memory (a copy when they
        are on an accelerator), made once."""
        if self._postings is None:
            arrays = [buffer.cpu().numpy() for buffer in (self.posting_weights, self.posting_titles,
                                                          self.posting_starts)]
            self._postings = sp.csr_matrix(tuple(arrays), shape=(len(self.posting_starts) - 1, self.num_titles))
        return self._postings

    def nearest(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights, titles)``, both ``[B, k]``: the rows of the ``k`` training titles with the
        highest TF-IDF cosine, nearest first (ties by row), -1 where fewer share a word with the
        title, and the softmax of their cosines over ``temperature`` (0 at -1)."""
        queries = self.vocabulary.tfidf(input_ids)
        best, titles = sparse_row_topk(queries @ self.postings(), min(self.k, self.num_titles))
        weights = self.softmax(best.masked_fill(titles < 0, float("-inf"))).nan_to_num(0.0)
        return weights.to(input_ids.device), titles.to(input_ids.device)

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` votes in [0, 1]: the summed weights of the neighbours that carry each
        candidate; 0 at padding candidates (-1)."""
        if self.num_titles == 0 or candidates.shape[1] == 0:
            return torch.zeros(candidates.shape, device=candidates.device)
        return self.votes(self.nearest(input_ids), candidates)

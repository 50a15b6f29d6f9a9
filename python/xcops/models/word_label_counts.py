"""How strongly a title's own words point at each candidate label: for given (title, label)
candidate pairs, from how many training titles hold each (word, label) pair.

The TF-IDF centroids (:mod:`xcops.models.tfidf_centroids`) average a label's titles into one
vector, so that a word that only ever comes with one label weighs in them no more than its idf
and its share of the centroid say; the neighbours (:mod:`xcops.models.tfidf_neighbours`) look at
50 titles only. A word seen in 40 training titles, 38 of them with the same subject, is close to
proof of that subject whatever else the title says. The counts give the ranker
(:mod:`xcops.models.candidate_ranker`) that evidence word by word:

- the best word's share: ``max over the title's words w of n(w, label) / (n(w) + 1)``, the share
  of the titles with ``w`` that carry the label (the 1 keeps a word seen once from proving much);
- the share of the title's words that some training title holds with the label.

Both are logs, floored. Padding and the unknown word's id count as no word.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .label_features import label_sums, token_counts

SHARE_FLOOR = 1e-4  # the log of a share of 0, below any share with a count of one


class WordLabelCounts(nn.Module):
    """Scores ``[B, C]`` candidate labels of ``[B, T]`` token ids by the (word, label) counts of
    the training titles. Build it with :meth:`build`; the buffers go into checkpoints."""

    TERMS = ("best word's share", "share of words seen with the label")

    def __init__(self, vocab_size: int, num_pairs: int):
        super().__init__()
        # The pairs as sorted ``label * vocab_size + word`` keys, for one searchsorted per lookup.
        self.register_buffer("keys", torch.zeros(num_pairs, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(num_pairs))
        self.register_buffer("word_titles", torch.zeros(vocab_size))

    @classmethod
    def build(cls, input_ids: torch.Tensor, labels, vocab_size: int,
              ignored_ids: Sequence[int] = ()) -> "WordLabelCounts":
        """From the training titles ``input_ids [N, T]`` and their ``labels`` (scipy sparse
        ``[N, L]``). ``ignored_ids`` (padding, the unknown word; None is skipped) pair with no label."""
        ids = input_ids.clone()
        ignored = torch.tensor([i for i in ignored_ids if i is not None], dtype=ids.dtype)
        ids[torch.isin(ids, ignored)] = -1
        words = token_counts(ids, vocab_size, pad_id=-1)
        words.data[:] = 1  # a title holds a word or not
        marks = labels.tocsr().astype(np.float32)
        marks.data[:] = 1
        pairs = label_sums(marks, words)
        num_labels = marks.shape[1]
        label_of_pair = np.repeat(np.arange(num_labels, dtype=np.int64), np.diff(pairs.indptr))
        module = cls(vocab_size, pairs.nnz)
        module.keys.copy_(torch.from_numpy(label_of_pair * vocab_size + pairs.indices.astype(np.int64)))
        module.counts.copy_(torch.from_numpy(pairs.data.astype(np.float32)))
        module.word_titles.copy_(torch.from_numpy(np.asarray(words.sum(0), dtype=np.float32).ravel()))
        return module

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> list[torch.Tensor]:
        """``[best word's share, share of words seen with the label]``, each ``[B, C]`` logs,
        floored at log ``SHARE_FLOOR`` (also at padding candidates, -1)."""
        vocab_size = len(self.word_titles)
        known = (input_ids >= 0) & (input_ids < vocab_size)
        words = input_ids.clamp(0, max(vocab_size - 1, 0))
        known &= self.word_titles[words] > 0
        # A word twice in a title is one word of it, as in the counts.
        earlier = torch.ones(input_ids.shape[1], input_ids.shape[1], dtype=torch.bool,
                             device=input_ids.device).tril(-1)
        known &= ~((input_ids.unsqueeze(2) == input_ids.unsqueeze(1)) & earlier).any(2)
        query = candidates.clamp_min(0).unsqueeze(2) * vocab_size + words.unsqueeze(1)  # [B, C, T]
        # One zero pair past the end stands in for every pair the table lacks (and an empty table).
        keys = torch.cat([self.keys, self.keys.new_full((1,), -1)])
        counts = torch.cat([self.counts, self.counts.new_zeros(1)])
        where = torch.searchsorted(self.keys, query)
        where = torch.where(keys[where] == query, where, len(self.keys))
        pair_titles = counts[where] * known.unsqueeze(1)
        best = (pair_titles / (self.word_titles[words].unsqueeze(1) + 1)).amax(2)
        seen = (pair_titles > 0).sum(2) / known.sum(1, keepdim=True).clamp_min(1)
        valid = candidates >= 0
        return [share.masked_fill(~valid, 0).float().clamp_min(SHARE_FLOOR).log() for share in (best, seen)]

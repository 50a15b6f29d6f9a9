"""How much of a label's name a title holds: for given (title, label) candidate pairs, the share
of the words of the label's name (``Y.txt``) that the title has, plain and weighted by idf.

Every other score SyncXML ranks by (:mod:`xcops.models.syncxml`) is learned from which titles
carry which labels; none reads the labels' names. Many subject headings are named by the words a
title about them uses ("fish farms", "temperature regulation"), and a label with few or no
training titles has nothing but its name. Added to the learned mix on yso-finna-en, these two
scores lift held-out P@1 from 38.70 to 39.26 (bench/RESULTS.md, "Label names").

Words match by their first :data:`STEM_LENGTH` characters, a stemmer with no language rules that
matches "regulation" with "regulations" and "temperature" with "temperatures" (5, 6 and 8
characters measured alike). The title's words are its token ids, so a word the tokenizer does not know
(the ``<unk>`` id) matches nothing; a name's words are read from its text, so a name word that
no title holds still counts against the share.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .label_features import inverse_document_frequency, token_counts

STEM_LENGTH = 6
NAME_FLOOR = 1e-3  # the log of a share of 0: below that of any name word matched


class LabelNameMatch(nn.Module):
    """Scores ``[B, C]`` candidate labels of ``[B, T]`` token ids by the share of their names'
    stems in the title. Build it with :meth:`build`; the buffers go into checkpoints."""

    TERMS = ("share", "idf-weighted share")

    def __init__(self, vocab_size: int, num_labels: int, num_pairs: int):
        super().__init__()
        self.register_buffer("token_stem", torch.full((vocab_size,), -1, dtype=torch.int64))
        self.register_buffer("name_starts", torch.zeros(num_labels + 1, dtype=torch.int64))
        self.register_buffer("name_stems", torch.zeros(num_pairs, dtype=torch.int64))
        self.register_buffer("name_weights", torch.zeros(num_pairs))

    @classmethod
    def build(cls, words: Sequence[str], label_names: Sequence[str], split: Callable[[str], list[str]],
              input_ids: torch.Tensor, ignored_ids: Sequence[int] = ()) -> "LabelNameMatch":
        """From the tokenizer's ``words`` (the string of each token id), the ``label_names``, the
        tokenizer's ``split`` (text -> its words, stop words dropped) and the training titles
        ``input_ids [N, T]``, which give the idf of the stems. ``ignored_ids`` (padding, unknown
        word) match nothing."""
        stem_ids: dict[str, int] = {}
        token_stem = torch.tensor([stem_ids.setdefault(word[:STEM_LENGTH], len(stem_ids)) for word in words],
                                  dtype=torch.int64)
        token_stem[list(ignored_ids)] = -1
        names = [sorted({stem_ids.setdefault(word[:STEM_LENGTH], len(stem_ids)) for word in split(name)})
                 for name in label_names]
        module = cls(len(words), len(label_names), sum(map(len, names)))
        module.token_stem.copy_(token_stem)
        module.name_starts[1:] = torch.tensor([len(name) for name in names], dtype=torch.int64).cumsum(0)
        module.name_stems.copy_(torch.tensor([stem for name in names for stem in name], dtype=torch.int64))
        idf = inverse_document_frequency(token_counts(module.token_stem[input_ids], len(stem_ids), pad_id=-1))
        module.name_weights.copy_(torch.from_numpy(idf)[module.name_stems])
        return module

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> list[torch.Tensor]:
        """``[share, idf-weighted share]``, each ``[B, C]`` log-shares of each candidate's name
        stems that the title holds, floored at log ``NAME_FLOOR`` (also at padding candidates,
        -1, and for labels with no name)."""
        title = self.token_stem[input_ids.clamp(0, len(self.token_stem) - 1)]
        title = title.masked_fill((input_ids < 0) | (input_ids >= len(self.token_stem)), -1)
        labels = candidates.clamp_min(0)
        starts, counts = self.name_starts[labels], self.name_starts[labels + 1] - self.name_starts[labels]
        width = int(counts.max()) if counts.numel() else 0
        slots = torch.arange(width, device=candidates.device)
        inside = (slots < counts.unsqueeze(2)) & (candidates >= 0).unsqueeze(2)  # [B, C, S]
        where = (starts.unsqueeze(2) + slots).clamp_max(max(len(self.name_stems) - 1, 0))
        stems = self.name_stems[where] if len(self.name_stems) else torch.zeros_like(where)
        weights = (self.name_weights[where] if len(self.name_stems) else torch.zeros(where.shape)) * inside
        held = (stems.unsqueeze(3) == title[:, None, None, :]).any(3) & inside
        shares = [held.sum(2) / counts.clamp_min(1), (held * weights).sum(2) / weights.sum(2).clamp_min(1e-12)]
        return [share.float().clamp_min(NAME_FLOOR).log() for share in shares]

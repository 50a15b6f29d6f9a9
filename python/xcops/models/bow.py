"""A small bag-of-words XC model: the default model of ``xcops train``.

Token embeddings averaged per text (an ``EmbeddingBag``), a residual MLP, and a
:class:`ShortlistClassifier` head scored only on a per-batch shortlist of labels. Both the
embeddings and the classifier take sparse gradients, so one step touches only the rows of the
tokens and labels in the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import ShortlistClassifier


class BowXC(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int, dim: int = 256, pad_id: int = 0, fused: bool = True):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=pad_id, sparse=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.classifier = ShortlistClassifier(num_labels, dim, sparse_grad=fused, fused=fused)
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, dim=dim, pad_id=pad_id)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.embed(input_ids)
        return self.norm(pooled + self.mlp(pooled))

    def forward(self, input_ids: torch.Tensor, shortlist) -> torch.Tensor:
        return self.classifier(self.encode(input_ids), shortlist)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (for ``torch.optim.SparseAdam``)."""
        params = [self.embed.weight]
        if self.classifier.sparse_grad:
            params += [self.classifier.weight, self.classifier.bias]
        return params

"""A small bag-of-words XC model: the default model of ``xcops train``.

Token embeddings averaged per text (an ``EmbeddingBag``), a residual MLP, and a
:class:`xcops.nn.ShortlistLinear` head scored only on a per-batch shortlist of labels. Both the
embeddings and the classifier take sparse gradients, so one step touches only the rows of the
tokens and labels in the batch. Inference is exact over all labels with ``dense_topk``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import XCTextDataset
from ..nn import ShortlistLinear
from ..progress import TrainingMeter, progress_bar
from ..training_state import EpochCheckpoints
from .base import XCModel
from .heads import init_bias_from_label_rates, masked_bce_with_logits, shortlist_targets


def batch_shortlist(indptr, indices, num_labels, random_negatives, generator):
    """Shortlist shared by the rows of a batch: the labels of every row in the batch (in-batch
    negatives, popularity weighted) plus uniform random labels. Returns the padded ``[B, K]``
    shortlist and its 0/1 targets."""
    rows = torch.repeat_interleave(torch.arange(len(indptr) - 1), indptr[1:] - indptr[:-1])
    random = torch.randint(0, num_labels, (random_negatives,), generator=generator)
    candidates = torch.unique(torch.cat([indices, random]))
    shortlist = candidates.expand(len(indptr) - 1, -1)
    return shortlist.contiguous(), shortlist_targets(shortlist, rows, indices, num_labels).float()


class BowXC(XCModel):
    name = "bow"
    resumable = True

    def __init__(self, vocab_size: int, num_labels: int, dim: int = 256, pad_id: int = 0, fused: bool = True):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=pad_id, sparse=True)
        with torch.no_grad():
            # Adam moves a weight by about lr per step whatever its scale: at torch's unit
            # variance a word seen a few times barely moves, at dim^-1/2 it learns.
            self.embed.weight.normal_(0.0, dim**-0.5)
            self.embed.weight[pad_id].zero_()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.classifier = ShortlistLinear(num_labels, dim, fused=fused)
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, dim=dim, pad_id=pad_id)

    @classmethod
    def create(cls, cfg, train_set) -> "BowXC":
        model = cls(len(train_set.tokenizer), train_set.num_labels, cfg.dim, train_set.pad_token_id, cfg.fused)
        init_bias_from_label_rates(model.classifier.bias, train_set.labels)
        return model

    def metadata(self) -> dict:
        return dict(self.config)

    @classmethod
    def from_metadata(cls, meta: dict) -> "BowXC":
        return cls(**meta)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.embed(input_ids)
        return self.norm(pooled + self.mlp(pooled))

    def forward(self, input_ids: torch.Tensor, shortlist) -> torch.Tensor:
        return self.classifier(self.encode(input_ids), shortlist)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.embed.weight, *self.classifier.sparse_parameters()]

    def train_step(self, optimizers, batch, random_negatives, generator, device) -> torch.Tensor:
        ids, indptr, indices = batch
        shortlist, targets = batch_shortlist(indptr, indices, self.config["num_labels"], random_negatives, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = self(ids.to(device), shortlist.to(device))
        return self.optimizer_step(optimizers, masked_bce_with_logits(logits, targets.to(device)))

    def fit(self, cfg, train_set, device, progress=True, state_dir=None) -> dict:
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizers = self.make_optimizers(cfg.lr)
        loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                             collate_fn=XCTextDataset.collate, generator=generator)
        meter = TrainingMeter()
        checkpoints = EpochCheckpoints(cfg, state_dir, model=self, optimizers=optimizers, batches=generator, meter=meter)
        first_epoch = checkpoints.restore()
        for epoch in range(first_epoch, cfg.epochs):
            bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
            for batch in bar:
                loss = self.train_step(optimizers, batch, cfg.random_negatives, generator, device).item()
                bar.set_postfix(meter.update(loss, len(batch[1]) - 1, cfg.lr))
            checkpoints.save(epoch + 1)
        return {"resumed_at_epoch": first_epoch}

    @torch.no_grad()
    def predict(self, input_ids, k, batch_size, device, progress=True) -> torch.Tensor:
        """Exact top-k over all labels (``dense_topk`` with the bias)."""
        was_training = self.training
        self.eval()
        k = min(k, self.classifier.num_labels)
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            query = self.encode(input_ids[start : start + batch_size].to(device))
            out.append(self.classifier.topk(query, k)[1].cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)

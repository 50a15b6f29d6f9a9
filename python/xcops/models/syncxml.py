"""SyncXML (Kharbanda et al., arXiv 2109.07319): one InceptionXML encoder, two synchronised heads.

- The meta head scores every label *cluster* (balanced 2-means over PIFA label features,
  ``cluster_size`` labels at most per cluster) with a dense linear layer.
- The extreme head is a :class:`xcops.nn.ShortlistLinear` over all labels, scored only on the labels
  of a row's top clusters, so a step touches ``top_clusters * cluster_size`` label vectors per row
  instead of all L (sparse gradients, SparseAdam).

Training uses teacher forcing: a row's clusters are its positive clusters plus the best-scoring
other clusters (the hard negatives) up to ``top_clusters``; the loss is BCE of the extreme head
over that shortlist plus BCE of the meta head over all clusters. For the first
``detach_epochs`` epochs the extreme head's loss does not reach the encoder, which first learns
the easier meta task. Inference ranks the labels of the top predicted clusters by
``sigmoid(extreme logit) * meta probability of the label's cluster``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..data import XCTextDataset
from ..nn import ShortlistLinear
from ..ops.clustering import balanced_kmeans, clusters_for_leaf_size, clusters_to_csr
from ..progress import progress_bar
from .base import XCModel
from .heads import masked_bce_with_logits
from .inceptionxml import InceptionXML, load_token_embeddings, pretrained_dir
from .label_features import label_features


@dataclass(frozen=True)
class SyncXMLOptions:
    """The ``cfg.model_args`` of SyncXML."""

    cluster_size: int = 16  # most labels per meta cluster (the leaves of balanced 2-means)
    top_clusters: int = 32  # clusters whose labels form a row's shortlist, in training and inference
    detach_epochs: int = 1  # first epochs in which the extreme loss does not train the encoder
    embed_dim: int = 256  # token embedding size (taken from the table when pretrained)
    num_filters: int = 32  # channels of the convolutions; query dim = num_filters * f(embed_dim)
    dropout: float = 0.25
    feature_dim: int = 256  # size of the PIFA sketch the labels are clustered on
    pretrained: Optional[str] = None  # "minilm" or a transformers folder: its token embeddings + tokenizer

    @classmethod
    def parse(cls, model_args: dict) -> "SyncXMLOptions":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(model_args) - set(fields))
        if unknown:
            raise ValueError(f"unknown syncxml model_args {unknown}; known: {sorted(fields)}")
        for key, value in model_args.items():
            if key == "pretrained":
                ok = value is None or isinstance(value, str)
                expected = "null, 'minilm' or a model folder"
            elif key == "dropout":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
                expected = "a number in [0, 1)"
            else:
                low = 0 if key == "detach_epochs" else 1
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
                expected = f"an integer >= {low}"
            if not ok:
                raise ValueError(f"syncxml model_args[{key!r}] must be {expected}, got {value!r}")
        return cls(**model_args)


def cluster_table(assign: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``[C, S]`` label ids of each cluster, padded with -1 to the largest cluster size S."""
    indptr, members = clusters_to_csr(assign, num_clusters)
    cluster = assign[members]
    slot = torch.arange(len(members)) - indptr[cluster]
    table = torch.full((num_clusters, int(indptr.diff().max())), -1, dtype=torch.int64)
    table[cluster, slot] = members
    return table


class ResidualHead(nn.Module):
    """``dropout(x + GELU(W dropout(x) + b))``: the hidden layer each head puts on the query."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.hidden(x))


class SyncXML(XCModel):
    name = "syncxml"

    def __init__(self, vocab_size: int, num_labels: int, num_clusters: int, cluster_width: int, seq_len: int,
                 pad_id: int = 0, embed_dim: int = 256, num_filters: int = 32, dropout: float = 0.25,
                 top_clusters: int = 32, fused: bool = True, embeddings: Optional[torch.Tensor] = None):
        super().__init__()
        self.encoder = InceptionXML(vocab_size, seq_len, embed_dim, num_filters, dropout, pad_id, embeddings)
        dim = self.encoder.query_dim
        self.meta_hidden = ResidualHead(dim, dropout)
        self.meta = nn.Linear(dim, num_clusters)
        self.extreme_hidden = ResidualHead(dim, dropout)
        self.extreme = ShortlistLinear(num_labels, dim, fused=fused)
        # The clustering is part of the model: a checkpoint carries it.
        self.register_buffer("label_cluster", torch.zeros(num_labels, dtype=torch.int64))
        self.register_buffer("cluster_labels", torch.full((num_clusters, cluster_width), -1, dtype=torch.int64))
        self.top_clusters = min(top_clusters, num_clusters)
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, num_clusters=num_clusters,
                           cluster_width=cluster_width, seq_len=seq_len, pad_id=pad_id, embed_dim=embed_dim,
                           num_filters=num_filters, dropout=dropout, top_clusters=top_clusters)

    @classmethod
    def make_tokenizer(cls, cfg):
        options = SyncXMLOptions.parse(cfg.model_args)
        if options.pretrained is None:
            return None
        folder = pretrained_dir(options.pretrained)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))

    @classmethod
    def create(cls, cfg, train_set) -> "SyncXML":
        options = SyncXMLOptions.parse(cfg.model_args)
        embeddings, vocab_size, embed_dim = None, len(train_set.tokenizer), options.embed_dim
        if options.pretrained is not None:
            embeddings = load_token_embeddings(options.pretrained)
            vocab_size, embed_dim = embeddings.shape
            if cfg.model_args.get("embed_dim", embed_dim) != embed_dim:
                raise ValueError(f"embed_dim={cfg.model_args['embed_dim']} conflicts with the {embed_dim}-d "
                                 f"pretrained embeddings of {options.pretrained!r}; leave it out")
            if len(train_set.tokenizer) > vocab_size:
                raise ValueError(f"the tokenizer has {len(train_set.tokenizer)} ids but the pretrained table "
                                 f"only {vocab_size} rows")
        num_labels = train_set.num_labels
        features = label_features(train_set.input_ids, train_set.labels, vocab_size, train_set.pad_token_id,
                                  options.feature_dim, cfg.seed)
        num_clusters = clusters_for_leaf_size(num_labels, options.cluster_size)
        assign, _ = balanced_kmeans(features, num_clusters=num_clusters, seed=cfg.seed)
        table = cluster_table(assign, num_clusters)
        model = cls(vocab_size, num_labels, num_clusters, table.shape[1], train_set.max_len,
                    train_set.pad_token_id, embed_dim, options.num_filters, options.dropout,
                    options.top_clusters, cfg.fused, embeddings)
        model.label_cluster.copy_(assign)
        model.cluster_labels.copy_(table)
        model.init_biases(train_set.labels)
        return model

    @torch.no_grad()
    def init_biases(self, labels) -> None:
        """Start the heads' biases at the positive rates of the training labels (``[N, L]``
        scipy sparse). Positives are rare (a few of thousands of clusters), and Adam moves a
        bias by about lr per step: from 0 it would take hundreds of steps to reach logits near
        -7, steps in which the rest of the network is pushed to predict "negative" instead of
        learning from the input."""
        labels = labels.tocsr()
        rows = torch.repeat_interleave(torch.arange(labels.shape[0]), torch.from_numpy(labels.getnnz(1)))
        num_clusters = len(self.cluster_labels)
        pairs = torch.unique(rows * num_clusters + self.label_cluster.cpu()[torch.from_numpy(labels.indices).long()])
        rows_with_cluster = torch.bincount(pairs % num_clusters, minlength=num_clusters)
        self.meta.bias.copy_(torch.logit((rows_with_cluster + 0.5) / (labels.shape[0] + 1.0)))
        # The extreme head sees a row's positives among the labels of its teacher-forced clusters.
        shortlist_size = self.top_clusters * self.cluster_labels.shape[1]
        rate = min(max(labels.nnz / max(labels.shape[0], 1) / shortlist_size, 1e-6), 0.5)
        self.extreme.bias.fill_(math.log(rate / (1 - rate)))

    def metadata(self) -> dict:
        return dict(self.config)

    @classmethod
    def from_metadata(cls, meta: dict) -> "SyncXML":
        return cls(**meta)

    def forward(self, input_ids: torch.Tensor, cluster_targets: Optional[torch.Tensor] = None,
                detach_extreme: bool = False):
        """``(meta_logits [B, C], clusters [B, K], shortlist [B, K * S], extreme_logits [B, K * S])``.

        ``clusters`` are the top meta clusters, the positive ones (``cluster_targets``) first when
        given; ``shortlist`` holds their labels (-1 pads clusters smaller than S).
        """
        query = self.encoder(input_ids)
        meta_logits = self.meta(self.meta_hidden(query))
        ranking = meta_logits.detach()
        if cluster_targets is not None:
            ranking = ranking.masked_fill(cluster_targets.bool(), float("inf"))
        clusters = ranking.topk(self.top_clusters, dim=1).indices
        shortlist = self.cluster_labels[clusters].flatten(1)
        features = query.detach() if detach_extreme else query
        return meta_logits, clusters, shortlist, self.extreme(self.extreme_hidden(features), shortlist)

    def loss(self, input_ids: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
             detach_extreme: bool = False) -> torch.Tensor:
        """The training loss of a batch (labels as CSR ``indptr [B + 1]``, ``indices``)."""
        device = self.label_cluster.device
        batch, num_labels = len(indptr) - 1, len(self.label_cluster)
        indptr, indices = indptr.to(device), indices.to(device)
        rows = torch.repeat_interleave(torch.arange(batch, device=device), indptr.diff())
        cluster_targets = torch.zeros(batch, len(self.cluster_labels), device=device)
        cluster_targets[rows, self.label_cluster[indices]] = 1.0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            meta_logits, _, shortlist, extreme_logits = self(input_ids.to(device), cluster_targets, detach_extreme)
        # A slot is positive when row * L + label is one of the batch's (row, label) pairs.
        keys = torch.arange(batch, device=device).unsqueeze(1) * num_labels + shortlist
        valid = shortlist >= 0
        targets = torch.isin(keys, rows * num_labels + indices) & valid
        extreme_loss = masked_bce_with_logits(extreme_logits, targets, valid)
        return extreme_loss + masked_bce_with_logits(meta_logits, cluster_targets)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.encoder.embed.weight, *self.extreme.sparse_parameters()]

    def train_step(self, optimizers, batch, detach_extreme: bool) -> torch.Tensor:
        return self.optimizer_step(optimizers, self.loss(*batch, detach_extreme=detach_extreme))

    def fit(self, cfg, train_set, device, progress=True) -> dict:
        options = SyncXMLOptions.parse(cfg.model_args)
        optimizers = self.make_optimizers(cfg.lr)
        # BatchNorm cannot train on a batch of one row, which an uneven last batch can be.
        loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                             collate_fn=XCTextDataset.collate,
                                             drop_last=len(train_set) > cfg.batch_size,
                                             generator=torch.Generator().manual_seed(cfg.seed))
        self.train()
        running = None
        for epoch in range(cfg.epochs):
            bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
            for batch in bar:
                loss = self.train_step(optimizers, batch, detach_extreme=epoch < options.detach_epochs).item()
                running = loss if running is None else 0.95 * running + 0.05 * loss
                bar.set_postfix(loss=f"{running:.4f}")
        return dict(num_clusters=len(self.cluster_labels), cluster_width=self.cluster_labels.shape[1],
                    train_loss=running)

    @torch.no_grad()
    def predict(self, input_ids, k, batch_size, device, progress=True) -> torch.Tensor:
        """The top-k labels of the top clusters by ``sigmoid(extreme) * meta probability``."""
        was_training = self.training
        self.eval()
        width = self.cluster_labels.shape[1]
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            ids = input_ids[start : start + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                meta_logits, clusters, shortlist, extreme_logits = self(ids)
            meta_prob = meta_logits.float().sigmoid().gather(1, clusters).repeat_interleave(width, 1)
            scores = (extreme_logits.float().sigmoid() * meta_prob).masked_fill(shortlist < 0, -1.0)
            values, slots = scores.topk(min(k, scores.shape[1]), dim=1)
            labels = shortlist.gather(1, slots).masked_fill(values < 0, -1)
            out.append(nn.functional.pad(labels, (0, k - labels.shape[1]), value=-1).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)

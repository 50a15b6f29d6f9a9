"""SyncXML (Kharbanda et al., arXiv 2109.07319): one InceptionXML encoder, two synchronised heads.

- The meta head scores every label *cluster* (balanced 2-means over PIFA label features,
  ``cluster_size`` labels at most per cluster) with a dense linear layer.
- The extreme head is a :class:`xcops.nn.ShortlistLinear` over all labels, scored only on the labels
  of a row's top clusters with ``shortlist_score``, so a step touches ``top_clusters *
  cluster_size`` label vectors per row instead of all L. Its gradient is dense (one fused Adam
  pass), since a batch's shortlists cover most labels of a set this size; the token embeddings
  keep sparse row gradients (:class:`xcops.optim.RowAdam`).

Training follows the paper: a per-step 1cycle learning rate (peak ``cfg.lr``), dropout 0.3 on
the meta head and 0.5 on the extreme head, and teacher forcing: a row's clusters are its
positive clusters plus the best-scoring other clusters (the hard negatives) up to
``top_clusters``; the loss is BCE of the extreme head over that shortlist plus BCE of the meta
head over all clusters. For the first ``detach_fraction`` of the steps the extreme head's loss
does not reach the encoder, which first learns the easier meta task.

Inference shortlists the labels of the ``predict_clusters`` best clusters, ranks them with
``shortlist_topk`` and reorders the best by ``sigmoid(extreme logit) * meta probability of the
label's cluster``. With ``ova`` the model is one-vs-all InceptionXML instead: the extreme head
scores every label in training (BCE over all L) and ``dense_topk`` ranks them all; no meta head
is trained. It is the accuracy that the shortlist should come close to.

No pretrained word vectors can be downloaded here; ``embed_init="label-svd"`` starts the
embeddings from the training set's own word-label statistics (:func:`label_svd_embeddings`),
and ``pretrained="minilm"`` from the word-piece table of the packaged MiniLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..data import SimpleTokenizer, XCTextDataset
from ..distributed.training import gather_rows
from ..nn import ShortlistLinear
from ..ops.clustering import balanced_kmeans, clusters_for_leaf_size, clusters_to_csr
from ..optim import one_cycle, per_step_schedulers
from ..progress import TrainingMeter, progress_bar
from ..training_state import EpochCheckpoints
from .base import XCModel
from .dropout import Dropout
from .heads import init_bias_from_label_rates, masked_bce_with_logits, shortlist_targets
from .inceptionxml import InceptionXML, load_token_embeddings, pretrained_dir
from .label_features import label_features, pifa_svd
from .options import is_integer, is_number
from .candidate_ranker import CandidateRanker
from .score_fusion import fit_weights, mixed_scores, relevant, union_candidates
from .tfidf_centroids import TfidfCentroids
from .tfidf_neighbours import TfidfNeighbours
from .label_names import LabelNameMatch
from .title_neighbours import TitleNeighbours
from .word_label_counts import WordLabelCounts


EMBED_INITS = ("random", "label-svd")
# Floors of the scores before their logs are mixed (see SyncXML._mix_terms).
CENTROID_FLOOR, VOTE_FLOOR, SCORE_FLOOR = 1e-6, 1e-4, 1e-9
SCHEDULES = ("onecycle", "constant")

# model_args key -> (check, what it must be); every key has a default in SyncXMLOptions.
_RULES = {
    "cluster_size": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "top_clusters": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "predict_clusters": (lambda v: v is None or is_integer(v, 1), "null or an integer >= 1"),
    "detach_fraction": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "embed_dim": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "num_filters": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "meta_dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "extreme_dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "feature_dim": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "pretrained": (lambda v: v is None or isinstance(v, str), "null, 'minilm' or a model folder"),
    "embed_init": (lambda v: v in EMBED_INITS, f"one of {EMBED_INITS}"),
    "ova": (lambda v: isinstance(v, bool), "true or false"),
    "embed_lr_scale": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "word_dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "centroid_fusion": (lambda v: isinstance(v, bool), "true or false"),
    "fusion_alpha": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "null (fitted) or a number in [0, 1]"),
    "fusion_rows": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "title_neighbours": (lambda v: isinstance(v, bool), "true or false"),
    "neighbour_weight": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "null (fitted) or a number in [0, 1]"),
    "neighbour_k": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "neighbour_dim": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "neighbour_temperature": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "neighbour_candidates": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "centroid_bigrams": (lambda v: isinstance(v, bool), "true or false"),
    "centroid_candidates": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "tfidf_neighbours": (lambda v: isinstance(v, bool), "true or false"),
    "tfidf_weight": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "null (fitted) or a number in [0, 1]"),
    "tfidf_k": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "tfidf_temperature": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "tfidf_candidates": (lambda v: is_integer(v, 0), "an integer >= 0"),
    "learned_mix": (lambda v: isinstance(v, bool), "true or false"),
    "ranker_hidden": (lambda v: is_integer(v, 1), "an integer >= 1"),
    "label_names": (lambda v: isinstance(v, bool), "true or false"),
    "word_counts": (lambda v: isinstance(v, bool), "true or false"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {SCHEDULES}"),
    "pct_start": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "div_factor": (lambda v: is_number(v) and v >= 1, "a number >= 1"),
    "final_div_factor": (lambda v: is_number(v) and v >= 1, "a number >= 1"),
}


@dataclass(frozen=True)
class SyncXMLOptions:
    """The ``cfg.model_args`` of SyncXML (and, with ``ova``, of one-vs-all InceptionXML)."""

    cluster_size: int = 16  # most labels per meta cluster (the leaves of balanced 2-means)
    top_clusters: int = 32  # clusters whose labels form a row's training shortlist
    predict_clusters: Optional[int] = None  # clusters shortlisted at inference (None: top_clusters)
    detach_fraction: float = 0.2  # first fraction of the steps in which the extreme loss does not train the encoder
    embed_dim: int = 256  # token embedding size (taken from the table when pretrained)
    num_filters: int = 32  # channels of the convolutions; query dim = num_filters * f(embed_dim)
    dropout: float = 0.25  # in the encoder
    meta_dropout: float = 0.3  # on the meta head's input and hidden layer
    extreme_dropout: float = 0.5  # on the extreme head's input and hidden layer
    feature_dim: int = 256  # size of the PIFA sketch the labels are clustered on
    pretrained: Optional[str] = None  # "minilm" or a transformers folder: its token embeddings + tokenizer
    embed_init: str = "random"  # or "label-svd": word vectors from the SVD of the training PIFA
    ova: bool = False  # one-vs-all: the extreme head scores every label, no meta head (the accuracy reference)
    embed_lr_scale: float = 1.0  # the token embeddings' learning rate / cfg.lr (0 freezes them)
    word_dropout: float = 0.0  # in training, the chance that a token is replaced by padding
    centroid_fusion: bool = False  # rank by a fitted mix with the TF-IDF label-centroid cosine
    fusion_alpha: Optional[float] = None  # the centroid's weight in that mix; None: fitted on fusion_rows
    fusion_rows: int = 5000  # training titles held out of training to fit the mix (at most a fifth)
    title_neighbours: bool = False  # also mix in the label votes of the nearest training titles (kNN)
    neighbour_weight: Optional[float] = None  # their weight in the mix; None: fitted with fusion_alpha
    neighbour_k: int = 20  # training titles that vote
    neighbour_dim: int = 128  # principal directions of the query vectors that the kNN searches
    neighbour_temperature: float = 0.1  # of the softmax over the neighbours' cosines
    neighbour_candidates: int = 0  # nearest training titles whose labels join the shortlist's candidates
    centroid_bigrams: bool = False  # the centroids' TF-IDF also holds bigrams seen in two or more titles
    centroid_candidates: int = 0  # labels of the nearest centroids (over all labels) that join the candidates
    tfidf_neighbours: bool = False  # also mix in the votes of the nearest training titles by TF-IDF cosine
    tfidf_weight: Optional[float] = None  # their weight in the mix; None: fitted with the others
    tfidf_k: int = 50  # training titles that vote
    tfidf_temperature: float = 0.2  # of the softmax over their cosines
    tfidf_candidates: int = 0  # nearest of them whose labels join the shortlist's candidates
    learned_mix: bool = False  # rank the candidates by a CandidateRanker over the mix's terms, not the log-linear mix
    ranker_hidden: int = 32  # its hidden units
    label_names: bool = False  # the ranker also sees how much of each candidate's name (Y.txt) the title holds
    word_counts: bool = False  # and how often the title's words come with each candidate in training titles
    schedule: str = "onecycle"  # per-step learning rate: 1cycle with the three settings below, or constant
    pct_start: float = 0.33
    div_factor: float = 10.0
    final_div_factor: float = 1e4

    @classmethod
    def parse(cls, model_args: dict) -> "SyncXMLOptions":
        unknown = sorted(set(model_args) - set(_RULES))
        if unknown:
            raise ValueError(f"unknown syncxml model_args {unknown}; known: {sorted(_RULES)}")
        for key, value in model_args.items():
            check, expected = _RULES[key]
            if not check(value):
                raise ValueError(f"syncxml model_args[{key!r}] must be {expected}, got {value!r}")
        options = cls(**model_args)
        weights = options.mix_weights
        if len(weights) > 1 and (len({value is None for value in weights.values()}) > 1
                                 or sum(value or 0 for value in weights.values()) > 1):
            raise ValueError(f"syncxml model_args: with {len(weights)} terms in the mix, give all of "
                             f"{sorted(weights)} (summing to at most 1) or none (fitted), got {weights}")
        mixed = [name for name in ("centroid_fusion", "title_neighbours", "tfidf_neighbours") if getattr(options, name)]
        if options.ova and mixed:
            raise ValueError(f"syncxml model_args: {' and '.join(mixed)} mix into the shortlist ranking, which ova "
                             "(one-vs-all) does not have; drop them or ova")
        for candidates, switch, k in (("neighbour_candidates", "title_neighbours", "neighbour_k"),
                                      ("tfidf_candidates", "tfidf_neighbours", "tfidf_k")):
            if getattr(options, candidates) and (not getattr(options, switch)
                                                 or getattr(options, candidates) > getattr(options, k)):
                raise ValueError(f"syncxml model_args: {candidates} takes the labels of that many of the {k} "
                                 f"({getattr(options, k)}) nearest titles, so it needs {switch} and at most {k}, "
                                 f"got {getattr(options, candidates)!r} with {switch}={getattr(options, switch)!r}")
        for name in ("centroid_bigrams", "centroid_candidates"):
            if getattr(options, name) and not options.centroid_fusion:
                raise ValueError(f"syncxml model_args: {name} acts on the centroids of centroid_fusion, which is "
                                 "off; set centroid_fusion too")
        if options.learned_mix and not options.mix_weights:
            raise ValueError("syncxml model_args: learned_mix ranks by the terms of the mix, and there are none; "
                             "set centroid_fusion, title_neighbours or tfidf_neighbours too")
        if options.learned_mix and not options.fits_mix:
            raise ValueError(f"syncxml model_args: learned_mix is fitted on held-out titles, but the weights "
                             f"{options.mix_weights} are all given, so none are held out; drop the weights")
        for ranker_option in ("label_names", "word_counts"):
            if getattr(options, ranker_option) and not options.learned_mix:
                raise ValueError(f"syncxml model_args: {ranker_option} adds terms to the ranker of learned_mix, "
                                 "which is off; set learned_mix too")
        if options.label_names and options.pretrained is not None:
            raise ValueError(f"syncxml model_args: label_names matches the words of the built-in tokenizer, but "
                             f"pretrained={options.pretrained!r} brings subword tokens; drop one of them")
        if options.pretrained is not None and options.embed_init != "random":
            raise ValueError(f"syncxml model_args: embed_init={options.embed_init!r} and pretrained="
                             f"{options.pretrained!r} both set the embeddings; keep one")
        return options

    @property
    def mix_weights(self) -> dict:
        """The weight (None: to be fitted) of each term that the score mix has besides the model's."""
        terms = (("fusion_alpha", self.centroid_fusion), ("neighbour_weight", self.title_neighbours),
                 ("tfidf_weight", self.tfidf_neighbours))
        return {name: getattr(self, name) for name, on in terms if on}

    @property
    def fits_mix(self) -> bool:
        """Whether a weight of the score mix is left to be fitted on held-out titles."""
        return any(value is None for value in self.mix_weights.values())


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
        self.hidden = nn.Sequential(Dropout(dropout), nn.Linear(dim, dim), nn.GELU())
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.hidden(x))


class SyncXML(XCModel):
    name = "syncxml"
    resumable = True

    def __init__(self, vocab_size: int, num_labels: int, num_clusters: int, cluster_width: int, seq_len: int,
                 pad_id: int = 0, embed_dim: int = 256, num_filters: int = 32, dropout: float = 0.25,
                 top_clusters: int = 32, fused: bool = True, embeddings: Optional[torch.Tensor] = None,
                 meta_dropout: float = 0.3, extreme_dropout: float = 0.5, predict_clusters: Optional[int] = None,
                 ova: bool = False, word_dropout: float = 0.0, centroid_nonzeros: Optional[int] = None,
                 fusion_alpha: float = 0.5, neighbour_titles: Optional[int] = None, neighbour_pairs: int = 0,
                 neighbour_dim: int = 128, neighbour_k: int = 20, neighbour_temperature: float = 0.1,
                 neighbour_weight: float = 0.0, neighbour_candidates: int = 0, centroid_bigram_count: int = 0,
                 tfidf_titles: Optional[int] = None, tfidf_postings: int = 0, tfidf_pairs: int = 0, tfidf_k: int = 50,
                 tfidf_temperature: float = 0.2, tfidf_weight: float = 0.0, tfidf_candidates: int = 0,
                 centroid_candidates: int = 0, ranker_terms: int = 0, ranker_hidden: int = 32,
                 label_name_pairs: Optional[int] = None, word_label_pairs: Optional[int] = None):
        super().__init__()
        self.encoder = InceptionXML(vocab_size, seq_len, embed_dim, num_filters, dropout, pad_id, embeddings)
        dim = self.encoder.query_dim
        self.meta_hidden = ResidualHead(dim, meta_dropout)
        self.meta = nn.Linear(dim, num_clusters)
        self.extreme_hidden = ResidualHead(dim, extreme_dropout)
        # Dense gradients: a batch's shortlists touch most labels of a 25k-label set, where a dense
        # fused Adam step (~5 ms for 10M weights on 2 cores) beats any sparse-row update.
        self.extreme = ShortlistLinear(num_labels, dim, sparse_grad=False, fused=fused)
        # The clustering is part of the model: a checkpoint carries it.
        self.register_buffer("label_cluster", torch.zeros(num_labels, dtype=torch.int64))
        self.register_buffer("cluster_labels", torch.full((num_clusters, cluster_width), -1, dtype=torch.int64))
        self.top_clusters = min(top_clusters, num_clusters)
        self.predict_clusters = min(predict_clusters or top_clusters, num_clusters)
        self.ova = ova
        self.word_dropout = word_dropout
        # With centroids or neighbours, inference ranks by a log-linear mix of the scores (fit_fusion).
        self.centroids = None if centroid_nonzeros is None else TfidfCentroids(vocab_size, centroid_nonzeros, pad_id,
                                                                               centroid_bigram_count)
        self.neighbours = None if neighbour_titles is None else TitleNeighbours(
            dim, neighbour_dim, neighbour_titles, neighbour_pairs, num_labels, neighbour_k, neighbour_temperature)
        self.tfidf_neighbours = None if tfidf_titles is None else TfidfNeighbours(
            vocab_size, tfidf_titles, tfidf_postings, tfidf_pairs, num_labels, tfidf_k, tfidf_temperature, pad_id)
        # With a ranker, inference ranks by it instead of the log-linear mix (fit_fusion fits both).
        self.ranker = CandidateRanker(ranker_terms, num_labels, ranker_hidden) if ranker_terms else None
        self.label_names = (None if label_name_pairs is None
                            else LabelNameMatch(vocab_size, num_labels, label_name_pairs))
        self.word_counts = (None if word_label_pairs is None
                            else WordLabelCounts(vocab_size, word_label_pairs))
        self.fusion_alpha = fusion_alpha
        self.neighbour_weight = neighbour_weight
        self.tfidf_weight = tfidf_weight
        self.neighbour_candidates = neighbour_candidates
        self.tfidf_candidates = tfidf_candidates
        self.centroid_candidates = centroid_candidates
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, num_clusters=num_clusters,
                           cluster_width=cluster_width, seq_len=seq_len, pad_id=pad_id, embed_dim=embed_dim,
                           num_filters=num_filters, dropout=dropout, top_clusters=top_clusters,
                           meta_dropout=meta_dropout, extreme_dropout=extreme_dropout,
                           predict_clusters=predict_clusters, ova=ova, word_dropout=word_dropout,
                           centroid_nonzeros=centroid_nonzeros, neighbour_titles=neighbour_titles,
                           neighbour_pairs=neighbour_pairs, neighbour_dim=neighbour_dim, neighbour_k=neighbour_k,
                           neighbour_temperature=neighbour_temperature,
                           neighbour_candidates=neighbour_candidates, centroid_bigram_count=centroid_bigram_count,
                           tfidf_titles=tfidf_titles, tfidf_postings=tfidf_postings, tfidf_pairs=tfidf_pairs,
                           tfidf_k=tfidf_k, tfidf_temperature=tfidf_temperature, tfidf_candidates=tfidf_candidates,
                           centroid_candidates=centroid_candidates, ranker_terms=ranker_terms,
                           ranker_hidden=ranker_hidden, label_name_pairs=label_name_pairs,
                           word_label_pairs=word_label_pairs)

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
        # Everything learned from labels here leaves out the titles that fit the mix, as it leaves
        # out test titles: inside their own labels' centroids and word vectors, held-out titles
        # scored 49.8 P@1 against 16.6 for test titles (yso 50k subset, bench/RESULTS.md), and
        # the fit leaned on the centroids.
        kept = torch.ones(len(train_set), dtype=torch.bool)
        kept[held_out_rows(len(train_set), options, cfg.seed, _world_size())] = False
        kept = kept.nonzero().squeeze(1)
        input_ids, labels = train_set.input_ids[kept], train_set.labels[kept.numpy()]
        if options.pretrained is not None:
            embeddings = load_token_embeddings(options.pretrained)
            vocab_size, embed_dim = embeddings.shape
            if cfg.model_args.get("embed_dim", embed_dim) != embed_dim:
                raise ValueError(f"embed_dim={cfg.model_args['embed_dim']} conflicts with the {embed_dim}-d "
                                 f"pretrained embeddings of {options.pretrained!r}; leave it out")
            if len(train_set.tokenizer) > vocab_size:
                raise ValueError(f"the tokenizer has {len(train_set.tokenizer)} ids but the pretrained table "
                                 f"only {vocab_size} rows")
        elif options.embed_init == "label-svd":
            embeddings = label_svd_embeddings(input_ids, labels, vocab_size, train_set.pad_token_id, embed_dim,
                                              cfg.seed)
        num_labels = train_set.num_labels
        features = label_features(input_ids, labels, vocab_size, train_set.pad_token_id,
                                  options.feature_dim, cfg.seed)
        num_clusters = clusters_for_leaf_size(num_labels, options.cluster_size)
        assign, _ = balanced_kmeans(features, num_clusters=num_clusters, seed=cfg.seed)
        table = cluster_table(assign, num_clusters)
        model = cls(vocab_size, num_labels, num_clusters, table.shape[1], train_set.max_len,
                    train_set.pad_token_id, embed_dim, options.num_filters, options.dropout,
                    options.top_clusters, cfg.fused, embeddings, options.meta_dropout, options.extreme_dropout,
                    options.predict_clusters, options.ova, options.word_dropout,
                    neighbour_candidates=options.neighbour_candidates, tfidf_candidates=options.tfidf_candidates,
                    centroid_candidates=options.centroid_candidates)
        # Until fit_fusion fits them, the mix is even over its terms.
        even = 1 / (1 + len(options.mix_weights))
        for name, value in options.mix_weights.items():
            setattr(model, name, even if value is None else value)
        model.label_cluster.copy_(assign)
        model.cluster_labels.copy_(table)
        unknown_id = getattr(train_set.tokenizer, "unk_token_id", None)
        if options.centroid_fusion:
            model.add_centroids(input_ids, labels, options.centroid_bigrams, unknown_id)
        if options.tfidf_neighbours:
            model.add_tfidf_neighbours(input_ids, labels, options.tfidf_k, options.tfidf_temperature, unknown_id)
        if options.label_names:
            model.add_label_names(train_set, input_ids)
        if options.word_counts:
            counts = WordLabelCounts.build(input_ids, labels, vocab_size, (train_set.pad_token_id, unknown_id))
            model.word_counts = counts.to(model.label_cluster.device)
            model.config.update(word_label_pairs=counts.keys.numel())
        if options.learned_mix:
            # The title neighbours join the mix after training; the ranker counts them now. Its terms
            # are the mix's and the model's score, the meta probability apart, the name shares and
            # the word counts' shares.
            name_terms = len(LabelNameMatch.TERMS) if options.label_names else 0
            count_terms = len(WordLabelCounts.TERMS) if options.word_counts else 0
            model.add_ranker(labels, len(options.mix_weights) + 2 + name_terms + count_terms, options.ranker_hidden)
        model.init_biases(labels)
        return model

    def add_centroids(self, input_ids: torch.Tensor, labels, bigrams: bool = False,
                      unknown_id: Optional[int] = None) -> None:
        """Builds the TF-IDF label centroids of the training titles ``input_ids`` (this model's
        tokenizer) with ``labels`` (scipy sparse ``[N, L]``), so that inference mixes them in at
        ``fusion_alpha`` (see :meth:`fit_fusion`). Also adds them to a model trained without them.
        ``bigrams``: also on the bigrams of two or more titles; ``unknown_id``: the tokenizer's id
        of unknown words, which gets no weight."""
        centroids = TfidfCentroids.from_training_set(input_ids, labels, self.config["vocab_size"],
                                                     self.encoder.pad_id, bigrams, unknown_id)
        self.centroids = centroids.to(self.label_cluster.device)
        self.config.update(centroid_nonzeros=centroids.keys.numel(),
                           centroid_bigram_count=len(centroids.vocabulary.bigrams))

    def add_tfidf_neighbours(self, input_ids: torch.Tensor, labels, k: int = 50, temperature: float = 0.2,
                             unknown_id: Optional[int] = None) -> None:
        """Indexes the training titles ``input_ids`` (with ``labels``, scipy sparse ``[N, L]``) by
        TF-IDF, so that inference mixes in the label votes of each title's ``k`` nearest at
        ``tfidf_weight`` (see :class:`xcops.models.tfidf_neighbours.TfidfNeighbours`). Needs no
        trained encoder, so :meth:`create` builds it; also adds it to a trained model."""
        index = TfidfNeighbours.build(input_ids, labels, self.config["vocab_size"], self.encoder.pad_id, k,
                                      temperature, unknown_id)
        self.tfidf_neighbours = index.to(self.label_cluster.device)
        self.config.update(tfidf_titles=index.num_titles, tfidf_postings=index.posting_titles.numel(),
                           tfidf_pairs=index.keys.numel(), tfidf_k=k, tfidf_temperature=temperature)

    def add_label_names(self, train_set, input_ids: torch.Tensor) -> None:
        """Reads the label names of ``train_set`` (an :class:`XCTextDataset` with ``Y.txt``, and the
        built-in word tokenizer) so that the ranker sees how much of each candidate's name a title
        holds (:class:`xcops.models.label_names.LabelNameMatch`), the idf of the name words taken
        from the training titles ``input_ids``."""
        if train_set.label_names is None:
            raise ValueError(f"syncxml model_args: label_names needs the label names, but {train_set.data_dir} "
                             "has no Y.txt")
        tokenizer = train_set.tokenizer
        if not isinstance(tokenizer, SimpleTokenizer):
            raise ValueError(f"syncxml model_args: label_names matches the words of the built-in tokenizer, got a "
                             f"{type(tokenizer).__name__}")
        names = LabelNameMatch.build(tokenizer.words, train_set.label_names, tokenizer.split, input_ids,
                                     (tokenizer.pad_token_id, tokenizer.unk_token_id))
        self.label_names = names.to(self.label_cluster.device)
        self.config.update(label_name_pairs=names.name_stems.numel())

    def add_ranker(self, labels, num_terms: int, hidden: int = 32) -> None:
        """Ranks the candidates by a :class:`xcops.models.candidate_ranker.CandidateRanker` over
        ``num_terms`` terms (the model's score and those it mixes), which :meth:`fit_fusion`
        fits; ``labels`` (scipy sparse ``[N, L]``, the training titles) give the labels' frequencies."""
        ranker = CandidateRanker(num_terms, len(self.label_cluster), hidden)
        ranker.set_label_counts(labels)
        self.ranker = ranker.to(self.label_cluster.device)
        self.config.update(ranker_terms=num_terms, ranker_hidden=hidden)

    @torch.no_grad()
    def add_neighbours(self, input_ids: torch.Tensor, labels, device, dim: int = 128, k: int = 20,
                       temperature: float = 0.1, seed: int = 0, batch_size: int = 1024,
                       progress: bool = False) -> None:
        """Indexes the training titles ``input_ids`` (with ``labels``, scipy sparse ``[N, L]``) by
        this model's query vectors, so that inference mixes in their label votes at
        ``neighbour_weight`` (see :class:`xcops.models.title_neighbours.TitleNeighbours`). Call it
        once the encoder is trained; it also adds them to a model trained without them."""
        was_training = self.training
        self.eval()
        self.neighbours = TitleNeighbours.build(lambda ids: self.encoder(ids.to(device)), input_ids, labels, dim, k,
                                                temperature, seed, batch_size, progress)
        self.train(was_training)
        self.config.update(neighbour_titles=len(self.neighbours.vectors), neighbour_pairs=self.neighbours.keys.numel(),
                           neighbour_dim=self.neighbours.basis.shape[1], neighbour_k=k,
                           neighbour_temperature=temperature)

    @torch.no_grad()
    def init_biases(self, labels) -> None:
        """Start the heads' biases at the positive rates of the training labels (``[N, L]``
        scipy sparse). Positives are rare (a few of thousands of clusters), and Adam moves a
        bias by about lr per step: from 0 it would take hundreds of steps to reach logits near
        -7, steps in which the rest of the network is pushed to predict "negative" instead of
        learning from the input."""
        labels = labels.tocsr()
        if self.ova:
            init_bias_from_label_rates(self.extreme.bias, labels)
            return
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
        return dict(self.config, fusion_alpha=self.fusion_alpha, neighbour_weight=self.neighbour_weight,
                    tfidf_weight=self.tfidf_weight, neighbour_candidates=self.neighbour_candidates,
                    tfidf_candidates=self.tfidf_candidates, centroid_candidates=self.centroid_candidates)

    @classmethod
    def from_metadata(cls, meta: dict) -> "SyncXML":
        return cls(**meta)

    def forward(self, input_ids: torch.Tensor, cluster_targets: Optional[torch.Tensor] = None,
                detach_extreme: bool = False):
        """``(meta_logits [B, C], clusters [B, K], shortlist [B, K * S], extreme_logits [B, K * S])``
        in training.

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
        batch = len(indptr) - 1
        indptr, indices = indptr.to(device), indices.to(device)
        rows = torch.repeat_interleave(torch.arange(batch, device=device), indptr.diff())
        input_ids = self.drop_words(input_ids.to(device))
        if self.ova:
            head = self.extreme_hidden(self.encoder(input_ids.to(device)))
            logits = nn.functional.linear(head, self.extreme.weight, self.extreme.bias)
            targets = torch.zeros_like(logits)
            targets[rows, indices] = 1.0
            return masked_bce_with_logits(logits, targets)
        cluster_targets = torch.zeros(batch, len(self.cluster_labels), device=device)
        cluster_targets[rows, self.label_cluster[indices]] = 1.0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            meta_logits, _, shortlist, extreme_logits = self(input_ids.to(device), cluster_targets, detach_extreme)
        valid = shortlist >= 0
        targets = shortlist_targets(shortlist, rows, indices, len(self.label_cluster)) & valid
        extreme_loss = masked_bce_with_logits(extreme_logits, targets, valid)
        return extreme_loss + masked_bce_with_logits(meta_logits, cluster_targets)

    def drop_words(self, input_ids: torch.Tensor) -> torch.Tensor:
        """In training, each token becomes padding with chance ``word_dropout``, so that the
        heads cannot key on one rare word of a title. Without it the yso model memorises:
        62% P@1 on training titles against 35% on test ones."""
        if not self.training or self.word_dropout == 0:
            return input_ids
        dropped = torch.rand(input_ids.shape, device=input_ids.device) < self.word_dropout
        return input_ids.masked_fill(dropped, self.encoder.pad_id)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.encoder.embed.weight, *self.extreme.sparse_parameters()]

    def train_step(self, optimizers, batch, detach_extreme: bool) -> torch.Tensor:
        return self.optimizer_step(optimizers, self.loss(*batch, detach_extreme=detach_extreme))

    def fit(self, cfg, train_set, device, progress=True, state_dir=None) -> dict:
        options = SyncXMLOptions.parse(cfg.model_args)
        self.encoder.embed.weight.requires_grad_(options.embed_lr_scale > 0)
        optimizers = self.make_optimizers(cfg.lr, sparse_lr=cfg.lr * options.embed_lr_scale)
        dataset, rows = dataset_rows(train_set)
        # Rows the model never trains on (nor :meth:`create` learns from), so the mix is fitted on
        # scores like the test's; each process holds out those of its share.
        held = torch.isin(rows, held_out_rows(len(dataset), options, cfg.seed, _world_size()))
        held_out, rows = rows[held], rows[~held]
        train_set = torch.utils.data.Subset(dataset, rows.tolist())
        batches = torch.Generator().manual_seed(cfg.seed)
        # BatchNorm cannot train on a batch of one row, which an uneven last batch can be.
        loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                             collate_fn=XCTextDataset.collate,
                                             drop_last=len(train_set) > cfg.batch_size, generator=batches)
        total_steps = cfg.epochs * len(loader)
        factor = (one_cycle(total_steps, options.pct_start, options.div_factor, options.final_div_factor)
                  if options.schedule == "onecycle" else (lambda step: 1.0))
        schedulers = per_step_schedulers(optimizers, factor)
        detach_steps = round(options.detach_fraction * total_steps)
        self.train()
        meter = TrainingMeter()
        checkpoints = EpochCheckpoints(cfg, state_dir, model=self, optimizers=optimizers, schedulers=schedulers,
                                       batches=batches, meter=meter)
        first_epoch = checkpoints.restore()
        step = first_epoch * len(loader)
        for epoch in range(first_epoch, cfg.epochs):
            bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
            for batch in bar:
                loss = self.train_step(optimizers, batch, detach_extreme=step < detach_steps).item()
                lr = optimizers[0].param_groups[0]["lr"]
                for scheduler in schedulers:
                    scheduler.step()
                step += 1
                bar.set_postfix(meter.update(loss, len(batch[1]) - 1, lr))
            checkpoints.save(epoch + 1)
        final_lr = cfg.lr * factor(step - 1) if step else cfg.lr  # the rate of the last step
        stats = dict(num_clusters=len(self.cluster_labels), cluster_width=self.cluster_labels.shape[1],
                     train_loss=meter.loss, train_steps=step, final_lr=final_lr, resumed_at_epoch=first_epoch)
        if options.title_neighbours:
            trained = rows if _world_size() == 1 else gather_rows(rows.to(device), len(rows) * _world_size()).cpu()
            trained = trained.sort().values
            self.add_neighbours(dataset.input_ids[trained], dataset.labels[trained.numpy()], device,
                                options.neighbour_dim, options.neighbour_k, options.neighbour_temperature, cfg.seed,
                                cfg.eval_batch_size, progress)
        if len(held_out):
            unseen = unseen_titles(dataset.input_ids, held_out)
            labels = dataset.labels[unseen.numpy()]
            fitted = self.fit_fusion(dataset.input_ids[unseen], labels, cfg.top_k, cfg.eval_batch_size, device,
                                     cfg.seed)
            stats.update(fusion_fit_rows=len(unseen))
            if "ranker_loss" in fitted:
                stats.update(ranker_loss=fitted["ranker_loss"])
        if self.centroids is not None:
            stats.update(fusion_alpha=self.fusion_alpha)
        if self.neighbours is not None:
            stats.update(neighbour_weight=self.neighbour_weight, neighbour_titles=len(self.neighbours.vectors))
        if self.tfidf_neighbours is not None:
            stats.update(tfidf_weight=self.tfidf_weight, tfidf_titles=self.tfidf_neighbours.num_titles)
        if self.mixes:
            stats.update(fusion_rows=len(held_out))
        return stats

    @property
    def mixes(self) -> bool:
        """Whether inference ranks by the mix of the model's score with others (:meth:`fit_fusion`)."""
        return len(self._mix_names()) > 1

    @torch.no_grad()
    def fit_fusion(self, input_ids: torch.Tensor, labels, k: int, batch_size: int, device, seed: int = 0) -> dict:
        """Fits the weights of the log-linear mix (``fusion_alpha`` for the centroids,
        ``neighbour_weight`` for the title neighbours, ``tfidf_weight`` for the TF-IDF neighbours,
        the rest for the model's own score) as the
        point of :func:`xcops.models.score_fusion.weight_grid` with the best mean P@1/3/5 on
        these rows (``labels``: scipy sparse ``[N, L]``), and returns them by name. In a
        distributed run every rank passes its own rows, about as many as the others, and all of
        them get the weights that are best over all. A model with a ranker also fits it (from
        ``seed``) on the same rows and scores, and reports its final loss as ``ranker_loss``."""
        candidates, terms, hits = self.mix_inputs(input_ids, labels, k, batch_size, device)
        total = _sum_over_ranks if _world_size() > 1 else None
        weights = fit_weights(terms[: len(self._mix_names())], candidates, hits, total)
        fitted = dict(zip(self._mix_names(), weights))
        fitted.pop("model")
        for name, value in fitted.items():
            setattr(self, name, value)
        if self.ranker is not None:
            with torch.enable_grad():
                fitted.update(ranker_loss=self.ranker.fit(terms, candidates, hits, seed=seed, total=total))
        return fitted

    @torch.no_grad()
    def mix_inputs(self, input_ids: torch.Tensor, labels, k: int, batch_size: int,
                   device) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(candidates [N, C], the ranker's terms, each [N, C], hits [N, C])`` of these rows:
        what :meth:`fit_fusion` fits on (``hits``: whether each candidate is a positive in
        ``labels``, scipy sparse ``[N, L]``). The mix weighs the first ``len(_mix_names())`` terms
        (see :meth:`_ranker_terms`)."""
        if not self.mixes:
            raise ValueError("fit_fusion needs a SyncXML model built with centroid_fusion, title_neighbours or "
                             "tfidf_neighbours")
        was_training = self.training
        self.eval()
        parts = []
        for chunk in input_ids.split(batch_size):
            chunk = chunk.to(device)
            candidates, scores, nearest = self._ranked_candidates(chunk, k)
            parts.append((candidates, *self._ranker_terms(chunk, nearest, candidates, scores)))
        self.train(was_training)
        # Chunks differ in width where neighbour labels join the candidates; mixed_scores masks the padding.
        width = max((part[0].shape[1] for part in parts), default=0)
        candidates, *terms = (torch.cat([nn.functional.pad(t, (0, width - t.shape[1]), value=-1 if i == 0 else 0)
                                         for t in column]) for i, column in enumerate(zip(*parts)))
        labels = labels.tocsr()
        hits = relevant(candidates, torch.from_numpy(labels.indptr).long(), torch.from_numpy(labels.indices).long(),
                        len(self.label_cluster))
        return candidates, terms, hits

    @torch.no_grad()
    def predict(self, input_ids, k, batch_size, device, progress=True) -> torch.Tensor:
        """The top-k labels by ``sigmoid(extreme) * meta probability of the label's cluster``.

        The extreme head ranks each row's shortlist (the labels of its ``predict_clusters``
        best meta clusters) with ``shortlist_topk``, keeping ``max(4k, 50)`` candidates (and the
        labels of the ``neighbour_candidates`` and ``tfidf_candidates`` nearest training titles and
        of the ``centroid_candidates`` nearest centroids),
        which the meta probabilities then reorder, or the fitted mix with the centroids and
        neighbours ranks, or the fitted ranker over the mix's terms (``learned_mix``).
        One-vs-all ranks all labels with ``dense_topk``.
        """
        was_training = self.training
        self.eval()
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            ids = input_ids[start : start + batch_size].to(device)
            out.append(self._predict_batch(ids, k).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)

    def _predict_batch(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        if self.ova:
            head = self.extreme_hidden(self.encoder(ids)).float()
            values, labels = self.extreme.topk(head, min(k, len(self.label_cluster)))
            return nn.functional.pad(labels, (0, k - labels.shape[1]), value=-1)
        candidates, scores, nearest = self._ranked_candidates(ids, k)
        if self.ranker is not None:
            scores = self.ranker(self._ranker_terms(ids, nearest, candidates, scores), candidates)
        elif self.mixes:
            weights = [getattr(self, name) for name in self._mix_names()[:-1]]
            scores = mixed_scores([*weights, 1 - sum(weights)], self._mix_terms(ids, nearest, candidates, scores),
                                  candidates)
        scores = scores.masked_fill(candidates < 0, float("-inf"))
        values, slots = scores.topk(min(k, candidates.shape[1]), dim=1)
        labels = candidates.gather(1, slots).masked_fill(values == float("-inf"), -1)
        return nn.functional.pad(labels, (0, k - labels.shape[1]), value=-1)

    def _ranked_candidates(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(labels, scores, nearest)``: the extreme head's best ``C = max(4k, 50)`` labels of
        each row's shortlist (-1 pads), by ``shortlist_topk``, joined by the labels of the
        ``neighbour_candidates`` nearest training titles in the model's space and of the
        ``tfidf_candidates`` nearest by TF-IDF and the ``centroid_candidates`` labels of the nearest
        TF-IDF centroids when set, and their ``sigmoid(extreme logit) *
        meta probability of the label's cluster``, both ``[B, C']``; and the ``nearest(...)``
        of the title neighbours (key ``"title"``) and of the TF-IDF neighbours (``"tfidf"``),
        each when the model has them, and the meta probability of each candidate's cluster (``"meta"``)."""
        query = self.encoder(ids)
        head = self.extreme_hidden(query).float()
        meta_prob = self.meta(self.meta_hidden(query)).float().sigmoid()
        clusters = meta_prob.topk(self.predict_clusters, dim=1).indices
        shortlist = self.cluster_labels[clusters].flatten(1)
        logits, labels = self.extreme.topk(head, min(max(4 * k, 50), shortlist.shape[1]), shortlist)
        nearest, joined = {}, labels
        for name, index, searched, count in (("title", self.neighbours, query, self.neighbour_candidates),
                                             ("tfidf", self.tfidf_neighbours, ids, self.tfidf_candidates)):
            if index is None or index.num_titles == 0:
                continue
            nearest[name] = index.nearest(searched)
            if count:
                # The shortlist misses a third of the test positives on yso-finna-en (bench/RESULTS.md);
                # the neighbours' labels need no meta cluster to be found.
                joined = union_candidates(joined, index.labels_of(nearest[name][1][:, :count]))
        if self.centroids is not None and self.centroid_candidates:
            joined = union_candidates(joined, self.centroids.top_labels(ids, self.centroid_candidates))
        if joined is not labels:
            joined = joined.sort(dim=1, descending=True).values
            labels = joined[:, : int((joined >= 0).sum(1).max())]
            logits = self.extreme(head, labels).masked_fill(labels < 0, float("-inf"))
        # The ranker sees the meta probability apart from the extreme head's (see _ranker_terms).
        nearest["meta"] = meta_prob.gather(1, self.label_cluster[labels.clamp_min(0)])
        return labels, logits.sigmoid() * nearest["meta"], nearest

    def _mix_names(self) -> list[str]:
        """The weights of the mix, in the order of :meth:`_mix_terms`."""
        return ((["fusion_alpha"] if self.centroids is not None else [])
                + (["neighbour_weight"] if self.neighbours is not None else [])
                + (["tfidf_weight"] if self.tfidf_neighbours is not None else []) + ["model"])

    def _mix_terms(self, ids: torch.Tensor, nearest: dict, candidates: torch.Tensor,
                   scores: torch.Tensor) -> list[torch.Tensor]:
        """The logs of the candidates' scores that the mix weighs: the centroid cosine, the
        votes of the title neighbours and of the TF-IDF neighbours (each when the model has
        them) and the model's score. A candidate sharing no word with its label's centroid, or
        carried by no neighbour, scores 0: the floors keep its log finite, below that of any
        candidate that scores."""
        terms = []
        if self.centroids is not None:
            terms.append(self.centroids(ids, candidates).clamp_min(CENTROID_FLOOR).log())
        for name, index in (("title", self.neighbours), ("tfidf", self.tfidf_neighbours)):
            if index is not None:
                votes = (index.votes(nearest[name], candidates) if name in nearest
                         else torch.zeros(candidates.shape, device=candidates.device))
                terms.append(votes.clamp_min(VOTE_FLOOR).log())
        return [*terms, scores.float().clamp_min(SCORE_FLOOR).log()]

    def _ranker_terms(self, ids: torch.Tensor, nearest: dict, candidates: torch.Tensor,
                      scores: torch.Tensor) -> list[torch.Tensor]:
        """The terms of the mix, then the log meta probability of each candidate's cluster:
        the model's score is its product with the extreme head's sigmoid, and the ranker can weigh
        the two apart (the extreme head knows little of the rare labels); then, with label names,
        the shares of each candidate's name that the title holds."""
        meta = nearest["meta"].float().clamp_min(SCORE_FLOOR).log()
        names = self.label_names(ids, candidates) if self.label_names is not None else []
        counts = self.word_counts(ids, candidates) if self.word_counts is not None else []
        return [*self._mix_terms(ids, nearest, candidates, scores), meta, *names, *counts]


def dataset_rows(dataset) -> tuple[XCTextDataset, torch.Tensor]:
    """``(the XCTextDataset, the row ids it is trained on)`` of a dataset or of a ``Subset`` of
    one (a rank's share in ``xcops train --nproc``)."""
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.int64)
    return dataset, torch.arange(len(dataset))


def held_out_rows(num_rows: int, options: SyncXMLOptions, seed: int, world: int = 1) -> torch.Tensor:
    """The sorted rows of a ``num_rows``-title training set held out to fit the mix, when a
    weight of it is to be fitted (else none): drawn with ``seed``, ``fusion_rows / world`` of
    each process's share (at most a fifth), so that every process runs the same number of steps.
    The shares are :func:`xcops.distributed.training.training_rows`'; the set is the same on
    every process, and :meth:`SyncXML.create` leaves it out too."""
    if not options.fits_mix:
        return torch.empty(0, dtype=torch.int64)
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    order = order[order < num_rows - num_rows % world]  # the rows that training_rows drops are in no share
    per_share = min(max(options.fusion_rows // world, 1), num_rows // world // 5)
    return torch.cat([order[order % world == rank][:per_share] for rank in range(world)]).sort().values


def unseen_titles(input_ids: torch.Tensor, held_out: torch.Tensor) -> torch.Tensor:
    """The ``held_out`` rows whose token ids occur once in ``input_ids`` (all training rows), or
    all of them if none does. A test title never repeats a training title (yso-finna-en splits by
    title hash), but a random held-out row can, and the model has trained on its answer under
    that title. On yso this drops 184 of 5,000 held-out rows and changed none of the fitted
    weights (bench/RESULTS.md)."""
    _, inverse, counts = torch.unique(input_ids, dim=0, return_inverse=True, return_counts=True)
    unseen = held_out[counts[inverse[held_out]] == 1]
    return unseen if len(unseen) else held_out


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(values)
    return values


def label_svd_embeddings(input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int, embed_dim: int,
                         seed: int) -> torch.Tensor:
    """Word vectors from the training titles ``input_ids`` and their ``labels``: row w is word
    w's TF-IDF association with every label (its column of PIFA), in the coordinates of PIFA's
    rank-``embed_dim`` SVD, scaled to unit norm. Words that predict the same labels start close,
    so the encoder starts from what a linear model would learn; no pretrained vectors can be
    downloaded here. Padding is zero."""
    _, words = pifa_svd(input_ids, labels, vocab_size, pad_id, embed_dim, seed)
    # The SVD has at most min(L, V) columns; the rest start at 0 and are learned.
    words = nn.functional.pad(words, (0, embed_dim - words.shape[1]))
    words = nn.functional.normalize(words, dim=1)
    # Padding and unseen ids have no PIFA column: set them to 0, not to normalised rounding noise.
    seen = torch.bincount(input_ids.flatten(), minlength=len(words)) > 0
    seen[pad_id] = False
    return words * seen.unsqueeze(1)

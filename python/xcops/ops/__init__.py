"""Public functional API of the xcops ops; ``reference`` holds their pure-PyTorch twins."""

from . import reference
from .clustering import balanced_kmeans, clusters_to_csr
from .dense_topk import dense_topk, hard_negatives
from .shortlist import shortlist_score, shortlist_topk

__all__ = [
    "balanced_kmeans",
    "clusters_to_csr",
    "dense_topk",
    "hard_negatives",
    "reference",
    "shortlist_score",
    "shortlist_topk",
]

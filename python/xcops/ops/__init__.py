"""Public functional API of the xcops ops; ``reference`` holds their pure-PyTorch twins."""

from . import reference
from .clustering import balanced_kmeans, clusters_to_csr
from .csr import device_checks, set_device_checks
from .dense_topk import dense_topk, hard_negatives
from .shortlist import shortlist_score, shortlist_topk

__all__ = [
    "balanced_kmeans",
    "clusters_to_csr",
    "dense_topk",
    "device_checks",
    "hard_negatives",
    "reference",
    "set_device_checks",
    "shortlist_score",
    "shortlist_topk",
]

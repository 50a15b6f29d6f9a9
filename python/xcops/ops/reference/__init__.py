"""Pure-PyTorch references of every xcops op: what the tests compare the kernels against.

They follow the op contracts literally and materialise whatever they need, so keep inputs
small. One module per op family.
"""

from .clustering import balanced_kmeans
from .shortlist import shortlist_score, shortlist_topk
from .topk import dense_topk, hard_negatives

__all__ = ["balanced_kmeans", "dense_topk", "hard_negatives", "shortlist_score", "shortlist_topk"]

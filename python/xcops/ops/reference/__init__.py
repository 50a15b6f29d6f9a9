"""Pure-PyTorch references of every xcops op: what the tests compare the kernels against.

They follow the op contracts literally and materialise whatever they need, so keep inputs
small. One module per op family.
"""

from .shortlist import shortlist_score, shortlist_topk

__all__ = ["shortlist_score", "shortlist_topk"]

"""Public functional API of the xcops ops; ``reference`` holds their pure-PyTorch twins."""

from . import reference
from .shortlist import shortlist_score, shortlist_topk

__all__ = ["reference", "shortlist_score", "shortlist_topk"]

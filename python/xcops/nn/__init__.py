"""Drop-in ``nn.Module`` layers over the xcops ops, for use in any XC training code."""

from .sharded import ShardedShortlistLinear
from .shortlist_linear import ShortlistLinear
from .triplet_loss import HardNegativeTripletLoss

__all__ = ["HardNegativeTripletLoss", "ShardedShortlistLinear", "ShortlistLinear"]

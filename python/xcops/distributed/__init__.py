"""Label-sharded XC over torch.distributed: each rank holds a contiguous slice of the labels.

gloo on CPU and NCCL on GPU both work: the ops use only ``all_to_all_single`` and
``all_gather``. See the README section "Label-sharded training" for a runnable example.
"""

from .comm import traffic
from .partition import LabelPartition
from .sharded_ops import sharded_dense_topk, sharded_shortlist_score, sharded_shortlist_topk

__all__ = ["LabelPartition", "sharded_dense_topk", "sharded_shortlist_score", "sharded_shortlist_topk",
           "traffic"]

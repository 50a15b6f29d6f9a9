"""xcops: fused CPU/CUDA torch ops and models for deep extreme classification (XC).

The ops are registered as ``torch.ops.xcops.*`` when the compiled extension loads; the
functions exported here are their documented Python entry points.
"""

import torch  # noqa: F401  (loads torch's shared libraries before our extension links to them)

from ._build import _C  # checks the build against this torch, then registers torch.ops.xcops.*
from . import losses
from .ops import (
    balanced_kmeans,
    clusters_to_csr,
    dense_topk,
    device_checks,
    hard_negatives,
    set_device_checks,
    shortlist_score,
    shortlist_topk,
)

__version__ = "0.1.0"


def build_info() -> dict:
    """How the compiled extension was built.

    Returns a dict with ``cuda`` (whether CUDA kernels were compiled), ``cuda_archs`` (the
    compute capabilities they were compiled for), ``cuda_version`` and ``torch_version``
    (the torch the extension was compiled against; it must match the torch you run).
    """
    return dict(_C.build_info())


__all__ = [
    "balanced_kmeans",
    "build_info",
    "clusters_to_csr",
    "dense_topk",
    "device_checks",
    "hard_negatives",
    "losses",
    "set_device_checks",
    "shortlist_score",
    "shortlist_topk",
    "__version__",
]

"""Balanced hierarchical spherical 2-means (the clustering of pyxclib and PECOS).

Clusters label or query embeddings into equally sized groups, as SyncXML's meta-labels and
NGAME's cluster batches need.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch

from . import checks

_ops = torch.ops.xcops


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def clusters_for_leaf_size(num_points: int, leaf_size: int) -> int:
    """The number of clusters ``2^depth`` of the shallowest tree whose leaves hold at most
    ``leaf_size`` of ``num_points`` points (a leaf holds floor or ceil of N / 2^depth)."""
    leaf_size = _positive_int("leaf_size", leaf_size)
    clusters = 1
    while -(-num_points // clusters) > leaf_size:
        clusters *= 2
    return clusters


def resolve_num_clusters(
    x: torch.Tensor, num_clusters: Optional[int], leaf_size: Optional[int]
) -> int:
    """The cluster count of a call that passes exactly one of num_clusters and leaf_size."""
    if (num_clusters is None) == (leaf_size is None):
        raise ValueError(
            f"pass exactly one of num_clusters and leaf_size, got num_clusters={num_clusters!r} "
            f"and leaf_size={leaf_size!r}"
        )
    if num_clusters is not None:
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, numbers.Integral):
            raise ValueError(f"num_clusters must be an integer, got {num_clusters!r}")
        return int(num_clusters)  # the op checks its value
    if x.dim() != 2 or x.shape[0] == 0:
        return 1  # the op reports a malformed x itself; any valid count lets it get that far
    clusters = clusters_for_leaf_size(x.shape[0], leaf_size)
    if clusters > x.shape[0]:
        raise ValueError(
            f"leaf_size={leaf_size} needs {clusters} clusters for N = {x.shape[0]} points, more "
            "than N, so some would be empty; use leaf_size >= 2 or num_clusters"
        )
    return clusters


def balanced_kmeans(
    x: torch.Tensor,
    num_clusters: Optional[int] = None,
    leaf_size: Optional[int] = None,
    iters: int = 10,
    seed: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split the rows of ``x`` into ``2^depth`` clusters of equal size (within one point).

    Rows are L2-normalised (spherical k-means); the tree is built top down, each node split
    in two by 2-means: two random seed points, then repeatedly score every point with
    ``<c_right - c_left, x>``, put the lower-scoring ceil(n/2) points left and the rest right
    (ties by lower row index), and recompute the unit-norm centroids, until the split stops
    changing or after ``iters`` splits. On the GPU every node of a level is split at once.

    Args:
        x: ``[N, d]`` float32, float64, bfloat16 or float16, N >= 1, finite. Computation is
            float32 (float64 for float64).
        num_clusters: a power of two <= N.
        leaf_size: instead of ``num_clusters``: split until every cluster has at most
            ``leaf_size`` points, i.e. the smallest ``2^depth`` with ceil(N / 2^depth) <=
            leaf_size. Pass exactly one of the two.
        iters: maximum number of splits per node (>= 1).
        seed: the seed points of every node derive from it; the same seed, input and device
            give the same result.

    Returns:
        ``(assign [N] int64`` cluster of each row, ``centroids [C, d]`` the unit-norm mean of
        each cluster's normalised rows, in the dtype of ``x``). Cluster sizes are floor or
        ceil of N / C; clusters 2k and 2k+1 are siblings in the tree.

    Example:
        >>> import torch, xcops
        >>> assign, centroids = xcops.balanced_kmeans(torch.randn(1000, 16), leaf_size=100)
        >>> centroids.shape, torch.bincount(assign).unique().tolist()
        (torch.Size([16, 16]), [62, 63])
    """
    checks.dense_matrix("xcops.balanced_kmeans", "x", x)
    clusters = resolve_num_clusters(x, num_clusters, leaf_size)
    for name, value in (("iters", iters), ("seed", seed)):  # the op checks the value of iters
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not -(2**63) <= value < 2**63:
            raise ValueError(f"{name} must be a 64-bit integer, got {value!r}")
    return _ops.balanced_kmeans(x.contiguous(), clusters, int(iters), int(seed))


def clusters_to_csr(assign: torch.Tensor, num_clusters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Members of each cluster as CSR: cluster c holds ``members[indptr[c]:indptr[c + 1]]``.

    Args:
        assign: ``[N]`` integer cluster ids in ``[0, num_clusters)``, e.g. from
            :func:`balanced_kmeans`.
        num_clusters: the number of clusters C (empty clusters get empty ranges).

    Returns:
        ``(indptr [C + 1]`` int64, ``members [N]`` int64 row indices, ascending within each
        cluster), on the device of ``assign``.

    Example:
        >>> import torch, xcops
        >>> xcops.clusters_to_csr(torch.tensor([1, 0, 1, 1]), 3)
        (tensor([0, 1, 4, 4]), tensor([1, 0, 2, 3]))
    """
    integer = not (assign.dtype.is_floating_point or assign.dtype.is_complex or assign.dtype == torch.bool)
    if assign.dim() != 1 or not integer:
        raise ValueError(
            f"assign must be a 1-D integer tensor, got {assign.dtype} of shape {tuple(assign.shape)}"
        )
    num_clusters = _positive_int("num_clusters", num_clusters)
    assign = assign.long()
    if assign.numel() > 0:
        low, high = (int(v) for v in torch.aminmax(assign))
        if low < 0 or high >= num_clusters:
            raise ValueError(
                f"assign must lie in [0, num_clusters = {num_clusters}), got values in [{low}, {high}]"
            )
    # A stable sort keeps the members of each cluster in ascending row order.
    members = torch.sort(assign, stable=True).indices
    counts = torch.bincount(assign, minlength=num_clusters)
    indptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return indptr, members


@torch.library.register_fake("xcops::balanced_kmeans")
def _balanced_kmeans_fake(x, num_clusters, iters, seed):
    checks.balanced_kmeans_args("xcops.balanced_kmeans", x, num_clusters, iters)
    return x.new_empty(x.shape[0], dtype=torch.int64), x.new_empty(num_clusters, x.shape[1])

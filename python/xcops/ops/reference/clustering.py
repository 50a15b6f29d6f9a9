"""Reference of balanced k-means: pyxclib's ``cluster_balance(b_kmeans_dense)``, node by node.

A plain PyTorch transcription of pyxclib's recursion (xclib/utils/clustering.py): every node
takes two distinct random points as centroids, sorts its points by the difference of their
similarities to the two, gives the first half (ceil(n/2) points, ``np.array_split``) to the
left child and the rest to the right, recomputes the normalised mean of each half, and
repeats while the mean similarity of points to their own centroid improves by at least
``tol``. ``iters`` caps the number of splits of a node (pyxclib has no cap). Seed points come
from one ``torch.Generator`` seeded with ``seed`` and drawn in node order, level by level.
It runs on the device of ``x``, one node after the other, as the anchor the op is measured
against; results are not expected to equal the op's (different seed points).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..clustering import resolve_num_clusters


def _split(x: torch.Tensor, generator: torch.Generator, iters: int, tol: float):
    """pyxclib's b_kmeans_dense on the unit rows x of one node: (left rows, right rows)."""
    n = x.shape[0]
    seeds = torch.randint(n, (2,), generator=generator)
    while seeds[0] == seeds[1]:
        seeds = torch.randint(n, (2,), generator=generator)
    centroids = x[seeds.to(x.device)]
    similarity = x @ centroids.T
    old, new = -1e6, -2.0
    for _ in range(iters):
        if new - old < tol:
            break
        order = torch.argsort(similarity[:, 1] - similarity[:, 0], stable=True)
        left, right = order[: (n + 1) // 2], order[(n + 1) // 2 :]
        centroids = F.normalize(torch.stack([x[left].mean(0), x[right].mean(0)]), dim=1)
        similarity = x @ centroids.T
        objective = (similarity[left, 0].sum() + similarity[right, 1].sum()) / n
        old, new = new, float(objective)
    return left, right


def balanced_kmeans(
    x: torch.Tensor,
    num_clusters: Optional[int] = None,
    leaf_size: Optional[int] = None,
    iters: int = 10,
    seed: int = 0,
    tol: float = 1e-4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`xcops.balanced_kmeans` (same arguments and outputs; ``tol`` is
    pyxclib's stopping threshold on the objective)."""
    clusters = resolve_num_clusters(x, num_clusters, leaf_size)
    n = x.shape[0]
    if clusters < 1 or clusters & (clusters - 1) or clusters > n:
        raise ValueError(f"num_clusters must be a power of two <= N = {n}, got {clusters}")
    xn = F.normalize(x.to(torch.float64 if x.dtype == torch.float64 else torch.float32), dim=1)
    generator = torch.Generator().manual_seed(seed)
    nodes = [torch.arange(n, device=x.device)]
    while len(nodes) < clusters:
        children = []
        for members in nodes:
            left, right = _split(xn[members], generator, iters, tol)
            children += [members[left], members[right]]
        nodes = children
    assign = torch.empty(n, dtype=torch.int64, device=x.device)
    for k, members in enumerate(nodes):
        assign[members] = k
    centroids = F.normalize(torch.stack([xn[members].mean(0) for members in nodes]), dim=1)
    return assign, centroids.to(x.dtype)

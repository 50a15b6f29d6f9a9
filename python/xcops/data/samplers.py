"""NGAME's negative-mining-aware mini-batching: batches made of whole clusters of similar queries.

In-batch negatives are only as hard as the batch is coherent: a batch of random queries holds
labels unrelated to each other, so its negatives are easy. Grouping queries whose current
embeddings are close makes their labels hard negatives for one another. The clusters go stale
as the encoder learns, so they are rebuilt every few epochs, and grow (doubling) as training
goes on, so the negatives get harder as the encoder gets better (a curriculum).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from ..ops.clustering import balanced_kmeans


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class ClusterBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batch sampler (for ``DataLoader(batch_sampler=...)``) over ``num_items`` queries.

    Before the first :meth:`update_clusters` the batches are random (``batch_size`` queries
    each). Afterwards each batch is a run of ``batch_size // cluster size`` whole clusters
    from :func:`xcops.ops.clustering.balanced_kmeans` over the query embeddings, the clusters
    in a random order per epoch. Every query comes exactly once per epoch either way.

    The schedule: :meth:`refresh_due` says when to re-cluster (epoch ``warmup``, then every
    ``refresh_interval`` epochs); :meth:`cluster_size_at` gives the cluster size of a refresh,
    ``cluster_size`` doubled every ``double_every`` refreshes, at most ``max_cluster_size``.
    The caller owns the encoder, so it computes the embeddings and passes them in.

    Deterministic: the order of an epoch depends only on ``seed``, :meth:`set_epoch` and the
    clusters; the clusters only on the embeddings, ``seed`` and the refresh epoch.
    """

    def __init__(self, num_items: int, batch_size: int, cluster_size: int = 8, max_cluster_size: int = 64,
                 warmup: int = 1, refresh_interval: int = 1, double_every: int = 1, seed: int = 0,
                 kmeans_iters: int = 10):
        super().__init__()
        _check_int("num_items", num_items, 1)
        _check_int("batch_size", batch_size, 1)
        # A cluster of one is a random batch: warm-up already covers that.
        _check_int("cluster_size", cluster_size, 2)
        _check_int("max_cluster_size", max_cluster_size, cluster_size)
        _check_int("warmup", warmup, 0)
        _check_int("refresh_interval", refresh_interval, 1)
        _check_int("double_every", double_every, 1)
        _check_int("kmeans_iters", kmeans_iters, 1)
        _check_int("seed", seed, 0)
        if max_cluster_size > batch_size:
            raise ValueError(f"max_cluster_size={max_cluster_size} exceeds batch_size={batch_size}: "
                             "a batch must hold at least one whole cluster")
        self.num_items = num_items
        self.batch_size = batch_size
        self.cluster_size = cluster_size
        self.max_cluster_size = max_cluster_size
        self.warmup = warmup
        self.refresh_interval = refresh_interval
        self.double_every = double_every
        self.seed = seed
        self.kmeans_iters = kmeans_iters
        self.epoch = 0
        self.assign: Optional[np.ndarray] = None  # cluster of each query once clustered
        self.current_cluster_size: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next ``iter`` yields."""
        _check_int("epoch", epoch, 0)
        self.epoch = epoch

    def refresh_due(self, epoch: int) -> bool:
        """Whether the clusters should be rebuilt at the start of ``epoch``."""
        return epoch >= self.warmup and (epoch - self.warmup) % self.refresh_interval == 0

    def cluster_size_at(self, epoch: int) -> int:
        """The cluster size of a refresh at ``epoch`` (>= warmup)."""
        if epoch < self.warmup:
            raise ValueError(f"epoch {epoch} is in the warm-up (the first {self.warmup} epochs): no clusters yet")
        doublings = (epoch - self.warmup) // self.refresh_interval // self.double_every
        # The cap keeps the shift small however long training runs.
        return min(self.max_cluster_size, self.cluster_size << min(doublings, self.max_cluster_size.bit_length()))

    def update_clusters(self, embeddings: torch.Tensor, epoch: int) -> None:
        """Re-cluster the queries from their ``[num_items, d]`` embeddings at ``epoch``."""
        if embeddings.dim() != 2 or embeddings.shape[0] != self.num_items:
            raise ValueError(f"embeddings must be [num_items={self.num_items}, d], got {tuple(embeddings.shape)}")
        size = self.cluster_size_at(epoch)
        assign, _ = balanced_kmeans(embeddings.detach(), leaf_size=size, iters=self.kmeans_iters,
                                    seed=self.seed + epoch)
        self.assign = assign.cpu().numpy()
        self.current_cluster_size = size

    @property
    def num_clusters(self) -> int:
        return 0 if self.assign is None else int(self.assign.max()) + 1

    def _clusters_per_batch(self) -> int:
        return max(1, self.batch_size // self.current_cluster_size)

    def __len__(self) -> int:
        if self.assign is None:
            return -(-self.num_items // self.batch_size)
        return -(-self.num_clusters // self._clusters_per_batch())

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.assign is None:
            order = rng.permutation(self.num_items)
            for start in range(0, self.num_items, self.batch_size):
                yield order[start : start + self.batch_size].tolist()
            return
        rank = rng.permutation(self.num_clusters)  # the position of each cluster in this epoch
        # Queries grouped by their cluster's position; a stable sort keeps each cluster contiguous.
        order = np.argsort(rank[self.assign], kind="stable")
        sizes = np.bincount(self.assign, minlength=self.num_clusters)[np.argsort(rank)]
        ends = np.cumsum(sizes)[self._clusters_per_batch() - 1 :: self._clusters_per_batch()].tolist()
        if not ends or ends[-1] != self.num_items:
            ends.append(self.num_items)
        start = 0
        for end in ends:
            yield order[start:end].tolist()
            start = end

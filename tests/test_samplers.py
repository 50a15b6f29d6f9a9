"""ClusterBatchSampler: NGAME's batches of whole clusters of similar queries."""

import numpy as np
import pytest
import torch

from xcops.data.samplers import ClusterBatchSampler


def clustered_points(groups: int, per_group: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Points around ``groups`` far-apart centres, group g holding rows g, g + groups, ... (so
    row order says nothing about the groups)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, dim, generator=gen) * 10
    return centres.repeat(per_group, 1) + 0.01 * torch.randn(groups * per_group, dim, generator=gen)


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def assert_covers_once(batches, num_items):
    flat = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
    assert np.array_equal(np.sort(flat), np.arange(num_items))


@pytest.mark.parametrize("num_items,batch_size", [(1, 4), (10, 3), (64, 16), (100, 32)])
def test_random_batches_before_warmup(num_items, batch_size):
    sampler = ClusterBatchSampler(num_items, batch_size, cluster_size=2, max_cluster_size=2, warmup=3)
    assert not any(sampler.refresh_due(e) for e in range(3)) and sampler.refresh_due(3)
    with pytest.raises(ValueError, match="warm-up"):
        sampler.cluster_size_at(2)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(sampler)
    assert all(len(b) == sampler.batch_size for b in batches[:-1])
    assert_covers_once(batches, num_items)
    if num_items > batch_size:
        # Shuffled, differently per epoch.
        assert batches != epoch_batches(sampler, 1)
        assert sum(batches, []) != sorted(sum(batches, []))


def test_batches_are_whole_clusters_and_cover_every_query_once():
    groups, per_group = 16, 8
    points = clustered_points(groups, per_group)
    sampler = ClusterBatchSampler(len(points), batch_size=32, cluster_size=8, max_cluster_size=8, warmup=0, seed=3)
    sampler.update_clusters(points, epoch=0)
    assert sampler.num_clusters == groups and sampler.current_cluster_size == 8
    group_of = np.arange(len(points)) % groups
    for epoch in range(3):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == len(sampler) == 4
        assert_covers_once(batches, len(points))
        for batch in batches:
            # 32 queries = 4 whole groups of 8: the clusters found are the true groups.
            counts = np.bincount(group_of[batch], minlength=groups)
            assert set(counts.tolist()) <= {0, per_group} and len(batch) == 32


@pytest.mark.parametrize("num_items", [37, 100])
def test_uneven_clusters_are_never_split(num_items):
    points = torch.randn(num_items, 8, generator=torch.Generator().manual_seed(num_items))
    sampler = ClusterBatchSampler(num_items, batch_size=20, cluster_size=6, max_cluster_size=6, warmup=0, seed=1)
    sampler.update_clusters(points, epoch=0)
    cluster_of = sampler.assign
    sizes = np.bincount(cluster_of)
    assert sizes.max() <= 6 and sizes.max() - sizes.min() <= 1
    batches = epoch_batches(sampler, 2)
    assert_covers_once(batches, num_items)
    for batch in batches:
        clusters = np.unique(cluster_of[batch])
        assert sizes[clusters].sum() == len(batch)  # every cluster touched is wholly inside
        assert len(clusters) <= 20 // 6


def test_deterministic_by_seed_and_epoch():
    points = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))

    def run(seed):
        sampler = ClusterBatchSampler(200, 32, cluster_size=4, max_cluster_size=16, warmup=1, seed=seed)
        out = [epoch_batches(sampler, 0)]
        sampler.update_clusters(points, epoch=1)
        out += [epoch_batches(sampler, 1), epoch_batches(sampler, 2)]
        return out

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert first[1] != first[2]  # the cluster order changes per epoch


def test_cluster_size_doubles_on_schedule():
    sampler = ClusterBatchSampler(512, 256, cluster_size=4, max_cluster_size=32, warmup=2, refresh_interval=3,
                                  double_every=2)
    refreshes = [e for e in range(40) if sampler.refresh_due(e)]
    assert refreshes == list(range(2, 40, 3))
    sizes = [sampler.cluster_size_at(e) for e in refreshes]
    # Doubling every second refresh, capped at max_cluster_size.
    assert sizes == [4, 4, 8, 8, 16, 16, 32, 32, 32, 32, 32, 32, 32]
    assert sampler.cluster_size_at(10**6) == 32

    points = torch.randn(512, 8, generator=torch.Generator().manual_seed(1))
    for epoch in refreshes[:5]:
        sampler.update_clusters(points, epoch)
        largest = np.bincount(sampler.assign).max()
        assert sampler.current_cluster_size == sampler.cluster_size_at(epoch)
        assert sampler.current_cluster_size // 2 < largest <= sampler.current_cluster_size
        batches = epoch_batches(sampler, epoch)
        assert_covers_once(batches, 512)
        assert max(len(b) for b in batches) <= 256


def test_errors():
    with pytest.raises(ValueError, match="max_cluster_size=64 exceeds batch_size=32"):
        ClusterBatchSampler(100, 32, cluster_size=8, max_cluster_size=64)
    with pytest.raises(ValueError, match="cluster_size must be an integer >= 2"):
        ClusterBatchSampler(100, 32, cluster_size=1)
    with pytest.raises(ValueError, match="max_cluster_size must be an integer >= 8"):
        ClusterBatchSampler(100, 32, cluster_size=8, max_cluster_size=4)
    with pytest.raises(ValueError, match="refresh_interval"):
        ClusterBatchSampler(100, 32, cluster_size=2, max_cluster_size=4, refresh_interval=0)
    sampler = ClusterBatchSampler(100, 32, cluster_size=2, max_cluster_size=4, warmup=0)
    with pytest.raises(ValueError, match=r"embeddings must be \[num_items=100, d\]"):
        sampler.update_clusters(torch.randn(99, 4), epoch=0)

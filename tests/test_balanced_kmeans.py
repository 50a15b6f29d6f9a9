"""Balanced hierarchical k-means: balance, the split rule, determinism, quality against
pyxclib's algorithm (the reference), the CSR helper, tracing, and bad input."""

import pytest
import torch
import torch.nn.functional as F

from xcops.ops.clustering import balanced_kmeans, clusters_for_leaf_size, clusters_to_csr
from xcops.ops.reference.clustering import balanced_kmeans as reference_kmeans

ops = torch.ops.xcops


def mixture(n, d, components, rng):
    """Unit rows drawn around `components` random centres."""
    centres = torch.randn(components, d, generator=rng)
    which = torch.randint(0, components, (n,), generator=rng)
    return F.normalize(centres[which] + torch.randn(n, d, generator=rng), dim=1)


def mean_cosine(x, assign, num_clusters):
    """Mean similarity of each unit row to the normalised mean of its cluster."""
    xn = F.normalize(x.double(), dim=1)
    sums = torch.zeros(num_clusters, x.shape[1], dtype=torch.float64, device=x.device)
    centroids = F.normalize(sums.index_add_(0, assign, xn), dim=1)
    return float((xn * centroids[assign]).sum(1).mean())


def check_balanced(assign, n, num_clusters):
    sizes = torch.bincount(assign.cpu(), minlength=num_clusters)
    assert assign.dtype == torch.int64 and assign.shape == (n,)
    assert sizes.sum() == n and sizes.numel() == num_clusters
    assert sizes.min() == n // num_clusters
    assert sizes.max() == -(-n // num_clusters)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,num_clusters", [(1, 1), (7, 4), (129, 8), (129, 128), (1000, 16)])
def test_balanced_sizes_and_centroids(device, rng, dtype, n, num_clusters):
    x = torch.randn(n, 12, generator=rng).to(device, dtype)
    assign, centroids = balanced_kmeans(x, num_clusters, iters=5, seed=3)
    check_balanced(assign, n, num_clusters)
    assert centroids.shape == (num_clusters, 12) and centroids.dtype == dtype
    assert centroids.device == x.device
    # Centroids are the normalised means of their clusters' normalised rows.
    xn = F.normalize(x.float(), dim=1)
    want = F.normalize(torch.zeros(num_clusters, 12, device=device).index_add_(0, assign, xn), dim=1)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(centroids.float(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("n,leaf_size,want", [(1000, 64, 16), (1024, 64, 16), (1025, 64, 32), (8, 1, 8), (9, 100, 1)])
def test_leaf_size(device, rng, n, leaf_size, want):
    assert clusters_for_leaf_size(n, leaf_size) == want
    x = torch.randn(n, 6, generator=rng).to(device)
    assign, centroids = balanced_kmeans(x, leaf_size=leaf_size)
    check_balanced(assign, n, want)
    assert centroids.shape == (want, 6)
    assert torch.bincount(assign).max() <= leaf_size
    assert want == 1 or -(-n // (want // 2)) > leaf_size  # no shallower tree would do


def test_deterministic_and_seeded(device, rng):
    x = mixture(600, 16, 10, rng).to(device)
    first = balanced_kmeans(x, 16, seed=7)
    again = balanced_kmeans(x, 16, seed=7)
    other = balanced_kmeans(x, 16, seed=8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_independent_of_thread_count(rng):
    x = mixture(3000, 24, 20, rng)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = balanced_kmeans(x, 32, seed=1)
        torch.set_num_threads(max(2, threads))
        parallel = balanced_kmeans(x, 32, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])


def test_tree_prefix(device, rng):
    """Seed points depend on (seed, level, node) only, so a shallower tree is a prefix of a
    deeper one: clusters 2k and 2k+1 of C are cluster k of C/2."""
    x = mixture(500, 8, 6, rng).to(device)
    deep, _ = balanced_kmeans(x, 16, seed=2)
    shallow, _ = balanced_kmeans(x, 8, seed=2)
    assert torch.equal(deep // 2, shallow)


def test_converged_split_is_median_split(device, rng):
    """At convergence every pair of sibling leaves is a fixed point of the split rule: the
    left sibling holds the ceil(n/2) lowest scores <c_right - c_left, x>."""
    x = mixture(301, 8, 5, rng).to(device)
    assign, centroids = balanced_kmeans(x, 4, iters=1000, seed=5)
    xn = F.normalize(x, dim=1)
    for parent in range(2):
        left, right = assign == 2 * parent, assign == 2 * parent + 1
        n = int(left.sum() + right.sum())
        assert int(left.sum()) == (n + 1) // 2
        scores = xn @ (centroids[2 * parent + 1] - centroids[2 * parent])
        assert scores[left].max() <= scores[right].min() + 1e-5


def test_quality(device, rng):
    """Clearly better than a random balanced partition, and not worse than pyxclib's
    algorithm (averaged over seeds: both depend on random seed points)."""
    x = mixture(2048, 32, 32, rng).to(device)
    ours = sum(mean_cosine(x, balanced_kmeans(x, 32, seed=s)[0], 32) for s in range(3)) / 3
    reference = sum(mean_cosine(x, reference_kmeans(x, 32, seed=s)[0], 32) for s in range(3)) / 3
    random_partition = torch.randperm(2048, generator=rng).to(device) % 32
    assert ours > mean_cosine(x, random_partition, 32) + 0.1
    assert ours >= reference - 0.015, (ours, reference)


def test_reference_is_balanced(rng):
    x = mixture(129, 8, 4, rng)
    assign, centroids = reference_kmeans(x, leaf_size=20)
    check_balanced(assign, 129, 8)
    assert centroids.shape == (8, 8)


def test_float64_zero_rows_and_huge_values(rng):
    x = mixture(64, 8, 4, rng).double()
    x[5] = 0
    assign, centroids = balanced_kmeans(x, 8)
    check_balanced(assign, 64, 8)
    assert centroids.dtype == torch.float64 and torch.isfinite(centroids).all()
    # Rows whose squared norm overflows float32 still normalise correctly.
    y = mixture(64, 8, 4, rng)
    big = balanced_kmeans(y * 2.0**100, 8)
    small = balanced_kmeans(y, 8)
    assert torch.equal(big[0], small[0])
    torch.testing.assert_close(big[1], small[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree(rng):
    # Both devices pick the same seed points and break ties alike; with few points the gaps
    # between neighbouring scores dwarf rounding differences, so the trees are the same.
    x = mixture(256, 16, 8, rng)
    cpu_assign, cpu_centroids = balanced_kmeans(x, 8, seed=4)
    cuda_assign, cuda_centroids = balanced_kmeans(x.cuda(), 8, seed=4)
    assert torch.equal(cpu_assign, cuda_assign.cpu())
    torch.testing.assert_close(cpu_centroids, cuda_centroids.cpu(), rtol=1e-4, atol=1e-4)
    # On generic data rounding may decide some splits differently; the quality may not.
    y = mixture(4096, 32, 64, rng)
    cpu_quality = mean_cosine(y, balanced_kmeans(y, 64)[0], 64)
    cuda_quality = mean_cosine(y.cuda(), balanced_kmeans(y.cuda(), 64)[0], 64)
    assert abs(cpu_quality - cuda_quality) < 0.01


def test_opcheck(device, rng):
    x = torch.randn(40, 6, generator=rng).to(device)
    torch.library.opcheck(ops.balanced_kmeans.default, (x, 8, 5, 0))


def test_compile_fullgraph(device, rng):
    x = torch.randn(64, 8, generator=rng).to(device)

    def cluster(points):
        assign, centroids = balanced_kmeans(points, 8, iters=4, seed=1)
        return assign, centroids.sum(1)

    compiled = torch.compile(cluster, fullgraph=True, backend="aot_eager")
    (assign, sums), (want_assign, want_sums) = compiled(x), cluster(x)
    assert torch.equal(assign, want_assign)
    torch.testing.assert_close(sums, want_sums)


def test_clusters_to_csr(device, rng):
    x = torch.randn(101, 5, generator=rng).to(device)
    assign, _ = balanced_kmeans(x, 16)
    indptr, members = clusters_to_csr(assign, 16)
    assert indptr.dtype == members.dtype == torch.int64
    assert indptr.device == members.device == assign.device
    assert torch.equal(indptr.diff(), torch.bincount(assign, minlength=16))
    assert sorted(members.tolist()) == list(range(101))
    for c in range(16):
        rows = members[indptr[c] : indptr[c + 1]]
        assert torch.equal(rows, torch.nonzero(assign == c).flatten())  # ascending
    indptr, members = clusters_to_csr(torch.tensor([2, 0, 2], device=device), 4)
    assert indptr.tolist() == [0, 1, 1, 3, 3] and members.tolist() == [1, 0, 2]


@pytest.mark.parametrize(
    "assign,num_clusters,pattern",
    [
        (torch.tensor([0, 3]), 3, r"assign must lie in \[0, num_clusters = 3\), got values in \[0, 3\]"),
        (torch.tensor([-1, 0]), 3, r"got values in \[-1, 0\]"),
        (torch.tensor([0.0, 1.0]), 3, "1-D integer tensor, got torch.float32"),
        (torch.tensor([[0, 1]]), 3, r"of shape \(1, 2\)"),
        (torch.tensor([0, 1]), 0, "num_clusters must be an integer >= 1, got 0"),
    ],
)
def test_clusters_to_csr_bad_input(assign, num_clusters, pattern):
    with pytest.raises(ValueError, match=pattern):
        clusters_to_csr(assign, num_clusters)


def _with_nan(x):
    x = x.clone()
    x[3, 1] = float("nan")
    return x


def _with_inf(x):
    x = x.clone()
    x[4, 0] = float("-inf")
    return x


@pytest.mark.parametrize(
    "x,kwargs,error,pattern",
    [
        (None, dict(num_clusters=3), RuntimeError, "num_clusters must be a power of two, got 3"),
        (None, dict(num_clusters=0), RuntimeError, "num_clusters must be a power of two, got 0"),
        (None, dict(num_clusters=16), RuntimeError, "num_clusters must be <= the number of points N = 10, got 16"),
        (None, dict(num_clusters=2.5), ValueError, "num_clusters must be an integer, got 2.5"),
        (None, dict(num_clusters=2, leaf_size=4), ValueError, "exactly one of num_clusters and leaf_size"),
        (None, dict(), ValueError, "got num_clusters=None and leaf_size=None"),
        (None, dict(leaf_size=0), ValueError, "leaf_size must be an integer >= 1, got 0"),
        (None, dict(leaf_size=1), ValueError, "leaf_size=1 needs 16 clusters for N = 10 points, more than N"),
        (None, dict(num_clusters=2, iters=0), RuntimeError, "iters must be >= 1, got 0"),
        (_with_nan, dict(num_clusters=2), RuntimeError, "x must be finite, but row 3 contains NaN or Inf"),
        (_with_inf, dict(leaf_size=3), RuntimeError, "x must be finite, but row 4 contains NaN or Inf"),
        (lambda x: x.flatten(), dict(num_clusters=2), RuntimeError, r"x must be 2-D, got shape \[40\]"),
        (lambda x: x.unsqueeze(0), dict(leaf_size=2), RuntimeError, r"x must be 2-D, got shape \[1, 10, 4\]"),
        (lambda x: x[:0], dict(num_clusters=1), RuntimeError, r"at least one row and one column, got shape \[0, 4\]"),
        (lambda x: x[:0], dict(leaf_size=5), RuntimeError, r"at least one row and one column, got shape \[0, 4\]"),
        (lambda x: x.int(), dict(num_clusters=2), RuntimeError, "x must be float32, float64, bfloat16 or float16, got Int"),
    ],
)
def test_bad_input(device, x, kwargs, error, pattern):
    data = torch.randn(10, 4, device=device)
    with pytest.raises(error, match=pattern):
        balanced_kmeans(x(data) if x else data, **kwargs)

"""Regressions of issue 11's op findings: each bad input raises a clear error, never returns
garbage (fake kernels included), and valid edge cases (tiny rows) give the documented result."""

import pytest
import torch

import xcops
from xcops.ops.clustering import balanced_kmeans

_ops = torch.ops.xcops


def _csr(rows, device="cpu", dtype=torch.int64):
    return torch.arange(rows + 1, device=device, dtype=dtype), torch.zeros(rows, device=device, dtype=dtype)


# Each raw op with a CPU query and a weight on `weight_device`: (name, call(query, weight)).
RAW_CALLS = [
    ("shortlist_score", lambda q, w: _ops.shortlist_score(q, w, *_csr(q.shape[0]))),
    ("shortlist_topk", lambda q, w: _ops.shortlist_topk(q, w, *_csr(q.shape[0]), 2)),
    ("dense_topk", lambda q, w: _ops.dense_topk(q, w, 2)),
    ("hard_negatives", lambda q, w: _ops.hard_negatives(q, w, *_csr(q.shape[0]), 2)),
]


@pytest.mark.parametrize("name,call", RAW_CALLS, ids=[c[0] for c in RAW_CALLS])
def test_meta_weight_with_cpu_query_raises(name, call):
    query = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="is on meta but query is on cpu"):
        call(query, torch.empty(10, 8, device="meta"))


@pytest.mark.parametrize("name,call", RAW_CALLS, ids=[c[0] for c in RAW_CALLS])
def test_meta_fakes_reject_mismatched_d_and_dtype(name, call):
    query = torch.empty(3, 8, device="meta")
    with pytest.raises(RuntimeError, match="query has d = 8 but"):
        call(query, torch.empty(10, 5, device="meta"))
    with pytest.raises(RuntimeError, match="has dtype Double but query has dtype Float"):
        call(query, torch.empty(10, 8, device="meta", dtype=torch.float64))


def test_meta_balanced_kmeans_rejects_too_many_clusters():
    with pytest.raises(RuntimeError, match="num_clusters must be <= the number of points N = 4, got 8"):
        _ops.balanced_kmeans(torch.empty(4, 3, device="meta"), 8, 10, 0)


def test_int64_indptr_does_not_wrap_into_int32_indices():
    query, weight = torch.randn(1, 4), torch.randn(10, 4)
    indices = torch.tensor([3], dtype=torch.int32)
    # 2^32 + 1 wraps to 1 = nnz when narrowed to int32, which would pass every check.
    indptr = torch.tensor([0, 2**32 + 1], dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"indptr\[-1\] must equal the number of indices \(1\)"):
        xcops.shortlist_score(query, weight, (indptr, indices))
    with pytest.raises(RuntimeError, match=r"indptr\[-1\] must equal"):
        xcops.shortlist_topk(query, weight, (indptr, indices), 1)
    with pytest.raises(RuntimeError, match=r"indptr\[-1\] must equal"):
        xcops.dense_topk(query, weight, 2, exclude=(indptr, indices))
    with pytest.raises(RuntimeError, match=r"indptr\[-1\] must equal"):
        xcops.hard_negatives(query, weight, (indptr, indices), 2)
    # Mixed dtypes that fit still work: the narrower one is widened.
    for pair in ((torch.tensor([0, 1]), indices), (torch.tensor([0, 1], dtype=torch.int32), indices.long())):
        got = xcops.shortlist_score(query, weight, pair)
        torch.testing.assert_close(got, (query[0] * weight[3]).sum().reshape(1))


K_CALLS = [
    ("dense_topk", lambda q, w, k: xcops.dense_topk(q, w, k)),
    ("shortlist_topk", lambda q, w, k: xcops.shortlist_topk(q, w, torch.randint(0, 20, (3, 4)), k)),
    ("hard_negatives", lambda q, w, k: xcops.hard_negatives(q, w, _csr(3), k)),
]


@pytest.mark.parametrize("name,call", K_CALLS, ids=[c[0] for c in K_CALLS])
@pytest.mark.parametrize("k,error,pattern", [
    (2.9, TypeError, "k must be an integer, got 2.9"),
    (True, TypeError, "k must be an integer, got True"),
    ("3", TypeError, "k must be an integer"),
    (0, RuntimeError, "k must be >= 1, got 0"),
    (2**63, RuntimeError, "is too large"),
    (2**64, RuntimeError, "is too large"),
])
def test_k_must_be_a_positive_integer(name, call, k, error, pattern):
    with pytest.raises(error, match=pattern):
        call(torch.randn(3, 8), torch.randn(20, 8), k)


def test_k_beyond_what_the_op_can_return_is_rejected():
    query, weight = torch.randn(3, 8), torch.randn(20, 8)
    with pytest.raises(RuntimeError, match="k = 21 exceeds the number of labels L = 20"):
        xcops.dense_topk(query, weight, 21)
    # More slots than max(L, K) could only ever be padding (and a huge k would exhaust memory).
    with pytest.raises(RuntimeError, match="k = 1000 exceeds both the number of labels L = 20 and the shortlist width K = 4; max = 20"):
        xcops.shortlist_topk(query, weight, torch.randint(0, 20, (3, 4)), 1000)
    values, labels = xcops.shortlist_topk(query, weight, torch.randint(0, 20, (3, 4)), 20)
    assert values.shape == labels.shape == (3, 20) and (labels[:, 4:] == -1).all()
    # The op itself, without the wrapper, bounds k by L and the longest row as well.
    indptr, indices = torch.tensor([0, 2, 2, 5]), torch.randint(0, 20, (5,))
    with pytest.raises(RuntimeError, match=r"k = 2147483647 exceeds both the number of labels L = 20 "
                                           r"and the longest shortlist row \(3\)"):
        torch.ops.xcops.shortlist_topk(query, weight, indptr, indices, 2**31 - 1)
    # hard_negatives can return at most its P label columns.
    too_many = "k = 21 exceeds the number of label columns P = 20"
    with pytest.raises(RuntimeError, match=too_many):
        xcops.hard_negatives(query, weight, _csr(3), 21)
    with pytest.raises(RuntimeError, match=too_many):
        torch.ops.xcops.hard_negatives(query, weight, *_csr(3), 21)
    with pytest.raises(RuntimeError, match=too_many):  # the fake kernel
        torch.ops.xcops.hard_negatives(query.to("meta"), weight.to("meta"), *(t.to("meta") for t in _csr(3)), 21)


def test_numpy_and_tensor_integers_are_valid_k():
    import numpy as np

    query, weight = torch.randn(3, 8), torch.randn(20, 8)
    want = xcops.dense_topk(query, weight, 3)[1]
    assert torch.equal(xcops.dense_topk(query, weight, np.int64(3))[1], want)
    assert torch.equal(xcops.dense_topk(query, weight, torch.tensor(3))[1], want)


def test_empty_batch_still_validates_exclude_and_positives():
    query, weight = torch.randn(0, 8), torch.randn(20, 8)
    bad_ids = (torch.tensor([0, 1]), torch.tensor([25]))  # also B + 1 = 1 entries expected
    with pytest.raises(RuntimeError, match="indptr must have B \\+ 1 = 1 entries"):
        xcops.dense_topk(query, weight, 2, exclude=bad_ids)
    with pytest.raises(RuntimeError, match="indptr must have B \\+ 1 = 1 entries"):
        xcops.hard_negatives(query, weight, bad_ids, 2)
    with pytest.raises(RuntimeError, match=r"exclude indptr\[0\] must be 0, got 3"):
        xcops.dense_topk(query, weight, 2, exclude=(torch.tensor([3]), torch.tensor([], dtype=torch.int64)))
    values, ids = xcops.dense_topk(query, weight, 2, exclude=(torch.tensor([0]), torch.tensor([], dtype=torch.int64)))
    assert values.shape == ids.shape == (0, 2)


UNCLEAR = [
    ("1-D query", lambda q, w: (q[0], w), r"query must be 2-D, got shape \[8\]"),
    ("sparse query", lambda q, w: (q.to_sparse(), w), "query must be a dense tensor, got layout torch.sparse_coo"),
    ("sparse weight", lambda q, w: (q, w.to_sparse()), "weight must be a dense tensor, got layout torch.sparse_coo"),
    ("CSR weight", lambda q, w: (q, w.to_sparse_csr()), "weight must be a dense tensor"),
]
OPS = [
    ("shortlist_score", lambda q, w: xcops.shortlist_score(q, w, torch.zeros(3, 2, dtype=torch.int64))),
    ("shortlist_topk", lambda q, w: xcops.shortlist_topk(q, w, torch.zeros(3, 2, dtype=torch.int64), 1)),
    ("dense_topk", lambda q, w: xcops.dense_topk(q, w, 1)),
    ("hard_negatives", lambda q, w: xcops.hard_negatives(q, w, _csr(3), 1)),
]


@pytest.mark.parametrize("op,call", OPS, ids=[o[0] for o in OPS])
@pytest.mark.parametrize("case,mutate,pattern", UNCLEAR, ids=[u[0] for u in UNCLEAR])
def test_messages_name_the_argument(op, call, case, mutate, pattern):
    query, weight = mutate(torch.randn(3, 8), torch.randn(20, 8))
    if op == "hard_negatives":
        pattern = pattern.replace("weight", "labels")
    with pytest.raises(RuntimeError, match=pattern):
        call(query, weight)


def test_sparse_x_in_balanced_kmeans():
    with pytest.raises(RuntimeError, match="x must be a dense tensor"):
        balanced_kmeans(torch.randn(8, 3).to_sparse(), num_clusters=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_balanced_kmeans_normalises_tiny_rows(rng, dtype):
    x = torch.randn(129, 5, generator=rng, dtype=dtype)
    # Rows of norm < 1e-12 (and, in float32, with squares below the smallest normal float)
    # point the same way as their scaled-up twins, so they must cluster the same. Powers of
    # two scale exactly, so the results must be identical.
    tiny = x * (2.0**-70 if dtype == torch.float32 else 2.0**-700)
    assign, centroids = balanced_kmeans(x, num_clusters=8, seed=3)
    assign_tiny, centroids_tiny = balanced_kmeans(tiny, num_clusters=8, seed=3)
    assert torch.equal(assign, assign_tiny)
    torch.testing.assert_close(centroids, centroids_tiny)
    mixed = x.clone()
    mixed[::2] *= 2.0**-50
    assert torch.equal(balanced_kmeans(mixed, num_clusters=8, seed=3)[0], assign)


def test_balanced_kmeans_zero_rows_stay_zero():
    x = torch.randn(16, 4)
    x[3] = 0
    assign, centroids = balanced_kmeans(x, num_clusters=2, seed=0)
    assert torch.isfinite(centroids).all() and assign.shape == (16,)


@pytest.mark.parametrize("name,call", RAW_CALLS, ids=[c[0] for c in RAW_CALLS])
def test_fake_tensor_mode_rejects_what_the_kernels_reject(name, call):
    # What torch.compile traces with: FakeTensors on the CPU device, no data.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        query = torch.empty(3, 8)
        with pytest.raises(RuntimeError, match="query has d = 8 but"):
            call(query, torch.empty(10, 5))
        with pytest.raises(RuntimeError, match="must be contiguous"):
            call(query, torch.empty(8, 10).t())


@pytest.mark.parametrize("device", ["cpu", "meta"])  # the kernel and the fake kernel
def test_label_ids_must_fit_the_ranking_keys(device):
    """The top-k keys hold a label id in 32 bits; d = 0 makes 2^32 rows cost no memory."""
    query, labels = torch.empty(1, 0, device=device), torch.empty(2**32, 0, device=device)
    with pytest.raises(RuntimeError, match="at most 4294967294 weight rows are supported"):
        torch.ops.xcops.dense_topk(query, labels, 1)
    positives = tuple(t.to(device) for t in _csr(1))
    with pytest.raises(RuntimeError, match="at most 4294967294 labels rows are supported"):
        torch.ops.xcops.hard_negatives(query, labels, *positives, 1)

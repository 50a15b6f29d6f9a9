import pytest
import torch

import xcops
from xcops.ops import reference

from conftest import tolerance
from shortlist_inputs import make_csr, make_problem
from topk_paths import peak_rss_growth, topk_path  # noqa: F401  (topk_path: autouse fixture)


def assert_topk_equivalent(got, want, scores_of, dtype):
    """Same values; indices may differ only between candidates of (near-)equal score."""
    (values, labels), (want_values, want_labels) = got, want
    assert values.shape == want_values.shape and labels.dtype == torch.int64
    torch.testing.assert_close(values, want_values, **tolerance(dtype))
    assert torch.equal(labels < 0, want_labels < 0)
    filled = labels >= 0
    torch.testing.assert_close(scores_of(labels)[filled], values[filled], **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape,k", [((1, 1, 1, 1), 1), ((7, 5, 129, 7), 3), ((129, 40, 1000, 64), 10),
                                      ((5, 6, 20, 9), 9), ((0, 4, 10, 3), 2), ((3, 0, 10, 3), 2)], ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
def test_topk_matches_reference(device, rng, dtype, shape, k, with_bias):
    query, weight, shortlist, bias = make_problem(*shape, dtype, device, rng, bias=with_bias)
    got = xcops.shortlist_topk(query, weight, shortlist, k, bias)
    want = reference.shortlist_topk(query, weight, shortlist, k, bias)
    full = (query.double() @ weight.double().T) + (0 if bias is None else bias.double())

    def scores_of(labels):
        return full.gather(1, labels.clamp_min(0)).to(dtype)

    assert_topk_equivalent(got, want, scores_of, dtype)


def test_topk_csr_rows_shorter_than_k(device, rng):
    query = torch.randn(11, 16, generator=rng).to(device)
    weight = torch.randn(60, 16, generator=rng).to(device)
    indptr, indices = make_csr(11, 60, 6, device, rng, index_dtype=torch.int32)
    values, labels = xcops.shortlist_topk(query, weight, (indptr, indices), k=8)
    want_values, want_labels = reference.shortlist_topk(query, weight, (indptr, indices), k=8)
    lengths = (indptr[1:] - indptr[:-1]).long()
    assert torch.equal((labels >= 0).sum(1), torch.clamp(lengths, max=8))
    assert torch.isinf(values[labels < 0]).all()
    torch.testing.assert_close(values, want_values)
    assert torch.equal(labels, want_labels)  # float32 with distinct random scores: exact


def test_ties_go_to_the_lower_label(device):
    weight = torch.ones(10, 4, device=device)
    query = torch.ones(1, 4, device=device)
    shortlist = torch.tensor([[7, 3, 9, 1, 5]], device=device)
    values, labels = xcops.shortlist_topk(query, weight, shortlist, k=3)
    assert labels.tolist() == [[1, 3, 5]]
    assert values.tolist() == [[4.0, 4.0, 4.0]]


def test_k_larger_than_shortlist_pads(device, rng):
    query, weight, shortlist, _ = make_problem(3, 4, 10, 5, torch.float32, device, rng, pad_fraction=0)
    values, labels = xcops.shortlist_topk(query, weight, shortlist, k=6)
    assert (labels[:, 4:] == -1).all() and torch.isinf(values[:, 4:]).all()
    assert torch.equal(labels[:, :4].sort(1).values, shortlist.sort(1).values)


def test_signed_zeros_tie_and_nan_ranks_first(device):
    query = torch.ones(1, 1, device=device)
    weight = torch.tensor([[-0.0], [0.0], [float("nan")], [-1.0], [float("nan")]], device=device)
    shortlist = torch.tensor([[4, 2, 1, 3, 0, -1]], device=device)
    values, labels = xcops.shortlist_topk(query, weight, shortlist, k=6)
    assert labels.tolist() == [[2, 4, 0, 1, 3, -1]]
    assert values[0, :2].isnan().all() and values[0, 5] == float("-inf")
    want = reference.shortlist_topk(query, weight, shortlist, 6)
    assert torch.equal(want[1], labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ragged", [False, True])
def test_ties_and_nan_match_the_reference_exactly(device, rng, dtype, ragged):
    query = torch.randint(-2, 3, (50, 3), generator=rng).to(dtype)
    weight = torch.randint(-2, 3, (40, 3), generator=rng).to(dtype)
    weight[torch.randperm(40, generator=rng)[:6], 2] = float("nan")
    if ragged:
        shortlist = make_csr(50, 40, 30, "cpu", rng)
    else:
        shortlist = torch.randint(-1, 40, (50, 30), generator=rng)
    move = lambda t: t.to(device)  # noqa: E731
    shortlist = tuple(map(move, shortlist)) if ragged else move(shortlist)
    query, weight = move(query), move(weight)
    values, labels = xcops.shortlist_topk(query, weight, shortlist, 12)
    want_values, want_labels = reference.shortlist_topk(query, weight, shortlist, 12)
    assert torch.equal(labels, want_labels)
    assert torch.equal(values.isnan(), want_values.isnan())
    assert torch.equal(values.nan_to_num(), want_values.nan_to_num())


def test_float64_ranks_by_float64_scores(device):
    query = torch.ones(1, 1, dtype=torch.float64, device=device)
    # 1e301 > 1e300 overflows float32 (both +inf there); 1 + 1e-12 rounds to 1 in float32.
    weight = torch.tensor([[1e300], [1e301], [1.0 + 1e-12], [1.0]], dtype=torch.float64, device=device)
    values, labels = xcops.shortlist_topk(query, weight, torch.tensor([[3, 0, 2, 1]], device=device), k=4)
    assert labels.tolist() == [[1, 0, 2, 3]]
    assert values.tolist() == [[1e301, 1e300, 1.0 + 1e-12, 1.0]]


def test_ragged_csr_memory_is_linear_in_nnz(device, rng):
    """One long row in a large batch: today's [B, longest row] keys took B * longest * 8 bytes."""
    if device.type != "cpu":
        pytest.skip("peak resident memory is a CPU measure")
    batch, labels, long_row = 6000, 7000, 6000
    query = torch.randn(batch, 4, generator=rng)
    weight = torch.randn(labels, 4, generator=rng)
    lengths = torch.ones(batch, dtype=torch.int64)
    lengths[batch // 2] = long_row
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    indices = torch.randint(0, labels, (int(indptr[-1]),), generator=rng)
    with peak_rss_growth() as growth:
        values, got = xcops.shortlist_topk(query, weight, (indptr, indices), k=5)
    # nnz = 12k entries: a few MB at most; the [B, longest row] buffer was 288 MB.
    assert growth["mib"] < 40, growth
    row = batch // 2
    want = torch.topk(query[row] @ weight[indices[indptr[row]:indptr[row + 1]]].T, 5).values
    torch.testing.assert_close(values[row], want)
    assert (got[:row, 1:] == -1).all() and torch.equal(got[:row, 0], indices[:row])

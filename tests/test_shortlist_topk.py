import pytest
import torch

import xcops
from xcops.ops import reference

from conftest import tolerance
from shortlist_inputs import make_csr, make_problem


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


def test_signed_zeros_tie_and_nan_ranks_last(device):
    query = torch.ones(1, 1, device=device)
    weight = torch.tensor([[-0.0], [0.0], [float("nan")], [-1.0]], device=device)
    values, labels = xcops.shortlist_topk(query, weight, torch.tensor([[2, 1, 3, 0, -1]], device=device), k=5)
    assert labels.tolist() == [[0, 1, 3, 2, -1]]
    assert torch.isnan(values[0, 3]) and values[0, 4] == float("-inf")

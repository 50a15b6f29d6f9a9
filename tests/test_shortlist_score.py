import pytest
import torch

import xcops
from xcops.ops import reference

from conftest import deterministic_algorithms, tolerance
from shortlist_inputs import make_csr, make_problem

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPES = [  # batch, width, labels, dim
    (1, 1, 1, 1),
    (7, 5, 129, 7),
    (129, 13, 1000, 64),
    (4, 33, 50, 129),
    (3, 0, 10, 8),
    (0, 5, 10, 8),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward_matches_reference(device, rng, dtype, shape, index_dtype, with_bias):
    query, weight, shortlist, bias = make_problem(*shape, dtype, device, rng, bias=with_bias,
                                                  index_dtype=index_dtype)
    got = xcops.shortlist_score(query, weight, shortlist, bias)
    want = reference.shortlist_score(query, weight, shortlist, bias)
    assert got.shape == shortlist.shape and got.dtype == dtype
    torch.testing.assert_close(got, want, **tolerance(dtype))
    assert (got[shortlist < 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_csr_matches_reference(device, rng, dtype):
    query = torch.randn(9, 24, generator=rng).to(dtype).to(device)
    weight = torch.randn(77, 24, generator=rng).to(dtype).to(device)
    indptr, indices = make_csr(9, 77, 12, device, rng)
    got = xcops.shortlist_score(query, weight, (indptr, indices))
    want = reference.shortlist_score(query, weight, (indptr, indices))
    assert got.shape == indices.shape
    torch.testing.assert_close(got, want, **tolerance(dtype))


def _grads(fn, query, weight, shortlist, bias, sparse_grad=False):
    leaves = [t.detach().clone().requires_grad_() for t in (query, weight, bias)]
    scores = fn(leaves[0], leaves[1], shortlist, leaves[2], sparse_grad=sparse_grad)
    scores.backward(_upstream(scores))
    return [t.grad for t in leaves]


def _upstream(scores):
    # Quarters are exact in every dtype, so low-precision runs see the same upstream gradient.
    return ((torch.arange(scores.numel(), device=scores.device) % 9 - 4) / 4).view_as(scores).to(scores.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 5, 129, 7), (33, 40, 20, 64), (2, 0, 5, 3)], ids=str)
def test_backward_matches_reference(device, rng, dtype, shape):
    # Few labels and many slots force duplicate ids within and across rows.
    # The reference runs in float64: autograd of a bf16 gather would itself sum in bf16.
    problem = make_problem(*shape, dtype, device, rng, bias=True)
    got = _grads(xcops.shortlist_score, *problem)
    want = _grads(reference.shortlist_score, *_in_float64(problem))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.to(dtype), **tolerance(dtype))


def _in_float64(problem):
    query, weight, shortlist, bias = problem
    return query.double(), weight.double(), shortlist, bias.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_grad_is_coalesced_rows_of_dense_grad(device, rng, dtype):
    query, weight, shortlist, bias = make_problem(17, 9, 300, 16, dtype, device, rng, bias=True)
    weight.requires_grad_()
    bias.requires_grad_()
    scores = xcops.shortlist_score(query, weight, shortlist, bias, sparse_grad=True)
    # autograd.grad hands back our tensors as they are; .grad accumulation copies sparse
    # gradients and drops the coalesced flag (a PyTorch behaviour, not ours).
    weight_grad, bias_grad = torch.autograd.grad(scores, (weight, bias), _upstream(scores))
    dense = _grads(reference.shortlist_score, *_in_float64((query, weight, shortlist, bias)))
    touched = torch.unique(shortlist[shortlist >= 0])
    for sparse, want in ((weight_grad, dense[1]), (bias_grad, dense[2])):
        assert sparse.is_sparse and sparse.is_coalesced()
        assert torch.equal(sparse.indices()[0], touched)
        torch.testing.assert_close(sparse.to_dense(), want.to(dtype), **tolerance(dtype))


def test_sparse_adam_accepts_the_gradient(device, rng):
    query, weight, shortlist, bias = make_problem(8, 6, 40, 12, torch.float32, device, rng, bias=True)
    weight = torch.nn.Parameter(weight)
    bias = torch.nn.Parameter(bias)
    before = weight.detach().clone()
    opt = torch.optim.SparseAdam([weight, bias], lr=0.1)
    xcops.shortlist_score(query, weight, shortlist, bias, sparse_grad=True).sum().backward()
    opt.step()
    changed = (weight.detach() != before).any(dim=1)
    touched = torch.zeros_like(changed)
    touched[shortlist[shortlist >= 0]] = True
    assert torch.equal(changed, touched)


def test_padding_gets_no_gradient(device):
    query = torch.randn(2, 4, device=device, requires_grad=True)
    weight = torch.randn(5, 4, device=device, requires_grad=True)
    shortlist = torch.tensor([[-1, -1], [2, -1]], device=device)
    xcops.shortlist_score(query, weight, shortlist).sum().backward()
    assert (query.grad[0] == 0).all()
    torch.testing.assert_close(query.grad[1], weight[2].detach())
    assert (weight.grad[[0, 1, 3, 4]] == 0).all()


def test_gradcheck_double(device, rng):
    query, weight, shortlist, bias = make_problem(5, 4, 9, 6, torch.float64, device, rng, bias=True)
    inputs = [t.requires_grad_() for t in (query, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda q, w, b: xcops.shortlist_score(q, w, shortlist, b), inputs
    )


def test_weight_gradient_deterministic(device, rng):
    problem = make_problem(64, 50, 30, 33, torch.float32, device, rng, bias=True)
    with deterministic_algorithms():
        first = _grads(xcops.shortlist_score, *problem)
        second = _grads(xcops.shortlist_score, *problem)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_autocast_casts_the_query_not_the_weight(device, rng):
    # Under autocast the query comes out of the encoder in bf16; the fp32 weight stays as is.
    query, weight, shortlist, bias = make_problem(4, 3, 10, 8, torch.float32, device, rng, bias=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        scores = xcops.shortlist_score(query.bfloat16(), weight, shortlist, bias)
    assert scores.dtype == torch.float32
    want = reference.shortlist_score(query.bfloat16().float(), weight, shortlist, bias)
    torch.testing.assert_close(scores, want)
    with pytest.raises(RuntimeError, match="weight has dtype Float but query has dtype BFloat16"):
        xcops.shortlist_score(query.bfloat16(), weight, shortlist)

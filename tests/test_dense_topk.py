import pytest
import torch

import xcops
from xcops.ops import reference

from conftest import tolerance
from shortlist_inputs import make_csr

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.fixture(params=["specialised", "generic"], autouse=True)
def topk_path(request, monkeypatch):
    """Every test runs the CPU's own top-k and the device-generic one the GPU uses."""
    if request.param == "generic":
        monkeypatch.setenv("XCOPS_GENERIC_TOPK", "1")
    else:
        monkeypatch.delenv("XCOPS_GENERIC_TOPK", raising=False)


def _problem(batch, labels, dim, dtype, device, gen):
    query = torch.randn(batch, dim, generator=gen).to(dtype).to(device)
    weight = torch.randn(labels, dim, generator=gen).to(dtype).to(device)
    return query, weight


def assert_same_topk(got, want, query, weight, dtype, bias=None):
    """Values equal; ids may differ only between labels of equal score."""
    (values, ids), (want_values, want_ids) = got, want
    assert ids.dtype == torch.int64 and values.dtype == dtype
    torch.testing.assert_close(values, want_values, **tolerance(dtype))
    assert torch.equal(ids < 0, want_ids < 0)
    full = (query.double() @ weight.double().T + (0 if bias is None else bias.double())).to(dtype)
    filled = ids >= 0
    torch.testing.assert_close(full.gather(1, ids.clamp_min(0))[filled], values[filled], **tolerance(dtype))
    assert (values[:, 1:] <= values[:, :-1]).all(), "values must be sorted descending"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((1, 1, 1), 1), ((7, 129, 5), 5), ((3, 40, 9), 40),
                                      ((4096, 3000, 8), 10), ((0, 10, 4), 3)], ids=str)
def test_matches_mm_topk(device, rng, dtype, shape, k):
    # B = 4096 makes the label chunk 1024 wide, so L = 3000 spans three chunks, one partial.
    query, weight = _problem(*shape, dtype, device, rng)
    got = xcops.dense_topk(query, weight, k)
    assert got[0].shape == (shape[0], k)
    assert_same_topk(got, reference.dense_topk(query, weight, k), query, weight, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((1, 1, 1), 1), ((7, 129, 5), 5), ((4096, 3000, 8), 10), ((0, 10, 4), 3)],
                         ids=str)
def test_bias_matches_reference(device, rng, dtype, shape, k):
    query, weight = _problem(*shape, dtype, device, rng)
    # A bias on the scale of the scores, so it reorders the labels.
    bias = (3 * torch.randn(shape[1], generator=rng)).to(dtype).to(device)
    got = xcops.dense_topk(query, weight, k, bias=bias)
    assert_same_topk(got, reference.dense_topk(query, weight, k, bias=bias), query, weight, dtype, bias)
    if shape[0] and shape[1] > k:
        assert not torch.equal(got[1], xcops.dense_topk(query, weight, k)[1])


def test_bias_dominates_and_exclusions_win_over_it(device, rng):
    query, weight = _problem(6, 500, 8, torch.float32, device, rng)
    bias = torch.zeros(500, device=device)
    bias[[17, 400]] = 1e4
    bias[3] = float("inf")
    exclude = (torch.tensor([0, 1, 1, 1, 1, 1, 1], device=device), torch.tensor([3], device=device))
    values, ids = xcops.dense_topk(query, weight, 3, exclude=exclude, bias=bias)
    assert ids[0, :2].tolist() == [400, 17] or ids[0, :2].tolist() == [17, 400]
    assert ids[0, 2] != 3 and (ids[1:, 0] == 3).all() and torch.isposinf(values[1:, 0]).all()


@pytest.mark.parametrize(
    "bias,pattern",
    [
        (lambda w: w[:, 0].double(), "bias has dtype Double but query has dtype Float"),
        (lambda w: w[:-1, 0].contiguous(), "bias must have L = 50 entries .*got 49"),
        (lambda w: w[:, :2].contiguous(), "bias must be 1-D, got shape \\[50, 2\\]"),
    ],
)
def test_bad_bias(bias, pattern):
    query, weight = torch.randn(5, 8), torch.randn(50, 8)
    with pytest.raises(RuntimeError, match=pattern):
        xcops.dense_topk(query, weight, 2, bias=bias(weight))


@pytest.mark.parametrize("batch", [9, 4096])
def test_exclusions_are_never_returned(device, rng, batch):
    query, weight = _problem(batch, 1500, 8, torch.float32, device, rng)
    exclude = make_csr(batch, 1500, 6, device, rng)
    # Also exclude each row's true best label, so exclusion visibly changes the answer.
    best = reference.dense_topk(query, weight, 1)[1].flatten()
    indptr, indices = exclude
    lengths = (indptr[1:] - indptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(batch, device=device), lengths)
    all_rows = torch.cat([rows, torch.arange(batch, device=device)])
    all_ids = torch.cat([indices, best])
    order = torch.argsort(all_rows, stable=True)
    new_indptr = torch.zeros(batch + 1, dtype=torch.int64, device=device)
    new_indptr[1:] = torch.bincount(all_rows, minlength=batch).cumsum(0)
    exclude = (new_indptr, all_ids[order])
    values, ids = xcops.dense_topk(query, weight, 8, exclude=exclude)
    assert_same_topk((values, ids), reference.dense_topk(query, weight, 8, exclude=exclude), query, weight,
                     torch.float32)
    excluded = torch.zeros(batch, 1500, dtype=torch.bool, device=device)
    excluded[all_rows[order], exclude[1]] = True
    assert not excluded.gather(1, ids).any()


def test_fewer_candidates_than_k_pads(device):
    query = torch.ones(2, 3, device=device)
    weight = torch.eye(3, device=device)
    exclude = (torch.tensor([0, 2, 2], device=device), torch.tensor([0, 2], device=device))
    values, ids = xcops.dense_topk(query, weight, 3, exclude=exclude)
    assert ids.tolist()[0] == [1, -1, -1]
    assert torch.isneginf(values[0, 1:]).all()
    assert sorted(ids.tolist()[1]) == [0, 1, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hard_negatives_match_reference_and_train(device, rng, dtype):
    query, labels = _problem(33, 20, 16, dtype, device, rng)
    positives = make_csr(33, 20, 4, device, rng)
    query.requires_grad_()
    labels.requires_grad_()
    scores, ids = xcops.hard_negatives(query, labels, positives, 25)  # k > available negatives
    want_scores, want_ids = reference.hard_negatives(query, labels, positives, 25)
    torch.testing.assert_close(scores, want_scores, **tolerance(dtype))
    assert torch.equal(ids < 0, want_ids < 0)
    upstream = torch.where(ids >= 0, 1.0, 0.0).to(dtype)
    got = torch.autograd.grad(scores, (query, labels), upstream)
    want = torch.autograd.grad(want_scores, (query, labels), upstream)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tolerance(dtype))


def _plain_triplet(query, labels, positive, positives, k, margin, temperature):
    scores = query.float() @ labels.float().T
    anchor = scores.gather(1, positive.view(-1, 1))
    masked = reference.topk._mask_csr(scores, positives)
    negatives, _ = torch.topk(masked, min(k, labels.shape[0]), dim=1)
    present = ~torch.isneginf(negatives)
    negatives = negatives.masked_fill(~present, 0)
    loss = torch.relu(negatives - anchor + margin) * present
    if temperature is not None:
        weights = torch.softmax((negatives / temperature).masked_fill(~present, float("-inf")), 1).nan_to_num(0)
        loss = loss * weights
    return loss.sum() / (query.shape[0] * k)


@pytest.mark.parametrize("temperature", [None, 0.1])
def test_triplet_ohnm_matches_plain_pytorch(device, rng, temperature):
    query, labels = _problem(16, 16, 12, torch.float32, device, rng)
    query = torch.nn.functional.normalize(query, dim=1).requires_grad_()
    labels = torch.nn.functional.normalize(labels, dim=1).requires_grad_()
    positive = torch.arange(16, device=device)
    indptr = torch.arange(17, device=device)
    positives = (indptr, positive.clone())
    got = xcops.losses.triplet_ohnm(query, labels, positive, positives, k=5, margin=0.3, temperature=temperature)
    want = _plain_triplet(query, labels, positive, positives, 5, 0.3, temperature)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (query, labels)), torch.autograd.grad(want, (query, labels))):
        torch.testing.assert_close(g, w)
    assert got > 0


def test_opcheck(device, rng):
    query, weight = _problem(5, 50, 8, torch.float32, device, rng)
    indptr, indices = make_csr(5, 50, 4, device, rng)
    torch.library.opcheck(torch.ops.xcops.dense_topk.default, (query, weight, 4, None, None))
    torch.library.opcheck(torch.ops.xcops.dense_topk.default, (query, weight, 4, indptr, indices))
    torch.library.opcheck(torch.ops.xcops.dense_topk.default, (query, weight, 4, None, None, weight[:, 0].contiguous()))
    torch.library.opcheck(torch.ops.xcops.hard_negatives.default, (query, weight[:7], indptr.clamp(max=0) + 0, indices[:0], 9))
    labels_indptr, labels_indices = make_csr(5, 7, 3, device, rng)
    torch.library.opcheck(torch.ops.xcops.hard_negatives.default, (query, weight[:7], labels_indptr, labels_indices, 3))


def test_compile_fullgraph(device, rng):
    query, weight = _problem(6, 50, 8, torch.float32, device, rng)
    fn = lambda q, w: xcops.dense_topk(q, w, 5)  # noqa: E731
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(query, weight)
    want = fn(query, weight)
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda q, w: xcops.dense_topk(q, w, 51), r"k = 51 exceeds the number of labels L = 50"),
        (lambda q, w: xcops.dense_topk(q, w, 0), "k must be >= 1, got 0"),
        (lambda q, w: xcops.dense_topk(q[:, :3], w, 2), "query has d = 3 but weight has d = 8"),
        (lambda q, w: xcops.dense_topk(q, w, 2, exclude=(torch.tensor([0, 1]), torch.tensor([1]))),
         "exclude indptr must have B \\+ 1 = 6 entries"),
        (lambda q, w: xcops.dense_topk(q, w, 2, exclude=(torch.tensor([0, 1, 1, 1, 1, 1]), torch.tensor([50]))),
         r"exclude ids must be < the number of labels L \(weight.size\(0\)\) = 50, got 50"),
        (lambda q, w: xcops.hard_negatives(q, w, (torch.tensor([0, 1, 1, 1, 1, 1]), torch.tensor([-5])), 2),
         r"positives ids must be >= -1"),
        (lambda q, w: xcops.hard_negatives(q, w, torch.tensor([0]), 2), "positives must be a CSR tuple"),
    ],
)
def test_bad_input(call, pattern):
    query, weight = torch.randn(5, 8), torch.randn(50, 8)
    with pytest.raises((RuntimeError, TypeError), match=pattern):
        call(query, weight)

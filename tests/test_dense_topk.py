import pytest
import torch

import xcops
from xcops.ops import reference

from conftest import tolerance
from shortlist_inputs import make_csr
from topk_paths import peak_rss_growth, topk_path  # noqa: F401  (topk_path: autouse fixture)

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


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
@pytest.mark.parametrize("shape,k", [((1, 1, 1), 1), ((7, 129, 5), 5), ((3, 40, 9), 40), ((129, 1001, 33), 7),
                                      ((4096, 3000, 8), 10), ((0, 10, 4), 3)], ids=str)
def test_matches_mm_topk(device, rng, dtype, shape, k):
    # B = 4096 makes the label chunk 1024 wide, so L = 3000 spans three chunks, one partial.
    query, weight = _problem(*shape, dtype, device, rng)
    got = xcops.dense_topk(query, weight, k)
    assert got[0].shape == (shape[0], k)
    assert_same_topk(got, reference.dense_topk(query, weight, k), query, weight, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((1, 1, 1), 1), ((7, 129, 5), 5), ((4096, 1500, 8), 10), ((0, 10, 4), 3)],
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nan_and_ties_rank_identically_on_every_path(device, rng, dtype):
    # Small integer scores tie a lot; B = 4096 spreads L = 3000 over three label chunks, so
    # ties and NaNs meet across chunk boundaries. The reference is a stable sort: its ids are
    # the rule itself, and every path must return exactly them.
    batch, labels = 4096, 3000
    query = torch.randint(-2, 3, (batch, 3), generator=rng).to(dtype)
    weight = torch.randint(-2, 3, (labels, 3), generator=rng).to(dtype)
    nan_labels = torch.randperm(labels, generator=rng)[:40]
    weight[nan_labels, 1] = float("nan")
    query[::7, 1] = 0  # 0 * NaN is NaN too: rows where NaN does not come from a finite product
    query, weight = query.to(device), weight.to(device)
    ranked_values, ranked_ids = reference.dense_topk(query, weight, 60)  # a stable sort: prefixes
    for k in (1, 5, 60):
        values, ids = xcops.dense_topk(query, weight, k)
        want_values, want_ids = ranked_values[:, :k], ranked_ids[:, :k]
        assert torch.equal(ids, want_ids), k
        assert torch.equal(values.isnan(), want_values.isnan())
        assert torch.equal(values.nan_to_num(), want_values.nan_to_num())
    # With k > 40 every row holds all NaN labels first, in increasing id order.
    assert torch.equal(ids[:, :40], nan_labels.sort().values.to(device).expand(batch, 40))


def test_signed_zeros_tie_and_nan_ranks_first(device):
    query = torch.ones(1, 1, device=device)
    weight = torch.tensor([[0.0], [-1.0], [-0.0], [float("nan")], [0.0], [float("inf")], [float("nan")]],
                          device=device)
    values, ids = xcops.dense_topk(query, weight, 7)
    assert ids.tolist() == [[3, 6, 5, 0, 2, 4, 1]]
    assert values[0, 2] == float("inf") and values[0, 3:6].eq(0).all()


def test_hard_negatives_rank_nan_first(device):
    query = torch.ones(2, 1, device=device)
    labels = torch.tensor([[float("nan")], [1.0], [float("nan")], [2.0]], device=device)
    positives = (torch.tensor([0, 1, 1], device=device), torch.tensor([0], device=device))
    _, ids = xcops.hard_negatives(query, labels, positives, 4)
    assert ids.tolist() == [[2, 3, 1, -1], [0, 2, 3, 1]]


def test_memory_bound_holds_at_any_batch(device, rng):
    """Today's code sized its score chunk [B, >= 256]: at B = 250k, 256 MB for 5 MB of input."""
    if device.type != "cpu":
        pytest.skip("peak resident memory is a CPU measure")
    batch, labels = 250_000, 257
    query = torch.randn(batch, 4, generator=rng)
    weight = torch.randn(labels, 4, generator=rng)
    with peak_rss_growth() as growth:
        values, ids = xcops.dense_topk(query, weight, 1)
    # Output 3 MB; tiles of 16 MB of scores, plus the generic path's keys and temporaries
    # (measured: 27 MB specialised, 87 MB generic).
    assert growth["mib"] < 160, growth
    for rows in (slice(0, 2000), slice(-2000, None)):
        want = reference.dense_topk(query[rows], weight, 1)
        assert_same_topk((values[rows], ids[rows]), want, query[rows], weight, torch.float32)


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
@pytest.mark.parametrize("batch", [33, 100])  # 100 rows take the fused CPU kernel on 2 threads
def test_hard_negatives_match_reference_and_train(device, rng, dtype, batch):
    query, labels = _problem(batch, 20, 16, dtype, device, rng)
    positives = make_csr(batch, 20, 4, device, rng)
    query.requires_grad_()
    labels.requires_grad_()
    scores, ids = xcops.hard_negatives(query, labels, positives, 20)  # k = P > available negatives
    want_scores, want_ids = reference.hard_negatives(query, labels, positives, 20)
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
    torch.library.opcheck(torch.ops.xcops.hard_negatives.default, (query, weight[:7], indptr.clamp(max=0) + 0, indices[:0], 7))
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

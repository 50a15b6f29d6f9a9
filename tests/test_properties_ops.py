"""Property-based tests (hypothesis) of every op on the CPU against its reference, and of the
fake kernels against the real ones.

Valid problems have odd sizes (empty batches, one label, d = 1), float32/float64, int32/int64
ids, padded and CSR shortlists, and queries and shortlists that are views with a storage
offset or non-contiguous: the op must give its documented result (the reference's). Invalid
problems break exactly one rule and must raise, never return. The same problems run on meta
tensors must give the real outputs' shapes and dtypes, and reject the layout errors the real
kernels reject. NaN inputs are left out: their ranking rule is tested with the top-k ops.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import xcops
from hypothesis_settings import PROPERTY
from xcops.ops import reference
from xcops.ops.clustering import balanced_kmeans

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def _layout(t, kind):
    """``t``'s values as a contiguous tensor, a view with a storage offset, or a strided view."""
    if kind == "offset":
        flat = torch.empty(t.numel() + 3, dtype=t.dtype)
        flat[3:] = t.reshape(-1)
        return flat[3:].view(t.shape)
    if kind == "strided" and t.dim() == 2:
        wide = torch.zeros(t.shape[0], 2 * t.shape[1], dtype=t.dtype)
        wide[:, ::2] = t
        return wide[:, ::2]
    return t


@st.composite
def problems(draw):
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    batch = draw(st.sampled_from([0, 1, 2, 7, 13]))
    dim = draw(st.sampled_from([1, 3, 8, 17]))
    labels = draw(st.sampled_from([1, 2, 5, 33]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    index_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    query = _layout(torch.randn(batch, dim, generator=gen, dtype=dtype), draw(st.sampled_from(["plain", "offset", "strided"])))
    # The weight must be contiguous (it is never copied); a storage offset is fine.
    weight = _layout(torch.randn(labels, dim, generator=gen, dtype=dtype), draw(st.sampled_from(["plain", "offset"])))
    bias = torch.randn(labels, generator=gen, dtype=dtype) if draw(st.booleans()) else None
    ids_layout = draw(st.sampled_from(["plain", "offset", "strided"]))
    if draw(st.booleans()):
        width = draw(st.sampled_from([0, 1, 4, 9]))
        ids = torch.randint(-1, labels, (batch, width), generator=gen)
        shortlist = _layout(ids.to(index_dtype), ids_layout)
    else:
        lengths = torch.randint(0, 6, (batch,), generator=gen)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        indices = torch.randint(-1, labels, (int(indptr[-1]),), generator=gen)
        shortlist = (indptr.to(index_dtype), _layout(indices.to(index_dtype), ids_layout))
    k = draw(st.integers(1, labels))
    exclude = None
    if draw(st.booleans()):
        lengths = torch.randint(0, 3, (batch,), generator=gen)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        exclude = (indptr.to(index_dtype), torch.randint(0, labels, (int(indptr[-1]),), generator=gen).to(index_dtype))
    return dict(query=query, weight=weight, bias=bias, shortlist=shortlist, k=k, exclude=exclude)


def _rows_and_ids(csr_or_padded, batch):
    if isinstance(csr_or_padded, torch.Tensor):
        ids = csr_or_padded.long()
        return torch.arange(batch).repeat_interleave(ids.shape[1]), ids.reshape(-1)
    indptr, indices = csr_or_padded
    return torch.arange(batch).repeat_interleave((indptr[1:] - indptr[:-1]).long()), indices.long()


def _same_topk(got, want, dtype, scores, candidates):
    """``got`` equals the reference's ``want`` up to the order of near-ties: the same values
    and empty slots, and each returned label is a candidate whose exact score is its value.
    (Exact label equality would make the test flaky: the kernels sum in another order than
    the reference, so two labels within rounding of each other may swap.)"""
    values, labels = got
    want_values, want_labels = want
    assert labels.dtype == torch.int64 and values.dtype == dtype
    assert torch.equal(labels < 0, want_labels < 0)
    torch.testing.assert_close(values, want_values, **TOL[dtype])
    rows, slots = (labels >= 0).nonzero(as_tuple=True)
    picked = labels[rows, slots]
    assert candidates[rows, picked].all()
    torch.testing.assert_close(scores[rows, picked].to(dtype), values[rows, slots], **TOL[dtype])


def _exact_scores(q, w, bias=None):
    scores = q.double() @ w.double().T
    return scores + bias.double() if bias is not None else scores


def _membership(csr_or_padded, batch, labels):
    member = torch.zeros(batch, labels, dtype=torch.bool)
    rows, ids = _rows_and_ids(csr_or_padded, batch)
    keep = ids >= 0
    member[rows[keep], ids[keep]] = True
    return member


@PROPERTY
@given(p=problems())
def test_shortlist_ops_match_reference(p):
    q, w, s, b = p["query"], p["weight"], p["shortlist"], p["bias"]
    got = xcops.shortlist_score(q, w, s, b)
    torch.testing.assert_close(got, reference.shortlist_score(q, w, s, b), **TOL[q.dtype])
    # The backward ops (query and weight/bias gradients, dense and sparse) match autograd
    # through the reference.
    upstream = torch.randn(got.shape, dtype=got.dtype, generator=torch.Generator().manual_seed(1))
    inputs = [t.detach().clone().requires_grad_() for t in (q, w) + ((b,) if b is not None else ())]
    sparse = bool(s[1].numel() % 2) if isinstance(s, tuple) else bool(got.numel() % 2)
    grads = torch.autograd.grad(xcops.shortlist_score(*inputs[:2], s, *inputs[2:], sparse_grad=sparse),
                                inputs, upstream, allow_unused=True)
    want = torch.autograd.grad(reference.shortlist_score(*inputs[:2], s, *inputs[2:]), inputs, upstream,
                               allow_unused=True)
    for g, wg in zip(grads, want):
        g = g.to_dense() if g is not None and g.is_sparse else g
        wg = torch.zeros_like(g) if wg is None and g is not None else wg
        torch.testing.assert_close(g, wg, **TOL[q.dtype])
    if isinstance(s, torch.Tensor):
        width = s.shape[1]
    else:  # a CSR row's length
        width = int(s[0].diff().max()) if s[0].numel() > 1 else 0
    k = min(p["k"] + 2, max(w.shape[0], width))  # past L or past K is allowed: empty slots
    _same_topk(xcops.shortlist_topk(q, w, s, k, b), reference.shortlist_topk(q, w, s, k, b), q.dtype,
               _exact_scores(q, w, b), _membership(s, q.shape[0], w.shape[0]))


@PROPERTY
@given(p=problems())
def test_dense_ops_match_reference(p):
    q, w, k, exclude = p["query"], p["weight"], p["k"], p["exclude"]
    scores = _exact_scores(q, w)
    allowed = ~_membership(exclude, q.shape[0], w.shape[0]) if exclude is not None else torch.ones_like(scores, dtype=torch.bool)
    _same_topk(xcops.dense_topk(q, w, k, exclude), reference.dense_topk(q, w, k, exclude), q.dtype, scores, allowed)
    if exclude is not None:
        k = min(k + 1, w.shape[0])  # past the rows' negatives is allowed: empty slots
        want = reference.hard_negatives(q, w, exclude, k)
        _same_topk(xcops.hard_negatives(q, w, exclude, k), (want[0].detach(), want[1]), q.dtype, scores, allowed)


def _raises(call, pattern):
    with pytest.raises((RuntimeError, ValueError, TypeError), match=pattern):
        call()


# One broken rule each: (name, mutate the problem dict in place); all must raise.
def _break(p, rule, gen_value):
    q, w = p["query"], p["weight"]
    if rule == "weight not contiguous":
        labels, dim = max(w.shape[0], 2), max(w.shape[1], 2)  # size-1 tensors are always contiguous
        p["weight"] = torch.randn(labels, 2 * dim, dtype=w.dtype)[:, ::2]
        p["query"] = torch.randn(q.shape[0], dim, dtype=q.dtype)
        p["bias"] = None
    elif rule == "dtype mismatch":
        p["weight"] = w.to(torch.float64 if w.dtype == torch.float32 else torch.float32)
    elif rule == "d mismatch":
        p["weight"] = torch.randn(w.shape[0], w.shape[1] + 1, dtype=w.dtype)
    elif rule == "id too large":
        p["shortlist"] = torch.full((q.shape[0] or 1, 2), w.shape[0])
        p["query"] = torch.randn(q.shape[0] or 1, q.shape[1], dtype=q.dtype)
    elif rule == "id below -1":
        p["shortlist"] = torch.full((q.shape[0] or 1, 2), -2 - gen_value)
        p["query"] = torch.randn(q.shape[0] or 1, q.shape[1], dtype=q.dtype)
    elif rule == "indptr too short":
        p["shortlist"] = (torch.zeros(q.shape[0], dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    elif rule == "bias wrong length":
        p["bias"] = torch.randn(w.shape[0] + 1, dtype=w.dtype)
    elif rule == "k zero":
        p["k"] = 0
    elif rule == "k float":
        p["k"] = p["k"] + 0.5
    elif rule == "k too large":
        p["k"] = 2**62 + gen_value
    elif rule == "3-D query":
        p["query"] = q.unsqueeze(0)


# Each rule's error must be the one it broke, not any error that happens to come first.
RULES = {
    "weight not contiguous": "must be contiguous",
    "dtype mismatch": "has dtype",
    "d mismatch": "has d = ",
    "id too large": "ids must be < ",
    "id below -1": "ids must be >= -1",
    "indptr too short": r"must have B \+ 1",
    "bias wrong length": "bias must have L = ",
    "k zero": "k must be >= 1",
    "k float": "k must be an integer",
    "k too large": "is too large",
    "3-D query": "must be 2-D",
}


@PROPERTY
@given(p=problems(), rule=st.sampled_from(sorted(RULES)), value=st.integers(0, 1000))
def test_invalid_inputs_raise(p, rule, value):
    _break(p, rule, value)
    q, w, s, b, k = p["query"], p["weight"], p["shortlist"], p["bias"], p["k"]
    pattern = RULES[rule]
    if rule not in ("k zero", "k float", "k too large"):
        _raises(lambda: xcops.shortlist_score(q, w, s, b), pattern)
    _raises(lambda: xcops.shortlist_topk(q, w, s, k, b), pattern)
    if rule not in ("id too large", "id below -1", "bias wrong length"):
        exclude = s if isinstance(s, tuple) else (torch.arange(q.shape[0] + 1), torch.zeros(q.shape[0], dtype=torch.int64))
        _raises(lambda: xcops.dense_topk(q, w, k, exclude), pattern)
        _raises(lambda: xcops.hard_negatives(q, w, exclude, k), pattern)


def _meta(value):
    if isinstance(value, torch.Tensor):  # same strides: .to("meta") would make it contiguous
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, tuple):
        return tuple(_meta(v) for v in value)
    return value


def _calls(p):
    q, w, s, b, k, exclude = p["query"], p["weight"], p["shortlist"], p["bias"], p["k"], p["exclude"]
    positives = exclude if exclude is not None else (torch.zeros(q.shape[0] + 1, dtype=torch.int64) if q.dim() == 2 else torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    return {
        "shortlist_score": lambda m: xcops.shortlist_score(m(q), m(w), m(s), m(b)),
        "shortlist_topk": lambda m: xcops.shortlist_topk(m(q), m(w), m(s), k, m(b)),
        "dense_topk": lambda m: xcops.dense_topk(m(q), m(w), k, m(exclude)),
        "hard_negatives": lambda m: xcops.hard_negatives(m(q), m(w), m(positives), k),
    }


def _outcome(call):
    try:
        out = call()
    except (RuntimeError, ValueError, TypeError) as err:
        return type(err), str(err)
    outs = out if isinstance(out, tuple) else (out,)
    return [(tuple(t.shape), t.dtype) for t in outs]


# Layout rules a fake can check (the others depend on values only the real data has); the
# fake must raise the same error, message included.
LAYOUT_RULES = ["weight not contiguous", "dtype mismatch", "d mismatch", "indptr too short",
                "bias wrong length", "k zero", "k float", "k too large", "3-D query"]


@PROPERTY
@given(p=problems(), rule=st.sampled_from([None] + LAYOUT_RULES), value=st.integers(0, 1000))
def test_fake_kernels_match_real_kernels(p, rule, value):
    if rule is not None:
        _break(p, rule, value)
    identity = lambda t: t  # noqa: E731
    for name, call in _calls(p).items():
        real, fake = _outcome(lambda: call(identity)), _outcome(lambda: call(_meta))
        assert real == fake, (name, rule, real, fake)


@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 2, 3, 7, 64, 129]),
       d=st.sampled_from([1, 2, 5]), depth=st.integers(0, 3), dtype=st.sampled_from([torch.float32, torch.float64]),
       layout=st.sampled_from(["plain", "offset", "strided"]), scale=st.sampled_from([1.0, 2.0**-70, 2.0**70]))
def test_balanced_kmeans_properties(seed, n, d, depth, dtype, layout, scale):
    clusters = 2**depth
    x = _layout(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype), layout)
    if clusters > n:
        _raises(lambda: balanced_kmeans(x, num_clusters=clusters), "num_clusters must be <= the number of points")
        _raises(lambda: balanced_kmeans(x.to("meta"), num_clusters=clusters), "num_clusters must be <= the number of points")
        return
    assign, centroids = balanced_kmeans(x, num_clusters=clusters, seed=seed)
    sizes = torch.bincount(assign, minlength=clusters)
    assert assign.dtype == torch.int64 and assign.shape == (n,) and centroids.shape == (clusters, d)
    assert sizes.max() - sizes.min() <= 1
    assert centroids.dtype == dtype and torch.isfinite(centroids).all()
    # Spherical: only each row's direction matters, whatever its scale (powers of two scale
    # exactly, so the results must be identical).
    assert torch.equal(balanced_kmeans(x * scale, num_clusters=clusters, seed=seed)[0], assign)
    fake_assign, fake_centroids = balanced_kmeans(x.to("meta"), num_clusters=clusters, seed=seed)
    assert (fake_assign.shape, fake_assign.dtype) == (assign.shape, assign.dtype)
    assert (fake_centroids.shape, fake_centroids.dtype) == (centroids.shape, centroids.dtype)

"""torch.library.opcheck and torch.compile coverage of the shortlist ops."""

import pytest
import torch

import xcops

from shortlist_inputs import make_csr, make_problem

ops = torch.ops.xcops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_opcheck_score(device, rng, dtype, with_bias):
    query, weight, _, bias = make_problem(5, 0, 30, 12, dtype, device, rng, bias=with_bias)
    indptr, indices = make_csr(5, 30, 7, device, rng)
    for t in (query, weight, bias):
        if t is not None:
            t.requires_grad_()
    torch.library.opcheck(ops.shortlist_score.default, (query, weight, indptr, indices, bias, False))


def test_opcheck_topk(device, rng):
    query, weight, _, bias = make_problem(5, 0, 30, 12, torch.float32, device, rng, bias=True)
    indptr, indices = make_csr(5, 30, 7, device, rng, index_dtype=torch.int32)
    torch.library.opcheck(ops.shortlist_topk.default, (query, weight, indptr, indices, 4, bias))


def test_opcheck_backward_ops(device, rng):
    query, weight, _, _ = make_problem(5, 0, 30, 12, torch.float32, device, rng)
    indptr, indices = make_csr(5, 30, 7, device, rng)
    grad = torch.randn(indices.numel(), device=device)
    torch.library.opcheck(ops.shortlist_score_backward_query.default, (grad, weight, indptr, indices))
    torch.library.opcheck(ops.shortlist_score_backward_weight.default, (grad, query, indptr, indices),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(ops.shortlist_score_backward_weight_dense.default,
                          (grad, query, indptr, indices, 30))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_dense_weight_gradient_matches_compact(device, rng, index_dtype):
    # Padded layout with -1 padding and duplicates, and a CSR with empty rows: the dense op is
    # the compact op scattered into zeros, and rejects ids past num_labels.
    query, weight, shortlist, _ = make_problem(9, 7, 23, 13, torch.float32, device, rng,
                                               index_dtype=index_dtype)
    indptr = torch.arange(10, device=device, dtype=index_dtype) * 7
    for indptr, indices in ((indptr, shortlist.flatten()), make_csr(9, 23, 6, device, rng, index_dtype)):
        grad = torch.randn(indices.numel(), generator=rng).to(device)
        labels, rows, bias = ops.shortlist_score_backward_weight(grad, query, indptr, indices)
        dense_rows, dense_bias = ops.shortlist_score_backward_weight_dense(grad, query, indptr, indices, 23)
        assert torch.equal(dense_rows, torch.zeros_like(dense_rows).index_copy_(0, labels, rows))
        assert torch.equal(dense_bias, torch.zeros_like(dense_bias).index_copy_(0, labels, bias))
        if indices.numel():
            with pytest.raises(RuntimeError, match="ids must be < "):
                ops.shortlist_score_backward_weight_dense(grad, query, indptr, indices,
                                                          int(indices.max()))


def test_compile_fullgraph(device, rng):
    query, weight, shortlist, bias = make_problem(6, 5, 40, 16, torch.float32, device, rng, bias=True)

    def head(q, w, s, b):
        scores = xcops.shortlist_score(q, w, s, b)
        return scores.sigmoid().sum(), xcops.shortlist_topk(q, w, s, 3, b)

    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    (loss, (values, labels)), (want_loss, (want_values, want_labels)) = (
        compiled(query, weight, shortlist, bias), head(query, weight, shortlist, bias))
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(values, want_values)
    assert torch.equal(labels, want_labels)

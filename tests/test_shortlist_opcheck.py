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

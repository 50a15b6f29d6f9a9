"""Fused shortlist scoring: score each query only against the labels of its shortlist.

Drop-in for ``(weight[shortlist] @ query[:, :, None]).squeeze(-1)`` (plus ``bias[shortlist]``)
that never materialises the gathered ``[B, K, d]`` tensor, and for ``torch.topk`` on those
scores.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import checks
from .autocast import match_weight_dtype
from .csr import Shortlist, as_csr, shortlist_width

_ops = torch.ops.xcops


def shortlist_score(
    query: torch.Tensor,
    weight: torch.Tensor,
    shortlist: Shortlist,
    bias: Optional[torch.Tensor] = None,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Scores of each query against its shortlisted labels.

    Args:
        query: ``[B, d]`` float32, float64, bfloat16 or float16 (accumulation is float32,
            float64 for float64).
        weight: ``[L, d]`` label vectors, same dtype and device as ``query``; must be
            contiguous (it is never copied).
        shortlist: padded ``[B, K]`` int32/int64 label ids with -1 as padding, or a CSR tuple
            ``(indptr [B + 1], indices [nnz])``. Duplicate ids are allowed.
        bias: optional ``[L]`` per-label bias.
        sparse_grad: make ``weight.grad`` (and ``bias.grad``) a coalesced sparse COO tensor
            holding only the touched rows, as ``torch.optim.SparseAdam`` expects.

    Returns:
        ``[B, K]`` scores for a padded shortlist (``[nnz]`` for a CSR one), in the dtype of
        ``query``. Padding scores exactly 0 and passes no gradient.

    Example:
        >>> import torch, xcops
        >>> query, weight = torch.randn(2, 8), torch.randn(100, 8)
        >>> shortlist = torch.tensor([[3, 17, -1], [42, 42, 7]])
        >>> xcops.shortlist_score(query, weight, shortlist).shape
        torch.Size([2, 3])
    """
    checks.dense_matrix("xcops.shortlist_score", "query", query)
    checks.dense_matrix("xcops.shortlist_score", "weight", weight)
    query, bias = match_weight_dtype(weight, query, bias)
    indptr, indices, padded_shape = as_csr(shortlist, query.shape[0])
    scores = _ops.shortlist_score(query.contiguous(), weight, indptr, indices, bias, sparse_grad)
    return scores.view(padded_shape) if padded_shape is not None else scores


def shortlist_topk(
    query: torch.Tensor,
    weight: torch.Tensor,
    shortlist: Shortlist,
    k: int,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best-scoring shortlisted labels of each query, best first.

    Arguments as in :func:`shortlist_score`. Ranked by the float32 scores (float64 for
    float64 inputs); NaN ranks above every number (as ``torch.topk`` does); ties, NaNs
    included, go to the lower label id, on every device. Slots with no candidate left (short
    or padded rows, or ``k`` > K) hold value ``-inf`` and index -1. Memory is
    O(nnz + B * k) whatever the row lengths. Not differentiable (use :func:`shortlist_score`
    for training).

    Returns:
        ``(values [B, k]`` in the dtype of ``query``, ``indices [B, k]`` int64 label ids).

    Example:
        >>> import torch, xcops
        >>> query, weight = torch.randn(2, 8), torch.randn(100, 8)
        >>> values, labels = xcops.shortlist_topk(query, weight, torch.randint(0, 100, (2, 20)), k=5)
        >>> labels.shape
        torch.Size([2, 5])
    """
    op = "xcops.shortlist_topk"
    checks.dense_matrix(op, "query", query)
    checks.dense_matrix(op, "weight", weight)
    query, bias = match_weight_dtype(weight, query, bias)
    indptr, indices, _ = as_csr(shortlist, query.shape[0])
    # More slots than both the labels and the widest possible row could only ever be padding.
    width = shortlist_width(shortlist, indices)
    k = checks.topk_k(op, k, max(weight.shape[0], width),
                      f"both the number of labels L = {weight.shape[0]} and the shortlist width K = {width}; max")
    return _ops.shortlist_topk(query.contiguous(), weight, indptr, indices, k, bias)


@torch.library.register_fake("xcops::shortlist_score")
def _score_fake(query, weight, indptr, indices, bias=None, sparse_grad=False):
    checks.score_args("xcops.shortlist_score", query, weight, indptr, indices, bias)
    return query.new_empty(indices.shape[0])


@torch.library.register_fake("xcops::shortlist_topk")
def _topk_fake(query, weight, indptr, indices, k, bias=None):
    op = "xcops.shortlist_topk"
    checks.score_args(op, query, weight, indptr, indices, bias)
    checks.topk_k(op, k)
    if weight.shape[0] >= checks.MAX_TOPK_LABELS:
        checks.fail(op, f"at most {checks.MAX_TOPK_LABELS - 1} labels are supported, got L = {weight.shape[0]}")
    rows = query.shape[0]
    return query.new_empty(rows, k), query.new_empty(rows, k, dtype=torch.int64)


@torch.library.register_fake("xcops::shortlist_score_backward_query")
def _backward_query_fake(grad_scores, weight, indptr, indices):
    op = "xcops.shortlist_score_backward_query"
    checks.float_tensor(op, "weight", weight, 2)
    checks.grad_args(op, grad_scores, indices, weight)
    checks.csr_layout(op, "shortlist", indptr, indices, indptr.shape[0] - 1, weight)
    return weight.new_empty(indptr.shape[0] - 1, weight.shape[1])


@torch.library.register_fake("xcops::shortlist_score_backward_weight")
def _backward_weight_fake(grad_scores, query, indptr, indices):
    op = "xcops.shortlist_score_backward_weight"
    checks.float_tensor(op, "query", query, 2)
    checks.grad_args(op, grad_scores, indices, query)
    checks.csr_layout(op, "shortlist", indptr, indices, query.shape[0], query)
    touched = torch.library.get_ctx().new_dynamic_size()
    return (
        query.new_empty(touched, dtype=torch.int64),
        query.new_empty(touched, query.shape[1]),
        query.new_empty(touched),
    )


@torch.library.register_fake("xcops::shortlist_score_backward_weight_dense")
def _backward_weight_dense_fake(grad_scores, query, indptr, indices, num_labels):
    return query.new_empty(num_labels, query.shape[1]), query.new_empty(num_labels)


def _setup_context(ctx, inputs, output):
    query, weight, indptr, indices, bias, sparse_grad = inputs
    ctx.save_for_backward(query, weight, indptr, indices)
    ctx.has_bias = bias is not None
    ctx.sparse_grad = sparse_grad


def _sparse_rows(labels, values, shape):
    return torch.sparse_coo_tensor(
        labels.unsqueeze(0), values, shape, is_coalesced=True, check_invariants=False
    )


def weight_gradients(grad_scores, query, indptr, indices, num_labels: int, sparse: bool,
                     need_weight: bool, need_bias: bool):
    """``(grad_weight [L, d], grad_bias [L])`` of shortlist scores (None where not needed):
    sparse COO rows of the touched labels, or dense tensors sized from shapes, so that a dense
    CUDA training step needs no host sync."""
    grad_weight = grad_bias = None
    if not (need_weight or need_bias):
        return grad_weight, grad_bias
    if sparse:
        labels, row_grads, bias_grads = _ops.shortlist_score_backward_weight(
            grad_scores, query, indptr, indices
        )
        if need_weight:
            grad_weight = _sparse_rows(labels, row_grads, (num_labels, query.shape[1]))
        if need_bias:
            grad_bias = _sparse_rows(labels, bias_grads, (num_labels,))
        return grad_weight, grad_bias
    dense_weight, dense_bias = _ops.shortlist_score_backward_weight_dense(
        grad_scores, query, indptr, indices, num_labels
    )
    return (dense_weight if need_weight else None), (dense_bias if need_bias else None)


def _backward(ctx, grad_scores):
    query, weight, indptr, indices = ctx.saved_tensors
    grad_scores = grad_scores.contiguous()
    grad_query = None
    if ctx.needs_input_grad[0]:
        grad_query = _ops.shortlist_score_backward_query(grad_scores, weight, indptr, indices)
    grad_weight, grad_bias = weight_gradients(
        grad_scores, query, indptr, indices, weight.shape[0], ctx.sparse_grad,
        ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[4],
    )
    return grad_query, grad_weight, None, None, grad_bias, None


torch.library.register_autograd(
    "xcops::shortlist_score", _backward, setup_context=_setup_context
)

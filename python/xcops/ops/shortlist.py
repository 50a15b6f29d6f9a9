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

    Arguments as in :func:`shortlist_score`. Ties are broken by the lower label id. Slots
    with no candidate left (short or padded rows, or ``k`` > K) hold value ``-inf`` and index
    -1. Not differentiable (use :func:`shortlist_score` for training).

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
    # More slots than labels or than the longest possible row could only ever be padding.
    limit = max(weight.shape[0], shortlist_width(shortlist, indices))
    k = checks.topk_k(op, k, limit, "both the number of labels L and the shortlist width K")
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


def _backward(ctx, grad_scores):
    query, weight, indptr, indices = ctx.saved_tensors
    grad_scores = grad_scores.contiguous()
    grad_query = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_query = _ops.shortlist_score_backward_query(grad_scores, weight, indptr, indices)
    need_bias = ctx.has_bias and ctx.needs_input_grad[4]
    if ctx.sparse_grad and (ctx.needs_input_grad[1] or need_bias):
        labels, row_grads, bias_grads = _ops.shortlist_score_backward_weight(
            grad_scores, query, indptr, indices
        )
        if ctx.needs_input_grad[1]:
            grad_weight = _sparse_rows(labels, row_grads, weight.shape)
        if need_bias:
            grad_bias = _sparse_rows(labels, bias_grads, weight.shape[:1])
    elif ctx.needs_input_grad[1] or need_bias:
        # Dense: sizes come from shapes, so a CUDA training step needs no host sync.
        grad_weight, grad_bias = _ops.shortlist_score_backward_weight_dense(
            grad_scores, query, indptr, indices, weight.shape[0]
        )
        grad_weight = grad_weight if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias if need_bias else None
    return grad_query, grad_weight, None, None, grad_bias, None


torch.library.register_autograd(
    "xcops::shortlist_score", _backward, setup_context=_setup_context
)

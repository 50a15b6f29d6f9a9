"""The argument rules of the C++ ops (csrc/common/checks.h, csrc/common/csr.cpp), in Python.

The fake (meta) kernels apply them, so tracing with FakeTensors or meta tensors rejects what
the real kernels reject, with the same messages, instead of returning empty tensors of a
made-up shape. The Python wrappers use the same functions for what they must check before
they can call the op at all (the type of ``k``, a query that is not a dense 2-D tensor).
Only layout is checked here: index values live in the data, which a fake has none of.
"""

from __future__ import annotations

import operator
from typing import Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)
# csrc/common/topk_key.h: a label id must fit the low 32 bits of a packed top-k key.
MAX_TOPK_LABELS = 0xFFFFFFFF
# Every k travels as a C++ int64_t; past this the op could never allocate the output anyway.
MAX_K = 2**31 - 1


def fail(op: str, message: str):
    # RuntimeError, as TORCH_CHECK raises in the real kernels.
    raise RuntimeError(f"{op}: {message}")


# How c10 prints a ScalarType, so a fake's message reads exactly like the kernel's.
_SCALAR_TYPE_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.bfloat16: "BFloat16",
                      torch.float16: "Half", torch.int32: "Int", torch.int64: "Long", torch.bool: "Bool",
                      torch.int8: "Char", torch.uint8: "Byte", torch.int16: "Short"}


def dtype_str(dtype: torch.dtype) -> str:
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype))


def shape_str(t: torch.Tensor) -> str:
    return str(list(t.shape))


def float_tensor(op: str, name: str, t: torch.Tensor, dim: int) -> None:
    """A dense, contiguous float tensor of ``dim`` dimensions (check_float_tensor)."""
    if t.layout != torch.strided:
        fail(op, f"{name} must be a dense tensor, got layout {t.layout}")
    if t.dim() != dim:
        fail(op, f"{name} must be {dim}-D, got shape {shape_str(t)}")
    if t.dtype not in FLOAT_DTYPES:
        fail(op, f"{name} must be float32, float64, bfloat16 or float16, got {dtype_str(t.dtype)}")
    if not t.is_contiguous():
        fail(op, f"{name} must be contiguous (call .contiguous()), got strides {list(t.stride())}")


def dense_matrix(op: str, name: str, t) -> None:
    """What a wrapper checks before it reshapes or copies a float argument: a dense 2-D
    tensor (dtype and contiguity are the op's to check)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        fail(op, f"{name} must be a dense tensor, got layout {t.layout} (call .to_dense())")
    if t.dim() != 2:
        fail(op, f"{name} must be 2-D, got shape {shape_str(t)}")


def index_tensor(op: str, name: str, t: torch.Tensor) -> None:
    """A dense, contiguous 1-D int32/int64 tensor (check_index_tensor)."""
    if t.layout != torch.strided:
        fail(op, f"{name} must be a dense tensor, got layout {t.layout}")
    if t.dim() != 1:
        fail(op, f"{name} must be 1-D, got shape {shape_str(t)}")
    if t.dtype not in INDEX_DTYPES:
        fail(op, f"{name} must be int32 or int64, got {dtype_str(t.dtype)}")
    if not t.is_contiguous():
        fail(op, f"{name} must be contiguous")


def same_device(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        fail(op, f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def same_dtype(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        fail(op, f"{name} has dtype {dtype_str(t.dtype)} but {ref_name} has dtype {dtype_str(ref.dtype)}")


def csr_layout(op: str, name: str, indptr: torch.Tensor, indices: torch.Tensor, rows: int,
               like: torch.Tensor) -> None:
    """dtype, shape and device of a CSR ``(indptr [rows + 1], indices)`` (check_csr_layout)."""
    index_tensor(op, f"{name} indptr", indptr)
    index_tensor(op, f"{name} indices", indices)
    same_dtype(op, f"{name} indices", indices, f"{name} indptr", indptr)
    same_device(op, f"{name} indptr", indptr, "query", like)
    same_device(op, f"{name} indices", indices, "query", like)
    if indptr.numel() != rows + 1:
        fail(op, f"{name} indptr must have B + 1 = {rows + 1} entries for B = {rows} query rows, "
                  f"got {indptr.numel()}")


def query_and_labels(op: str, labels_name: str, query: torch.Tensor, labels: torch.Tensor,
                     shapes: bool = False) -> None:
    """Two float matrices of one dtype, device and width d; ``shapes`` adds both shapes to
    the message (as the shortlist kernels do)."""
    float_tensor(op, "query", query, 2)
    float_tensor(op, labels_name, labels, 2)
    same_dtype(op, labels_name, labels, "query", query)
    same_device(op, labels_name, labels, "query", query)
    if labels.shape[1] != query.shape[1]:
        detail = f" (query is {shape_str(query)}, {labels_name} is {shape_str(labels)})" if shapes else ""
        fail(op, f"query has d = {query.shape[1]} but {labels_name} has d = {labels.shape[1]}{detail}")


def label_bias(op: str, bias: Optional[torch.Tensor], query, weight) -> None:
    """An optional bias [L] in the query's dtype and on its device."""
    if bias is None:
        return
    float_tensor(op, "bias", bias, 1)
    same_dtype(op, "bias", bias, "query", query)
    same_device(op, "bias", bias, "query", query)
    if bias.numel() != weight.shape[0]:
        fail(op, f"bias must have L = {weight.shape[0]} entries (weight.size(0)), got {bias.numel()}")


def score_args(op: str, query, weight, indptr, indices, bias: Optional[torch.Tensor]) -> None:
    """The checks of shortlist_score and shortlist_topk (check_score_args)."""
    query_and_labels(op, "weight", query, weight, shapes=True)
    label_bias(op, bias, query, weight)
    csr_layout(op, "shortlist", indptr, indices, query.shape[0], query)


def grad_args(op: str, grad: torch.Tensor, indices: torch.Tensor, like: torch.Tensor) -> None:
    """The gradient of shortlist_score's backward pieces (check_grad)."""
    float_tensor(op, "grad_scores", grad, 1)
    same_dtype(op, "grad_scores", grad, "the inputs", like)
    same_device(op, "grad_scores", grad, "the inputs", like)
    if grad.numel() != indices.numel():
        fail(op, f"grad_scores must have one entry per index ({indices.numel()}), got {grad.numel()}")


def topk_k(op: str, k, limit: Optional[int] = None, limit_name: str = "") -> int:
    """``k`` as a Python int: an integer (not a bool, not a float) with 1 <= k <= MAX_K, and
    k <= ``limit`` when given (``limit_name`` says what the limit is)."""
    if isinstance(k, bool) or (isinstance(k, torch.Tensor) and k.dtype == torch.bool):
        raise TypeError(f"{op}: k must be an integer, got {k!r}")
    try:
        value = operator.index(k)
    except TypeError:
        raise TypeError(f"{op}: k must be an integer, got {k!r} ({type(k).__name__})") from None
    if value < 1:
        fail(op, f"k must be >= 1, got {value}")
    if value > MAX_K:
        fail(op, f"k = {value} is too large (at most {MAX_K})")
    if limit is not None and value > limit:
        fail(op, f"k = {value} exceeds {limit_name} = {limit}")
    return value


def balanced_kmeans_args(op: str, x: torch.Tensor, num_clusters: int, iters: int) -> None:
    float_tensor(op, "x", x, 2)
    n, d = x.shape
    if n < 1 or d < 1:
        fail(op, f"x must have at least one row and one column, got shape {shape_str(x)}")
    if num_clusters < 1 or (num_clusters & (num_clusters - 1)) != 0:
        fail(op, f"num_clusters must be a power of two, got {num_clusters}")
    if num_clusters > n:
        fail(op, f"num_clusters must be <= the number of points N = {n}, got {num_clusters}")
    if iters < 1:
        fail(op, f"iters must be >= 1, got {iters}")


def k_within_labels(op: str, k, labels: int) -> int:
    """dense_topk's ``k``: a valid k (:func:`topk_k`) of at most L = ``labels``."""
    k = topk_k(op, k)
    if k > labels:
        fail(op, f"k = {k} exceeds the number of labels L = {labels} (weight.size(0))")
    return k


def ranked_rows(op: str, name: str, labels: torch.Tensor) -> None:
    """The ranking keys hold a label id in 32 bits (csrc/common/topk_key.h)."""
    if labels.shape[0] >= MAX_TOPK_LABELS:
        fail(op, f"at most {MAX_TOPK_LABELS - 1} {name} rows are supported, got {labels.shape[0]}")


def dense_topk_args(op: str, query, weight, k: int, exclude_indptr, exclude_indices,
                    bias: Optional[torch.Tensor] = None) -> None:
    query_and_labels(op, "weight", query, weight)
    ranked_rows(op, "weight", weight)
    k_within_labels(op, k, weight.shape[0])
    label_bias(op, bias, query, weight)
    if (exclude_indptr is None) != (exclude_indices is None):
        fail(op, "pass both exclude_indptr and exclude_indices, or neither")
    if exclude_indptr is not None:
        csr_layout(op, "exclude", exclude_indptr, exclude_indices, query.shape[0], query)


def hard_negatives_k(op: str, k, labels: torch.Tensor) -> int:
    """hard_negatives' ``k``: a valid k (:func:`topk_k`) of at most P = labels.size(0) >= 1."""
    k = topk_k(op, k)
    if labels.shape[0] < 1:
        fail(op, f"labels must have at least one row, got shape {shape_str(labels)}")
    if k > labels.shape[0]:
        fail(op, f"k = {k} exceeds the number of label columns P = {labels.shape[0]} (labels.size(0))")
    return k


def hard_negatives_args(op: str, query, labels, positives_indptr, positives_indices, k: int) -> None:
    query_and_labels(op, "labels", query, labels)
    ranked_rows(op, "labels", labels)
    hard_negatives_k(op, k, labels)
    csr_layout(op, "positives", positives_indptr, positives_indices, query.shape[0], query)

"""Normalising the two accepted shortlist layouts into the CSR pair the kernels take."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple, Union

import torch

Shortlist = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]

_INDEX_DTYPES = (torch.int32, torch.int64)


def as_csr(
    shortlist: Shortlist, batch: int, name: str = "shortlist"
) -> Tuple[torch.Tensor, torch.Tensor, Optional[Tuple[int, int]]]:
    """Returns ``(indptr, indices, padded_shape)``.

    A padded ``[B, K]`` tensor becomes the CSR with ``indptr = arange(B + 1) * K`` and
    ``padded_shape = (B, K)``; a CSR tuple ``(indptr, indices)`` is passed through with
    ``padded_shape = None``; when one of the pair is int64 the other is widened to int64.
    """
    if isinstance(shortlist, (tuple, list)):
        if len(shortlist) != 2 or not all(isinstance(t, torch.Tensor) for t in shortlist):
            raise TypeError(f"{name}: a CSR shortlist is a pair of tensors (indptr, indices)")
        indptr, indices = shortlist
        if indices.dtype not in _INDEX_DTYPES:
            raise TypeError(f"{name}: indices must be int32 or int64, got {indices.dtype}")
        if indptr.dtype not in _INDEX_DTYPES:
            raise TypeError(f"{name}: indptr must be int32 or int64, got {indptr.dtype}")
        # Widen, never narrow: an int64 indptr cast to int32 indices would wrap (2^32 + 1 -> 1)
        # and pass every check downstream.
        dtype = torch.promote_types(indptr.dtype, indices.dtype)
        return indptr.to(dtype).contiguous(), indices.to(dtype).contiguous(), None
    if not isinstance(shortlist, torch.Tensor):
        raise TypeError(
            f"{name} must be a padded [B, K] integer tensor or a CSR tuple (indptr, indices), "
            f"got {type(shortlist).__name__}"
        )
    if shortlist.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be int32 or int64, got {shortlist.dtype}")
    if shortlist.dim() != 2 or shortlist.shape[0] != batch:
        raise ValueError(
            f"{name} must be a padded [B, K] tensor with B = {batch} rows (one per query), "
            f"got shape {tuple(shortlist.shape)}"
        )
    rows, width = shortlist.shape
    # int32 offsets would overflow past 2^31 entries.
    dtype = shortlist.dtype if rows * width < 2**31 else torch.int64
    indptr = torch.arange(rows + 1, device=shortlist.device, dtype=dtype) * width
    return indptr, shortlist.to(dtype).reshape(-1).contiguous(), (rows, width)


def set_device_checks(enabled: bool) -> bool:
    """Chooses how the ops check CSR ids and offsets of CUDA inputs; returns the old setting.

    Off (the default): the facts are copied to the host and a bad id raises a ``RuntimeError``
    naming the argument and value; the copy is a host sync (25-45 us) that also makes a
    CUDA graph capture fail, so during a capture the ops use the device check regardless.
    On: a device-side assert, with no sync, for trusted callers (training loops,
    ``torch.compile(mode="reduce-overhead")``); a bad id then aborts the CUDA context with a
    generic device-side assert. CPU inputs are always checked on the host.
    """
    return bool(torch.ops.xcops.set_device_checks(bool(enabled)))


@contextlib.contextmanager
def device_checks(enabled: bool = True) -> Iterator[None]:
    """:func:`set_device_checks` for the duration of a ``with`` block."""
    previous = set_device_checks(enabled)
    try:
        yield
    finally:
        set_device_checks(previous)


def shortlist_width(shortlist: Shortlist, indices: torch.Tensor) -> int:
    """The most candidates any row can hold: K of a padded ``[B, K]`` shortlist, nnz of a CSR."""
    if isinstance(shortlist, torch.Tensor):
        return shortlist.shape[1]
    return indices.numel()

"""The collectives the sharded ops use, with the group checks and byte counting around them.

Every byte the sharded ops send goes through :func:`all_to_all` or :func:`all_gather`, which
add it to :data:`traffic`, so the benchmark can check the byte formulas of
``bench/RESULTS.md`` against what was really sent.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class Traffic:
    """Bytes this rank sent to other ranks (its own share of a collective excluded)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.bytes_sent = 0
        self.collectives = 0

    def add(self, nbytes: int) -> None:
        self.bytes_sent += int(nbytes)
        self.collectives += 1


traffic = Traffic()


def resolve_group(group=None) -> Tuple[object, int, int]:
    """``(group, rank, world_size)``, or a clear error when no process group exists."""
    if not dist.is_available():
        raise RuntimeError("xcops.distributed needs a torch build with torch.distributed")
    if not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialised: call torch.distributed.init_process_group("
            "'gloo' on CPU or 'nccl' on GPU) first, e.g. by launching with torchrun"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise RuntimeError("this process is not a member of the process group passed as `group`")
    return group, rank, dist.get_world_size(group)


def all_to_all(tensor: torch.Tensor, send_counts: Sequence[int], recv_counts: Sequence[int],
               group, rank: int) -> torch.Tensor:
    """``all_to_all_single`` over dim 0: ``send_counts[r]`` rows go to rank r (in order),
    ``recv_counts[r]`` rows arrive from rank r."""
    tensor = tensor.contiguous()
    out = tensor.new_empty((sum(recv_counts), *tensor.shape[1:]))
    dist.all_to_all_single(out, tensor, list(recv_counts), list(send_counts), group=group)
    row_bytes = tensor.element_size() * _row_numel(tensor)
    traffic.add(row_bytes * (sum(send_counts) - send_counts[rank]))
    return out


def all_gather(tensor: torch.Tensor, group, world: int) -> List[torch.Tensor]:
    """Every rank's ``tensor`` (all of one shape), in rank order."""
    tensor = tensor.contiguous()
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor, group=group)
    traffic.add(tensor.numel() * tensor.element_size() * (world - 1))
    return out


def _row_numel(tensor: torch.Tensor) -> int:
    numel = 1
    for size in tensor.shape[1:]:
        numel *= size
    return numel


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else -1


def exchange_header(per_dest: torch.Tensor, common: Sequence[Tuple[str, int]], error: Optional[Exception],
                    what: str, group, rank: int, world: int) -> torch.Tensor:
    """One small all-to-all that tells every rank what the others will send, and checks that
    every rank called ``what`` validly and with the same ``common`` settings.

    ``per_dest`` is ``[world, m]`` int64 (row r: counts meant for rank r); returns the
    ``[world, m]`` rows received (row s: what rank s will send here). Because every rank
    hears from every other, a bad argument on one rank raises on all of them, instead of
    leaving the others blocked in the next collective.
    """
    flags = [0 if error is None else 1] + [value for _, value in common]
    header = torch.cat([per_dest.new_tensor(flags).expand(world, -1), per_dest], 1)
    received = all_to_all(header, [1] * world, [1] * world, group, rank).cpu()
    bad = received[:, 0].nonzero().flatten().tolist()
    if error is not None:
        raise error
    if bad:
        raise RuntimeError(f"{what}: rank(s) {bad} passed invalid arguments (see their error)")
    for column, (name, value) in enumerate(common, start=1):
        values = received[:, column].tolist()
        if any(v != value for v in values):
            if name == "dtype":
                values = [_DTYPES[v] if 0 <= v < len(_DTYPES) else "other" for v in values]
            raise ValueError(f"{what}: every rank must pass the same {name}; "
                             f"got {dict(enumerate(values))} by rank")
    return received[:, len(flags):]

"""Routing a CSR of global label ids to the ranks that own them, and the replies back.

The sender groups its valid entries by owner (a stable sort, so each owner's entries keep
row order) and sends each owner one int block: the entry count of every row it sends, then
the shard-local ids. The owner rebuilds a CSR over the rows it received, in source-rank
order, which is exactly the layout the local xcops ops take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from .comm import all_to_all
from .partition import LabelPartition


@dataclass
class SendPlan:
    """One rank's entries, ordered owner-major then row-major, and what goes to each owner."""

    positions: torch.Tensor   # [n] where each sent entry sits in the caller's flat shortlist
    pair_rows: torch.Tensor   # [p] the caller's row of each (owner, row) pair sent
    pair_counts: torch.Tensor  # [p] entries in that row for that owner
    local_ids: torch.Tensor   # [n] shard-local ids
    rows_per_dest: List[int]
    entries_per_dest: List[int]


@dataclass
class Route:
    """Both sides of one exchange: ``send`` (this rank's entries) and the CSR it received."""

    send: SendPlan
    rows_per_src: List[int]
    entries_per_src: List[int]
    recv_indptr: torch.Tensor   # [sum(rows_per_src) + 1] int64
    recv_indices: torch.Tensor  # [sum(entries_per_src)] int64 shard-local ids


def check_ids(indices: torch.Tensor, num_labels: int, name: str) -> None:
    if indices.numel():
        low, high = (int(v) for v in torch.aminmax(indices))
        if low < -1 or high >= num_labels:
            raise ValueError(f"{name}: label ids must be in [0, {num_labels}) or -1 for padding, "
                             f"got values in [{low}, {high}]")


def plan_send(indptr: torch.Tensor, indices: torch.Tensor, partition: LabelPartition,
              every_row: bool) -> SendPlan:
    """Groups the valid (>= 0) entries of a CSR by owner.

    ``every_row=False`` sends an owner only the rows with at least one of its labels (the
    rows whose query it must score); ``every_row=True`` sends it every row, empty or not (for
    data that rides along with queries every owner gets anyway).
    """
    world, batch = partition.world_size, indptr.numel() - 1
    device = indices.device
    lengths = (indptr[1:] - indptr[:-1]).to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(batch, device=device), lengths)
    positions = (indices >= 0).nonzero().flatten()
    owner = partition.owner(indices[positions])
    # Stable, so each owner's entries stay in row order (the CSR order the owner rebuilds).
    owner, order = torch.sort(owner, stable=True)
    positions = positions[order]
    ids, rows = indices[positions].to(torch.int64), rows[positions]
    counts = torch.bincount(owner * batch + rows, minlength=world * batch).view(world, batch)
    if every_row:
        pair_owner = torch.arange(world, device=device).repeat_interleave(batch)
        pair_rows = torch.arange(batch, device=device).repeat(world)
        pair_counts = counts.flatten()
    else:
        pairs = counts.flatten().nonzero().flatten()
        pair_owner, pair_rows, pair_counts = pairs // max(batch, 1), pairs % max(batch, 1), counts.flatten()[pairs]
    local_ids = ids - partition.starts(device)[owner]
    # One device-to-host copy for both count vectors.
    rows_per_dest, entries_per_dest = torch.stack(
        [torch.bincount(pair_owner, minlength=world), torch.bincount(owner, minlength=world)]).tolist()
    return SendPlan(positions=positions, pair_rows=pair_rows, pair_counts=pair_counts, local_ids=local_ids,
                    rows_per_dest=rows_per_dest, entries_per_dest=entries_per_dest)


def wire_dtype(partition: LabelPartition) -> torch.dtype:
    """Local ids and row counts travel as int32 unless a shard has 2^31 labels or more."""
    return torch.int32 if partition.size(0) < 2**31 else torch.int64


def exchange_ids(plan: SendPlan, rows_per_src: List[int], entries_per_src: List[int],
                 partition: LabelPartition, group, rank: int) -> Route:
    """Sends every owner its block of row counts and local ids; returns the full route."""
    dtype = wire_dtype(partition)
    counts = torch.split(plan.pair_counts.to(dtype), plan.rows_per_dest)
    ids = torch.split(plan.local_ids.to(dtype), plan.entries_per_dest)
    message = torch.cat([part for pair in zip(counts, ids) for part in pair])
    sent = [r + e for r, e in zip(plan.rows_per_dest, plan.entries_per_dest)]
    got = [r + e for r, e in zip(rows_per_src, entries_per_src)]
    blocks = torch.split(all_to_all(message, sent, got, group, rank), got)
    recv_counts = torch.cat([b[:r] for b, r in zip(blocks, rows_per_src)]).to(torch.int64)
    recv_ids = torch.cat([b[r:] for b, r in zip(blocks, rows_per_src)]).to(torch.int64)
    indptr = torch.zeros(recv_counts.numel() + 1, dtype=torch.int64, device=recv_counts.device)
    torch.cumsum(recv_counts, 0, out=indptr[1:])
    return Route(plan, rows_per_src, entries_per_src, indptr, recv_ids)

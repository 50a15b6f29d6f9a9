"""A shortlist classifier whose labels are split across the ranks of a process group."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..distributed import comm
from ..distributed.partition import LabelPartition
from ..distributed.sharded_ops import sharded_dense_topk, sharded_shortlist_score, sharded_shortlist_topk
from ..ops.csr import Shortlist


class ShardedShortlistLinear(nn.Module):
    """``ShortlistLinear`` with its ``[L, d]`` weight (and ``[L]`` bias) split by rows: rank r
    holds labels ``partition.range(r)`` only, so the per-rank memory of weights and optimizer
    state is ``1 / world_size`` of the whole.

    ``forward(query, shortlist)`` takes this rank's queries and a shortlist of **global** ids
    and returns their scores (:func:`xcops.distributed.sharded_shortlist_score`);
    ``topk(query, k, shortlist=None)`` ranks a shortlist, or all labels exactly when
    ``shortlist`` is None. Every rank calls both, and runs backward, together.

    With ``sparse_grad=True`` the shard's gradients are sparse rows: train ``weight`` and
    ``bias`` with ``torch.optim.SparseAdam`` on each rank, and do **not** wrap this module in
    DDP (its gradients are already the sum over all ranks' queries).

    ``state_dict()`` holds ``weight``, ``bias`` and ``label_range`` = ``[start, end,
    num_labels]``; loading a shard of another rank or partition raises. See
    :func:`gather_full_state_dict` and :func:`shard_state_dict` for whole checkpoints.
    The initial weights are drawn from the global torch RNG on each rank (N(0, 1/dim)); load
    a split full checkpoint for a run that must match a single-process one.
    """

    def __init__(self, num_labels: int, dim: int, group=None, bias: bool = True, sparse_grad: bool = True,
                 device=None, dtype=None):
        super().__init__()
        group, rank, world = comm.resolve_group(group)
        self.group = group
        self.partition = LabelPartition(num_labels, world)
        self.rank = rank
        start, end = self.partition.range(rank)
        self.weight = nn.Parameter(torch.randn(end - start, dim, device=device, dtype=dtype) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(end - start, device=device, dtype=dtype)) if bias else None
        self.sparse_grad = sparse_grad
        self.register_buffer("label_range", torch.tensor([start, end, num_labels]))

    @property
    def num_labels(self) -> int:
        return self.partition.num_labels

    def forward(self, query: torch.Tensor, shortlist: Shortlist) -> torch.Tensor:
        return sharded_shortlist_score(query, self.weight, shortlist, self.partition, self.bias,
                                       self.sparse_grad, self.group)

    @torch.no_grad()
    def topk(self, query: torch.Tensor, k: int, shortlist: Optional[Shortlist] = None
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        if shortlist is not None:
            return sharded_shortlist_topk(query, self.weight, shortlist, k, self.partition, self.bias, self.group)
        return sharded_dense_topk(query, self.weight, k, self.partition, group=self.group, bias_shard=self.bias)

    def sparse_parameters(self) -> list:
        """The parameters whose gradients are sparse (for SparseAdam): all of them when
        ``sparse_grad``, none otherwise (as ``ShortlistLinear``)."""
        return list(self.parameters()) if self.sparse_grad else []

    def dense_parameters(self) -> list:
        return [] if self.sparse_grad else list(self.parameters())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        stored = state_dict.get(prefix + "label_range")
        if stored is not None and not torch.equal(stored.cpu(), self.label_range.cpu()):
            start, end, total = stored.tolist()
            mine = self.label_range.tolist()
            raise ValueError(f"this state_dict holds labels [{start}, {end}) of {total}, but rank {self.rank} "
                             f"owns [{mine[0]}, {mine[1]}) of {mine[2]}; split the full checkpoint "
                             "with xcops.nn.sharded.shard_state_dict for this world size")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        start, end = self.partition.range(self.rank)
        return (f"num_labels={self.num_labels}, dim={self.weight.shape[1]}, shard=[{start}, {end}), "
                f"bias={self.bias is not None}, sparse_grad={self.sparse_grad}")


def gather_full_state_dict(module: ShardedShortlistLinear, dst: int = 0) -> Optional[Dict[str, torch.Tensor]]:
    """The whole ``{"weight": [L, d], "bias": [L]}`` on rank ``dst`` (in CPU memory), ``None``
    on the other ranks. Shards travel one at a time (point-to-point), so ``dst`` never holds
    more than one other shard on its device. Collective: every rank must call it."""
    names = ["weight"] + (["bias"] if module.bias is not None else [])
    full = {}
    for name in names:
        mine = getattr(module, name).detach()
        parts = []
        for src in range(module.partition.world_size):
            if src == module.rank:
                if module.rank == dst:
                    parts.append(mine.cpu())
                else:
                    dist.send(mine.contiguous(), group=module.group, group_dst=dst)
            elif module.rank == dst:
                rows = module.partition.size(src)
                buffer = mine.new_empty((rows, *mine.shape[1:]))
                dist.recv(buffer, group=module.group, group_src=src)
                parts.append(buffer.cpu())
        if module.rank == dst:
            full[name] = torch.cat(parts)
    return full if module.rank == dst else None


def shard_state_dict(full: Dict[str, torch.Tensor], rank: int, world_size: int) -> Dict[str, torch.Tensor]:
    """Rank ``rank``'s share of a full ``{"weight": [L, d], "bias": [L]}`` checkpoint (a
    ``ShortlistLinear`` state_dict), ready for ``ShardedShortlistLinear.load_state_dict``."""
    if "weight" not in full or full["weight"].dim() != 2:
        raise ValueError("full checkpoint must hold a [L, d] 'weight'")
    num_labels = full["weight"].shape[0]
    if "bias" in full and tuple(full["bias"].shape) != (num_labels,):
        raise ValueError(f"full checkpoint: bias must be [{num_labels}], got {tuple(full['bias'].shape)}")
    start, end = LabelPartition(num_labels, world_size).range(rank)
    shard = {name: full[name][start:end].clone() for name in ("weight", "bias") if name in full}
    shard["label_range"] = torch.tensor([start, end, num_labels])
    return shard

"""Turning a single-process XC model into a label-sharded, data-parallel one, and back.

Model-agnostic: the classifier heads (modules of given types, with a ``[L, d]`` ``weight``
and ``[L]`` ``bias``) become :class:`~xcops.nn.ShardedShortlistLinear` slices on their own
process group; every other direct child with parameters is wrapped in DDP on the default
group. Separate groups keep the head's all-to-alls and DDP's bucketed all-reduces from
having to be issued in the same order on every rank.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..nn.sharded import ShardedShortlistLinear, gather_full_state_dict, shard_state_dict


def init_process_group(device_name: str = "auto") -> Tuple[torch.device, object]:
    """Initialises the default group from torchrun's environment: NCCL when this process
    gets a GPU, gloo otherwise. Returns ``(device, head_group)``."""
    want_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if want_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device, dist.new_group(backend=backend)


class _Replicated(DistributedDataParallel):
    """DDP that forwards unknown attributes to the wrapped module, so the model's code
    (``self.encoder.embed.weight``, ``self.embed(ids)``) runs unchanged."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def shard_heads(model: nn.Module, head_types: tuple, group) -> Dict[str, nn.Module]:
    """Replaces every direct child of ``head_types`` with this rank's
    ``ShardedShortlistLinear`` slice of it; returns the replaced ``{name: full head}``."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    replaced = {}
    for name, child in list(model.named_children()):
        if not isinstance(child, head_types):
            continue
        if getattr(child, "fused", True) is False:
            raise ValueError("--nproc trains the head with the fused sharded ops; drop --reference-ops")
        weight = child.weight
        sharded = ShardedShortlistLinear(weight.shape[0], weight.shape[1], group=group, bias=child.bias is not None,
                                         sparse_grad=child.sparse_grad, device=weight.device, dtype=weight.dtype)
        full = {"weight": weight.detach()}
        if child.bias is not None:
            full["bias"] = child.bias.detach()
        sharded.load_state_dict(shard_state_dict(full, rank, world))
        # Each shard's gradient sums every rank's queries while DDP averages the rest: scale
        # it to the average too, so the step equals a single-process step on the global batch.
        for param in sharded.parameters():
            param.register_post_accumulate_grad_hook(_scaler(1.0 / world))
        setattr(model, name, sharded)
        replaced[name] = child
    if not replaced:
        raise ValueError(f"{type(model).__name__} has no head of types {[t.__name__ for t in head_types]} to shard")
    return replaced


def _scaler(factor: float):
    def hook(param: torch.Tensor) -> None:
        param.grad.mul_(factor)

    return hook


def replicate_children(model: nn.Module, device: torch.device) -> None:
    """Wraps every direct child that has parameters, except sharded heads, in DDP."""
    device_ids = [device.index] if device.type == "cuda" else None
    for name, child in list(model.named_children()):
        if isinstance(child, ShardedShortlistLinear) or not any(p.requires_grad for p in child.parameters()):
            continue
        setattr(model, name, _Replicated(child, device_ids=device_ids))


def unshard(model: nn.Module, full_heads: Dict[str, nn.Module], dst: int = 0) -> bool:
    """Undoes :func:`shard_heads` and :func:`replicate_children`: the full heads (gathered
    to rank ``dst``) go back into the model there. Collective; returns whether this rank
    holds the full model."""
    have_full = True
    for name, child in list(model.named_children()):
        if isinstance(child, _Replicated):
            setattr(model, name, child.module)
        elif isinstance(child, ShardedShortlistLinear):
            full = gather_full_state_dict(child, dst)
            have_full = full is not None
            if have_full:
                head = full_heads[name]
                with torch.no_grad():
                    for key, value in full.items():
                        getattr(head, key).copy_(value)
                setattr(model, name, head)
    return have_full


def rank_slice(count: int, rank: int, world: int) -> Tuple[int, int]:
    """``[start, end)`` of rank's equal share of ``count`` items (``ceil(count / world)`` each,
    the last share shorter)."""
    share = math.ceil(count / world)
    return min(rank * share, count), min((rank + 1) * share, count)


def training_rows(count: int, rank: int, world: int) -> torch.Tensor:
    """The training rows of ``rank``: every ``world``-th of ``count``, equal shares (the
    ``count % world`` last rows are dropped), so that every rank runs the same number of steps,
    each one collective."""
    return torch.arange(rank, count - count % world, world)


def gather_rows(rows: torch.Tensor, total: int, group=None) -> torch.Tensor:
    """All ranks' ``[n_r, ...]`` rows (n_r from :func:`rank_slice`) concatenated, on every rank."""
    world = dist.get_world_size(group)
    share = math.ceil(total / world)
    padded = rows.new_zeros((share, *rows.shape[1:]))
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat(parts)[:total]

"""Shortlist scoring and exact top-k over a label matrix split by rows across ranks.

Why queries travel and weights do not: a rank's batch needs, for each owner, the rows of
the queries that have labels there, ``B_r * d`` values at most, plus 4 bytes per
shortlisted id; gathering the weights instead would move ``B_r * K * d`` values (the
``[B, K, d]`` gather), and even deduplicated label rows are many more than queries once
K > world_size. At B=1024, K=200, d=768 bf16 on 8 ranks a rank sends about 7 * 1.5 MB of
queries, 0.8 MB of ids and 0.4 MB of scores, against 275 MB for the gather (see
bench/RESULTS.md, "Label-sharded training").

Every rank must call these functions together (the same number of times, in the same
order), as with any collective; the backward of :func:`sharded_shortlist_score` is also
collective, so every rank must run backward when one does.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..ops.autocast import match_weight_dtype
from ..ops.csr import Shortlist, as_csr, shortlist_width
from ..ops.dense_topk import dense_topk
from ..ops.shortlist import weight_gradients
from . import comm
from .partition import LabelPartition
from .routing import Route, check_ids, exchange_ids, plan_send

_ops = torch.ops.xcops


def _prepare(query, weight_shard, bias_shard, partition, rank, world, what):
    """Checks one rank's arguments against the partition; returns ``(query, bias_shard)``
    cast as autocast would (see :mod:`xcops.ops.autocast`)."""
    if not isinstance(partition, LabelPartition):
        raise TypeError(f"{what}: partition must be a LabelPartition, got {type(partition).__name__}")
    if partition.world_size != world:
        raise ValueError(f"{what}: partition is for world_size {partition.world_size}, "
                         f"but the process group has {world} ranks")
    if not isinstance(query, torch.Tensor) or query.dim() != 2:
        raise ValueError(f"{what}: query must be a [B, d] tensor, got "
                         f"{tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__}")
    expected = (partition.size(rank), query.shape[1])
    if not isinstance(weight_shard, torch.Tensor) or tuple(weight_shard.shape) != expected:
        start, end = partition.range(rank)
        got = tuple(weight_shard.shape) if isinstance(weight_shard, torch.Tensor) else type(weight_shard).__name__
        raise ValueError(f"{what}: rank {rank} owns labels [{start}, {end}) of {partition.num_labels}, "
                         f"so weight_shard must be {list(expected)}, got {got}")
    if bias_shard is not None and tuple(bias_shard.shape) != expected[:1]:
        raise ValueError(f"{what}: bias_shard must be [{expected[0]}], got {tuple(bias_shard.shape)}")
    query, bias_shard = match_weight_dtype(weight_shard, query, bias_shard)
    if weight_shard.dtype != query.dtype or weight_shard.device != query.device:
        raise ValueError(f"{what}: query ({query.dtype}, {query.device}) and weight_shard "
                         f"({weight_shard.dtype}, {weight_shard.device}) must share dtype and device")
    return query, bias_shard


def _device_of(*tensors) -> torch.device:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


class _ShardedShortlistScore(torch.autograd.Function):
    """Scores on the owners; its backward sends the score gradients to the owners, which
    compute weight/bias gradients locally and send the query gradients home."""

    @staticmethod
    def forward(ctx, query, weight, bias, route: Route, sparse_grad, group, rank, batch_entries):
        plan = route.send
        sent_queries = query[plan.pair_rows]
        recv_query = comm.all_to_all(sent_queries, plan.rows_per_dest, route.rows_per_src, group, rank)
        local = _ops.shortlist_score(recv_query, weight, route.recv_indptr, route.recv_indices, bias, False)
        back = comm.all_to_all(local, route.entries_per_src, plan.entries_per_dest, group, rank)
        scores = query.new_zeros(batch_entries)
        scores[plan.positions] = back
        ctx.save_for_backward(recv_query, weight)
        ctx.route, ctx.group, ctx.rank = route, group, rank
        ctx.sparse_grad, ctx.has_bias = sparse_grad, bias is not None
        ctx.batch = query.shape[0]
        return scores

    @staticmethod
    def backward(ctx, grad_scores):
        recv_query, weight = ctx.saved_tensors
        route, group, rank = ctx.route, ctx.group, ctx.rank
        plan = route.send
        grad_local = comm.all_to_all(grad_scores[plan.positions], plan.entries_per_dest,
                                     route.entries_per_src, group, rank)
        grad_recv = _ops.shortlist_score_backward_query(grad_local, weight, route.recv_indptr, route.recv_indices)
        grad_sent = comm.all_to_all(grad_recv, route.rows_per_src, plan.rows_per_dest, group, rank)
        grad_query = grad_sent.new_zeros(ctx.batch, grad_sent.shape[1]).index_add_(0, plan.pair_rows, grad_sent)
        grad_weight, grad_bias = weight_gradients(
            grad_local, recv_query, route.recv_indptr, route.recv_indices, weight.shape[0],
            ctx.sparse_grad, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        return grad_query, grad_weight, grad_bias, None, None, None, None, None


def sharded_shortlist_score(
    query: torch.Tensor,
    weight_shard: torch.Tensor,
    shortlist: Shortlist,
    partition: LabelPartition,
    bias_shard: Optional[torch.Tensor] = None,
    sparse_grad: bool = False,
    group=None,
) -> torch.Tensor:
    """:func:`xcops.shortlist_score` against a label matrix whose rows are split across ranks.

    Args:
        query: this rank's ``[B_r, d]`` queries (``B_r`` may differ between ranks, and be 0).
        weight_shard: ``[L_r, d]`` rows ``partition.range(rank)`` of the full ``[L, d]`` weight.
        shortlist: **global** label ids, padded ``[B_r, K]`` with -1 or a CSR pair
            ``(indptr, indices)``; ``K`` may differ between ranks.
        partition: the :class:`LabelPartition` of ``L`` labels over the group's ranks.
        bias_shard: optional ``[L_r]`` slice of the bias.
        sparse_grad: weight/bias gradients as coalesced sparse COO rows of the shard (for
            ``torch.optim.SparseAdam``).
        group: the process group (default: the world).

    Returns:
        Scores in the caller's layout (``[B_r, K]`` or ``[nnz]``), equal to
        ``xcops.shortlist_score(query, full_weight, shortlist, full_bias)`` up to float
        rounding; padding scores 0. Gradients of ``query`` come back to this rank; those of
        ``weight_shard``/``bias_shard`` hold the contributions of every rank's queries.

    Every rank must pass the same dtype and ``d`` (checked, in the same collective that
    exchanges the counts) and call it, and its backward, together.
    """
    scores, padded_shape = _score(query, weight_shard, shortlist, partition, bias_shard, sparse_grad,
                                  group, "sharded_shortlist_score")
    return scores.view(padded_shape) if padded_shape is not None else scores


def _score(query, weight_shard, shortlist, partition, bias_shard, sparse_grad, group, what):
    """Flat scores of every shortlist entry, and the padded shape (None for a CSR)."""
    group, rank, world = comm.resolve_group(group)
    device = _device_of(query, weight_shard)
    error, plan = None, None
    try:
        query, bias_shard = _prepare(query, weight_shard, bias_shard, partition, rank, world, what)
        indptr, indices, padded_shape = as_csr(shortlist, query.shape[0])
        if indices.device != query.device:
            # The ids travel in collectives, which NCCL runs on the GPU only.
            raise ValueError(f"{what}: shortlist is on {indices.device} but query on {query.device}")
        check_ids(indices, partition.num_labels, f"{what}: shortlist")
        plan = plan_send(indptr, indices, partition, every_row=False)
        per_dest = torch.tensor([plan.rows_per_dest, plan.entries_per_dest], device=device).T
    except (TypeError, ValueError, RuntimeError) as exc:
        error, per_dest = exc, torch.zeros(world, 2, dtype=torch.int64, device=device)
    received = comm.exchange_header(per_dest, _common_settings(query), error, what, group, rank, world)
    rows_per_src, entries_per_src = received[:, 0].tolist(), received[:, 1].tolist()
    route = exchange_ids(plan, rows_per_src, entries_per_src, partition, group, rank)
    scores = _ShardedShortlistScore.apply(query.contiguous(), weight_shard, bias_shard, route,
                                          sparse_grad, group, rank, indices.numel())
    return scores, padded_shape


def _common_settings(query) -> list:
    """The settings every rank must agree on, checked in the count exchange."""
    is_matrix = isinstance(query, torch.Tensor) and query.dim() == 2
    return [("dtype", comm.dtype_code(query.dtype) if is_matrix else -1),
            ("d", query.shape[1] if is_matrix else -1)]


def sharded_shortlist_topk(
    query: torch.Tensor,
    weight_shard: torch.Tensor,
    shortlist: Shortlist,
    k: int,
    partition: LabelPartition,
    bias_shard: Optional[torch.Tensor] = None,
    group=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`xcops.shortlist_topk` over a row-sharded weight: the ``k`` best shortlisted
    labels of this rank's queries (global ids), ties to the lower id, empty slots ``-inf`` /
    -1. Scores come from :func:`sharded_shortlist_score` (so they are rounded to the query
    dtype before ranking); ``k`` may differ between ranks, as it never crosses the wire."""
    with torch.no_grad():
        scores, padded_shape = _score(query, weight_shard, shortlist, partition, bias_shard, False,
                                      group, "sharded_shortlist_topk")
        # k is checked after the one collective, so a bad k on one rank cannot leave the others
        # waiting; as in shortlist_topk, more slots than both L and the widest row could only
        # ever be empty (and a huge k would allocate [B, k] until the process dies).
        indptr, indices, _ = as_csr(shortlist, query.shape[0])
        limit = max(partition.num_labels, shortlist_width(shortlist, indices))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
            raise ValueError(f"sharded_shortlist_topk: k must be an int in [1, {limit}] (the larger of "
                             f"L = {partition.num_labels} and the shortlist width), got {k!r}")
        if padded_shape is None:
            # Variable-length rows into a [B, max_len] block, -1 where a row is short.
            lengths = indptr[1:] - indptr[:-1]
            width = int(lengths.max()) if lengths.numel() else 0
            rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=indices.device), lengths)
            cols = torch.arange(indices.numel(), device=indices.device) - indptr[rows]
            ids = indices.new_full((lengths.numel(), width), -1).index_put_((rows, cols), indices)
            values = scores.new_zeros(ids.shape).index_put_((rows, cols), scores)
        else:
            ids, values = indices.view(padded_shape), scores.view(padded_shape)
        values = values.masked_fill(ids < 0, float("-inf"))
        if values.shape[1] < k:
            fill = k - values.shape[1]
            values = torch.cat([values, values.new_full((values.shape[0], fill), float("-inf"))], 1)
            ids = torch.cat([ids, ids.new_full((ids.shape[0], fill), -1)], 1)
        return _merge_topk(values, ids.to(torch.int64), k, partition.num_labels)


def _merge_topk(values: torch.Tensor, ids: torch.Tensor, k: int, num_labels: int):
    """The best ``k`` of ``[B, n]`` candidates, ties to the lower id, empty slots last."""
    empty = (ids < 0) | (values == float("-inf"))
    keys = ids.masked_fill(empty, num_labels)
    keys, order = torch.sort(keys, dim=1, stable=True)
    values = values.gather(1, order).masked_fill(keys == num_labels, float("-inf"))
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    keys = keys.gather(1, order)
    values, keys = values[:, :k], keys[:, :k]
    return values, keys.masked_fill(keys == num_labels, -1)


def sharded_dense_topk(
    query: torch.Tensor,
    weight_shard: torch.Tensor,
    k: int,
    partition: LabelPartition,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    group=None,
    bias_shard: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k over all ``L`` labels of a row-sharded weight, for this rank's queries.

    Every rank's queries go to every rank (an all-gather of ``B * d`` values); each shard runs
    :func:`xcops.dense_topk` on all of them and sends each rank its ``[B_r, k]`` best
    (global ids), which the rank merges. Ties break by the lower global id and empty slots
    hold ``-inf`` / -1, as in single-process ``dense_topk``.

    Args:
        query: ``[B_r, d]``; weight_shard: ``[L_r, d]`` as in :func:`sharded_shortlist_score`.
        k: ``1 <= k <= L``, the same on every rank (checked).
        exclude: optional CSR ``(indptr [B_r + 1], indices)`` of **global** ids never to return.
        bias_shard: optional ``[L_r]`` bias of the shard's labels, added to their scores.

    Returns:
        ``(values [B_r, k]``, ``global_ids [B_r, k]`` int64).
    """
    what = "sharded_dense_topk"
    group, rank, world = comm.resolve_group(group)
    device = _device_of(query, weight_shard)
    error, plan, batch = None, None, 0
    try:
        query, bias_shard = _prepare(query, weight_shard, bias_shard, partition, rank, world, what)
        batch = query.shape[0]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= partition.num_labels:
            raise ValueError(f"{what}: k must be an int in [1, {partition.num_labels}], got {k!r}")
        if exclude is not None:
            if not isinstance(exclude, (tuple, list)):
                raise TypeError(f"{what}: exclude must be a CSR tuple (indptr [B + 1], indices)")
            ex_indptr, ex_indices, _ = as_csr(exclude, batch, "exclude")
            if ex_indptr.numel() != batch + 1:
                raise ValueError(f"{what}: exclude indptr must have B + 1 = {batch + 1} entries, "
                                 f"got {ex_indptr.numel()}")
            check_ids(ex_indices, partition.num_labels, f"{what}: exclude")
            plan = plan_send(ex_indptr, ex_indices, partition, every_row=True)
        entries = plan.entries_per_dest if plan is not None else [0] * world
        per_dest = torch.tensor([[batch] * world, entries], device=device).T
    except (TypeError, ValueError, RuntimeError) as exc:
        error, per_dest = exc, torch.zeros(world, 2, dtype=torch.int64, device=device)
    common = _common_settings(query) + [("k", k if isinstance(k, int) else -1),
                                        ("exclude (given or not)", int(exclude is not None))]
    received = comm.exchange_header(per_dest, common, error, what, group, rank, world)
    batches = received[:, 0].tolist()

    query = query.detach().contiguous()
    padded = query.new_zeros(max(batches), query.shape[1])
    padded[:batch] = query
    gathered = comm.all_gather(padded, group, world)
    queries = torch.cat([g[:b] for g, b in zip(gathered, batches)])
    local_exclude = None
    if plan is not None:
        route = exchange_ids(plan, batches, received[:, 1].tolist(), partition, group, rank)
        local_exclude = (route.recv_indptr, route.recv_indices)

    start, end = partition.range(rank)
    local_k = min(k, end - start)
    values = query.new_full((queries.shape[0], k), float("-inf"))
    ids = torch.full((queries.shape[0], k), -1, dtype=torch.int64, device=query.device)
    if local_k > 0 and queries.shape[0] > 0:
        bias = None if bias_shard is None else bias_shard.detach()
        local_values, local_ids = dense_topk(queries, weight_shard.detach(), local_k, local_exclude, bias)
        values[:, :local_k] = local_values
        ids[:, :local_k] = torch.where(local_ids >= 0, local_ids + start, local_ids)
    values = comm.all_to_all(values, batches, [batch] * world, group, rank)
    ids = comm.all_to_all(ids, batches, [batch] * world, group, rank)
    # [world * B_r, k] in owner order -> [B_r, world * k] candidates per query.
    values = values.view(world, batch, k).permute(1, 0, 2).reshape(batch, world * k)
    ids = ids.view(world, batch, k).permute(1, 0, 2).reshape(batch, world * k)
    return _merge_topk(values, ids, k, partition.num_labels)

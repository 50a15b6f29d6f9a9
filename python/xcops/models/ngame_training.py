"""The training loop shared by NGAME's two stages: curriculum batches, in-batch labels, and a
per-step linear warm-up / linear decay learning rate.

Both M1 (the encoder) and M4 (the classifiers) draw their batches from a
:class:`xcops.data.ClusterBatchSampler`: random batches for the first epochs, then runs of
whole clusters of similar queries, re-clustered every ``refresh_interval`` epochs with cluster
sizes that double on a schedule. Each batch's labels are one sampled positive per query, so
the other queries' labels are its (hard, as the queries are alike) in-batch negatives.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

import torch

from ..data.samplers import ClusterBatchSampler
from ..ops.clustering import clusters_for_leaf_size
from ..optim import per_step_schedulers, warmup_linear
from ..progress import progress_bar


def select_rows(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor):
    """The CSR ``(indptr [R + 1], indices)`` of ``rows`` of a CSR matrix."""
    counts = indptr[rows + 1] - indptr[rows]
    sub_indptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=sub_indptr[1:])
    offset = torch.arange(int(sub_indptr[-1])) - torch.repeat_interleave(sub_indptr[:-1], counts)
    return sub_indptr, indices[torch.repeat_interleave(indptr[rows], counts) + offset]


class InBatch(NamedTuple):
    """A batch: the queries, the labels scored against them, and targets."""

    rows: torch.Tensor  # [B] query ids (those with at least one label)
    labels: torch.Tensor  # [P] label ids, the union of the sampled positives
    positive: torch.Tensor  # [B] column in `labels` of each query's sampled positive
    positives: tuple  # CSR (indptr [B + 1], columns) of every positive of each query in `labels`


def in_batch_labels(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
                    generator: torch.Generator) -> InBatch:
    """One uniformly sampled positive label per query (queries without labels are dropped)."""
    rows = rows[indptr[rows + 1] > indptr[rows]]
    sub_indptr, sub_indices = select_rows(indptr, indices, rows)
    counts = sub_indptr.diff()
    pick = (torch.rand(len(rows), generator=generator, dtype=torch.float64) * counts).long()
    sampled = sub_indices[sub_indptr[:-1] + torch.minimum(pick, counts - 1)]
    labels, positive = torch.unique(sampled, return_inverse=True)
    # A query's other positives that happen to be in the batch must not serve as its negatives.
    present = torch.isin(sub_indices, labels)
    row = torch.repeat_interleave(torch.arange(len(rows)), counts)[present]
    pos_indptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(row, minlength=len(rows)), 0, out=pos_indptr[1:])
    return InBatch(rows, labels, positive, (pos_indptr, torch.searchsorted(labels, sub_indices[present])))


def scheduled_steps(sampler: ClusterBatchSampler, epochs: int) -> int:
    """The number of batches ``sampler`` yields over ``epochs`` epochs of its schedule, known
    before any clustering (a balanced clustering's cluster count depends only on the sizes),
    so a learning-rate schedule can end exactly at the last step."""
    steps, size = 0, None
    for epoch in range(epochs):
        if sampler.refresh_due(epoch):
            size = sampler.cluster_size_at(epoch)
        if size is None:
            steps += -(-sampler.num_items // sampler.batch_size)
        else:
            per_batch = max(1, sampler.batch_size // size)
            steps += -(-clusters_for_leaf_size(sampler.num_items, size) // per_batch)
    return steps


# One batch of query ids -> (loss, number of examples in it), or None to skip the batch.
BatchLoss = Callable[[torch.Tensor], Optional[tuple]]


def train_stage(stage: str, epochs: int, sampler: ClusterBatchSampler, optimizers: list,
                warmup_steps: int, batch_loss: BatchLoss, embed: Callable[[int], torch.Tensor],
                progress: bool = True) -> Optional[float]:
    """Trains ``epochs`` epochs of ``sampler``'s batches; returns the smoothed final loss.

    ``embed(epoch)`` gives the ``[num_items, d]`` embeddings to re-cluster from when the
    sampler's schedule says so. Every optimizer's rate follows :func:`xcops.optim.warmup_linear`
    over all the steps of the stage, stepped after each batch. The bar shows the epoch, the
    smoothed loss, the learning rate of the last step, examples per second and the cluster size.
    """
    total = max(scheduled_steps(sampler, epochs), 1)
    schedulers = per_step_schedulers(optimizers, warmup_linear(total, min(warmup_steps, total - 1)))
    running = None
    for epoch in range(epochs):
        if sampler.refresh_due(epoch):
            sampler.update_clusters(embed(epoch), epoch)
        sampler.set_epoch(epoch)
        bar = progress_bar(sampler, desc=f"{stage} epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress)
        start, examples = time.perf_counter(), 0
        for rows in bar:
            result = batch_loss(torch.tensor(rows, dtype=torch.int64))
            if result is None:
                continue
            loss, count = result
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizers[0].param_groups[0]["lr"]
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            value = loss.item()
            running = value if running is None else 0.95 * running + 0.05 * value
            examples += count
            rate = examples / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}", ex_s=f"{rate:.0f}",
                            cluster=sampler.current_cluster_size or 1)
    return running

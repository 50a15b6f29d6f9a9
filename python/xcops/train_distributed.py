"""``xcops train --nproc N``: the same training, with the label head sharded over N processes.

torchrun (``torch.distributed.run``) starts N copies of ``xcops train``; each builds the same
model from the same seed, keeps only its slice of the classifier head
(:class:`xcops.nn.ShardedShortlistLinear`, on gloo for CPU or NCCL for GPU), wraps the rest of
the model in DDP, and trains on every N-th training row with batch ``batch_size / N``, so a
step sees the same global batch size as one process. Evaluation runs on all ranks (each
ranks its share of the test set over the sharded head); rank 0 gathers the full model and
writes the run directory, which loads like any single-process run.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.distributed as dist

from .distributed.launch import SHARDABLE_MODELS
from .distributed.training import (gather_rows, init_process_group, rank_slice, replicate_children, shard_heads,
                                   training_rows, unshard)
from .metrics import evaluate, inv_propensity
from .models import get_model
from .nn import ShortlistLinear
from .train import TrainConfig, load_splits, resolve_data, save_run, set_seeds, state_dir_argument
from .training_state import discard_state


def train_distributed(cfg: TrainConfig, progress: bool = True) -> dict:
    if cfg.model not in SHARDABLE_MODELS:
        raise ValueError(f"--nproc trains the models {list(SHARDABLE_MODELS)}, not {cfg.model!r}")
    device, head_group = init_process_group(cfg.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    progress = progress and rank == 0
    set_seeds(cfg.seed)
    model_cls = get_model(cfg.model)
    # Rank 0 generates the synthetic set and fills the token cache; the others then read them.
    if rank != 0:
        dist.barrier()
    data_dir = resolve_data(cfg)
    train_set, test_set = load_splits(cfg, data_dir, model_cls.make_tokenizer(cfg))
    if rank == 0:
        dist.barrier()
    model = model_cls.create(cfg, train_set).to(device)
    full_heads = shard_heads(model, (ShortlistLinear,), head_group)
    replicate_children(model, device)

    rows = training_rows(len(train_set), rank, world).tolist()
    local_cfg = dataclasses.replace(cfg, batch_size=max(1, cfg.batch_size // world))
    start = time.perf_counter()
    stats = model.fit(local_cfg, torch.utils.data.Subset(train_set, rows), device, progress,
                      **state_dir_argument(model_cls, cfg))
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    first, last = rank_slice(len(test_set), rank, world)
    share = rank_slice(len(test_set), 0, world)[1]
    ids = test_set.input_ids[first:last]
    ids = torch.cat([ids, test_set.input_ids[:1].expand(share - len(ids), -1)]) if len(ids) < share else ids
    predictions = model.predict(ids, cfg.top_k, cfg.eval_batch_size, device, progress)[: last - first]
    predictions = gather_rows(predictions.to(device), len(test_set)).cpu()
    predict_seconds = time.perf_counter() - start

    metrics = None
    if unshard(model, full_heads):
        propensity = inv_propensity(train_set.labels, cfg.propensity_a, cfg.propensity_b)
        metrics = evaluate(test_set.labels, predictions, k=(1, 3, 5), inv_propensity=propensity)
        metrics.update(stats)
        metrics.update(train_seconds=train_seconds, predict_seconds=predict_seconds, processes=world,
                       test_queries_per_second=len(test_set) / max(predict_seconds, 1e-9))
        save_run(cfg, model, train_set.tokenizer, metrics, data_dir)
    shared = [metrics]
    dist.broadcast_object_list(shared, src=0)
    if rank == 0:  # every rank is past its last save: the predictions' gather waited for them all
        discard_state(cfg.out)
    dist.destroy_process_group()
    return shared[0]

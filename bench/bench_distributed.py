"""Label-sharded training steps in 1, 2, 4... gloo CPU processes: time per step and bytes sent.

Weak scaling: every rank has its own batch of ``--batch`` queries with ``--shortlist`` uniform
random label ids each, over ``--labels`` labels split across the ranks. One step is
``ShardedShortlistLinear`` forward + backward + SparseAdam (the query stands in for an
encoder output). Bytes are counted by xcops.distributed.traffic (what this code handed to
torch.distributed, without the backend's own framing) and compared with the formula of
bench/RESULTS.md ("Label-sharded training"):

    per rank and step, W ranks, B queries, K ids, d dims, e bytes per value:
      rows  = B * (1 - (1 - 1/W)^K)            queries with a label on a given other rank
      sent  = (W-1) * rows * (2 d e + 4)         queries out, their grads back, row counts
            + B K (W-1)/W * (4 + 2 e)            ids out, scores back, score grads out
            + 40 (W-1)                           the count header (5 int64 per other rank)

Usage: python bench/bench_distributed.py --procs 1 2 4 [--labels 200000 --dim 64 ...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def predicted_bytes(world: int, batch: int, width: int, dim: int, elem: int) -> float:
    if world == 1:
        return 0.0
    rows = batch * (1 - (1 - 1 / world) ** width)
    entries = batch * width * (world - 1) / world
    header = 8 * 5 * (world - 1)
    return (world - 1) * rows * (2 * dim * elem + 4) + entries * (4 + 2 * elem) + header


def _worker(rank, world, args, init_file, out_file):
    import xcops  # noqa: F401  (after the fork: each process loads the extension itself)
    from xcops.distributed import traffic
    from xcops.nn import ShardedShortlistLinear

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=10))
    gen = torch.Generator().manual_seed(1000 + rank)
    torch.manual_seed(rank)
    head = ShardedShortlistLinear(args.labels, args.dim)
    opt = torch.optim.SparseAdam(head.parameters(), lr=1e-3)
    times, sent = [], []
    for step in range(args.warmup + args.steps):
        query = torch.randn(args.batch, args.dim, generator=gen, requires_grad=True)
        shortlist = torch.randint(0, args.labels, (args.batch, args.shortlist), generator=gen)
        targets = torch.rand(args.batch, args.shortlist, generator=gen).lt(0.05).float()
        dist.barrier()
        traffic.reset()
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(query, shortlist), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
            sent.append(traffic.bytes_sent)
    stats = torch.tensor([statistics.median(times), statistics.mean(sent)], dtype=torch.float64)
    gathered = [torch.zeros_like(stats) for _ in range(world)]
    dist.all_gather(gathered, stats)
    if rank == 0:
        step_ms = max(float(g[0]) for g in gathered) * 1e3
        mean_bytes = statistics.mean(float(g[1]) for g in gathered)
        with open(out_file, "w") as f:
            f.write(f"{step_ms} {mean_bytes}\n")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--labels", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="queries per rank")
    parser.add_argument("--shortlist", type=int, default=200, help="K, label ids per query")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()

    print(f"L={args.labels} d={args.dim} float32, B={args.batch} per rank, K={args.shortlist}, "
          f"{args.steps} steps, {args.threads} thread(s) per process\n")
    print("| processes | step ms (slowest rank, median) | bytes sent per rank per step | formula "
          "| measured / formula |")
    print("|---|---|---|---|---|")
    for world in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            out_file = os.path.join(tmp, "result")
            mp.spawn(_worker, args=(world, args, os.path.join(tmp, "init"), out_file), nprocs=world, join=True)
            step_ms, measured = (float(v) for v in open(out_file).read().split())
        formula = predicted_bytes(world, args.batch, args.shortlist, args.dim, 4)
        ratio = f"{measured / formula:.4f}" if formula else "-"
        print(f"| {world} | {step_ms:.1f} | {measured:,.0f} | {formula:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()

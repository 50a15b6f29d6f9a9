"""A label-sharded XC classifier head over torch.distributed, in a few lines.

Run on CPU with two processes (gloo), or on GPUs (NCCL, one process per GPU):

    torchrun --nproc-per-node 2 examples/sharded_classifier.py
    torchrun --nproc-per-node 8 examples/sharded_classifier.py --labels 10000000 --dim 768

Each rank holds 1/world of the labels' weights and optimizer state, trains on its own batch
of queries with global label ids, and ranks all labels exactly at the end.
"""

import argparse

import torch
import torch.distributed as dist

from xcops.distributed import traffic
from xcops.nn import ShardedShortlistLinear
from xcops.nn.sharded import gather_full_state_dict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="queries per rank")
    parser.add_argument("--shortlist", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    head = ShardedShortlistLinear(args.labels, args.dim, device=device)   # weight: [L / world, d]
    opt = torch.optim.SparseAdam(head.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(rank)
    # A toy task: label l is right for queries close to a fixed random vector of label l.
    centers = torch.randn(args.labels, args.dim, generator=torch.Generator().manual_seed(0))
    for step in range(args.steps):
        labels = torch.randint(0, args.labels, (args.batch,), generator=gen)
        query = (centers[labels] + 0.1 * torch.randn(args.batch, args.dim, generator=gen)).to(device)
        negatives = torch.randint(0, args.labels, (args.batch, args.shortlist - 1), generator=gen)
        shortlist = torch.cat([labels[:, None], negatives], 1).to(device)   # global ids; -1 would pad
        targets = (shortlist == labels[:, None].to(device)).float()
        traffic.reset()
        logits = head(query, shortlist)                                     # [batch, shortlist]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        opt.zero_grad()
        loss.backward()                                                     # every rank, together
        opt.step()
        if rank == 0 and step % 5 == 0:
            print(f"step {step}: loss {loss.item():.4f}, sent {traffic.bytes_sent:,} bytes")

    labels = torch.randint(0, args.labels, (args.batch,), generator=gen)
    query = (centers[labels] + 0.1 * torch.randn(args.batch, args.dim, generator=gen)).to(device)
    _, top = head.topk(query, k=5)                                          # exact over all labels
    hits = (top[:, 0].cpu() == labels).float().mean().item()
    full = gather_full_state_dict(head)                                     # rank 0 only
    if rank == 0:
        print(f"P@1 on rank 0's queries: {100 * hits:.1f}%; full weight {tuple(full['weight'].shape)}"
              f" gathered from {world} shards")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Shortlist scoring and top-k: xcops vs PyTorch eager (gather + bmm, then topk).

    xcops bench shortlist                 # the reference shapes, on the GPU
    xcops bench shortlist --preset cpu    # small shapes for a CPU-only machine
    xcops bench shortlist --json out.json

Columns: time in ms (median), the speed-up of xcops over eager, the peak memory each
allocates beyond its inputs, and the share of the memory-bandwidth floor reached (bytes
that must move / measured copy bandwidth, measured in the same run).
"""

from __future__ import annotations

import torch

import xcops

from .timing import copy_bandwidth_gbs, parse_bench_args, peak_extra_mib, report, time_ms

PRESETS = {
    "gpu": [  # batch, width, labels, dim, dtype
        (1024, 100, 1_300_000, 768, torch.bfloat16),
        (1024, 1000, 1_300_000, 768, torch.bfloat16),
        (4096, 200, 3_000_000, 256, torch.float32),
    ],
    "cpu": [
        (256, 100, 100_000, 256, torch.float32),
        (256, 100, 100_000, 256, torch.bfloat16),
    ],
    "smoke": [(8, 12, 100, 16, torch.float32)],  # seconds; checks the benchmark itself runs
}


def eager_scores(query, weight, shortlist):
    return torch.bmm(weight[shortlist], query.unsqueeze(-1)).squeeze(-1)


def bench_case(batch, width, labels, dim, dtype, device, bandwidth, repeat):
    gen = torch.Generator(device="cpu").manual_seed(0)
    query = torch.randn(batch, dim, generator=gen).to(device, dtype).requires_grad_()
    weight = torch.randn(labels, dim, generator=gen).to(device, dtype).requires_grad_()
    shortlist = torch.randint(0, labels, (batch, width), generator=gen).to(device)
    grad_out = torch.randn(batch, width, generator=gen).to(device, dtype)
    elem = query.element_size()
    # Forward must read every shortlisted weight row, the queries and ids, and write scores.
    fwd_bytes = batch * width * dim * elem + batch * dim * elem + batch * width * (8 + elem)
    # The sparse backward must in addition read the rows again for grad(query), read the
    # queries per entry for grad(weight) and write one gradient row per entry at most.
    bwd_bytes = fwd_bytes + 2 * batch * width * dim * elem

    def ours_fwd():
        with torch.no_grad():
            return xcops.shortlist_score(query, weight, shortlist)

    def eager_fwd():
        with torch.no_grad():
            return eager_scores(query, weight, shortlist)

    def ours_train():
        scores = xcops.shortlist_score(query, weight, shortlist, sparse_grad=True)
        return torch.autograd.grad(scores, (query, weight), grad_out)

    def eager_train():
        return torch.autograd.grad(eager_scores(query, weight, shortlist), (query, weight), grad_out)

    def ours_topk():
        with torch.no_grad():
            return xcops.shortlist_topk(query, weight, shortlist, 10)

    def eager_topk():
        with torch.no_grad():
            return torch.topk(eager_scores(query, weight, shortlist), 10, dim=1)

    rows = []
    shape = f"B={batch} K={width} L={labels} d={dim} {str(dtype).replace('torch.', '')}"
    for name, ours, eager, floor_bytes in (
        ("forward", ours_fwd, eager_fwd, fwd_bytes),
        ("fwd+bwd (sparse grad)", ours_train, eager_train, bwd_bytes),
        ("top-10", ours_topk, eager_topk, fwd_bytes),
    ):
        ours_ms = time_ms(ours, device, repeat=repeat)
        eager_ms = time_ms(eager, device, repeat=repeat)
        floor_ms = floor_bytes / (bandwidth * 1e9) * 1e3
        rows.append(dict(
            shape=shape, step=name, xcops_ms=ours_ms, eager_ms=eager_ms, speedup=eager_ms / ours_ms,
            xcops_extra_mib=peak_extra_mib(ours, device), eager_extra_mib=peak_extra_mib(eager, device),
            floor_ms=floor_ms, pct_of_floor=100 * floor_ms / ours_ms,
        ))
    return rows


def main(argv=None):
    args, device, preset, name = parse_bench_args("xcops bench shortlist", __doc__, PRESETS, 20, argv)
    bandwidth = copy_bandwidth_gbs(device, mib=1024 if device.type == "cuda" else 256)
    print(f"device: {name}; measured copy bandwidth {bandwidth:.0f} GB/s; torch {torch.__version__}")
    rows = [row for case in preset for row in bench_case(*case, device, bandwidth, args.repeat)]
    report(rows, ["shape", "step", "xcops_ms", "eager_ms", "speedup", "xcops_extra_mib", "eager_extra_mib",
                  "floor_ms", "pct_of_floor"], args.json, device=name, bandwidth_gbs=bandwidth)


if __name__ == "__main__":
    main()

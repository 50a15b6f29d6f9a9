"""Balanced hierarchical k-means: xcops vs PECOS on the CPU, vs a node-by-node loop on the GPU.

    xcops bench clustering                    # the two reference problems, CPU and GPU
    xcops bench clustering --scale 0.1        # N scaled down, for a quick run
    xcops bench clustering --device cpu --problem 0 --json out.json

Anchors: PECOS ``HierarchicalKMeans`` (``pip install libpecos``; spherical, nr_splits=2,
kmeans_max_iter=10, as many threads as torch uses) on the CPU, and the pure-PyTorch
node-by-node transcription of pyxclib's algorithm (xcops.ops.reference.clustering) on the GPU.
libpecos pins numpy<2 and scipy<1.14; a separate virtual environment whose path also reaches
torch and xcops runs all three. Methods that are not installed are skipped.

Data: unit rows of a Gaussian mixture (1024 random centres, unit noise), fixed seed. Columns:
wall time of one call in seconds and the mean cosine similarity of every point to the unit
mean of its cluster (computed the same way for every method), averaged over --seeds runs
with seeds 0, 1, ... (a single run's quality varies by a few thousandths with its seed, as
the random seed points of the top splits matter); xcops and the reference use iters=10 like
PECOS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ..ops.clustering import balanced_kmeans, clusters_for_leaf_size
from ..ops.reference.clustering import balanced_kmeans as reference_kmeans
from .timing import format_table, sync

PROBLEMS = [(131_072, 768, 64), (1_300_000, 256, 128)]  # points, dim, leaf size
ITERS = 10
COLUMNS = ["problem", "device", "method", "threads", "seconds", "mean_cos", "mean_cos_sd", "clusters", "sizes"]


def mixture(n, d, seed=0, components=1024):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(components, d, generator=gen)
    points = centres[torch.randint(0, components, (n,), generator=gen)]
    return F.normalize(points.add_(torch.randn(n, d, generator=gen)), dim=1)


def mean_cosine(x, assign, num_clusters):
    sums = torch.zeros(num_clusters, x.shape[1], device=x.device).index_add_(0, assign, x)
    return float((x * F.normalize(sums, dim=1)[assign]).sum(1).double().mean())


def run_xcops(x, leaf_size, seed):
    return balanced_kmeans(x, leaf_size=leaf_size, iters=ITERS, seed=seed)[0]


def run_reference(x, leaf_size, seed):
    return reference_kmeans(x, leaf_size=leaf_size, iters=ITERS, seed=seed)[0]


def run_pecos(x, leaf_size, seed):
    from pecos.xmc.base import HierarchicalKMeans

    chain = HierarchicalKMeans.gen(
        x.numpy(), nr_splits=2, max_leaf_size=leaf_size, spherical=True,
        kmeans_max_iter=ITERS, threads=torch.get_num_threads(), seed=seed,
    )
    # The last matrix of the chain is [N, leaves] with one 1 per row.
    return torch.from_numpy(chain[-1].tocsr().indices.astype("int64"))


def pecos_available():
    try:
        import pecos.xmc.base  # noqa: F401
    except ImportError:
        return False
    return True


def methods_for(device, anchors=True):
    if device.type == "cuda":
        return [("xcops", run_xcops)] + ([("node-by-node torch", run_reference)] if anchors else [])
    methods = [("xcops", run_xcops)]
    if not anchors:
        return methods
    if pecos_available():
        methods.append(("PECOS", run_pecos))
    else:
        print("PECOS not installed (pip install libpecos): skipped", file=sys.stderr)
    return methods


def bench(n, d, leaf_size, device, seeds, anchors=True):
    x = mixture(n, d).to(device)
    clusters = clusters_for_leaf_size(n, leaf_size)
    rows = []
    for name, method in methods_for(device, anchors):
        method(x[: 4 * leaf_size], leaf_size, 0)  # warm up: kernels, allocator, thread pools
        times, quality = [], []
        for seed in range(seeds):
            sync(device)
            start = time.perf_counter()
            assign = method(x, leaf_size, seed).to(device)
            sync(device)
            times.append(time.perf_counter() - start)
            quality.append(mean_cosine(x, assign, clusters))
        sizes = torch.bincount(assign, minlength=clusters)
        rows.append(dict(
            problem=f"N={n} d={d} leaf={leaf_size}", device=str(device), method=name,
            threads=torch.get_num_threads() if device.type == "cpu" else None,
            seconds=statistics.mean(times), mean_cos=statistics.mean(quality),
            mean_cos_sd=statistics.stdev(quality) if seeds > 1 else None,
            clusters=clusters, sizes=f"{int(sizes.min())}-{int(sizes.max())}",
            per_seed=[round(q, 5) for q in quality],
        ))
        print(format_table(rows[-1:], COLUMNS), file=sys.stderr)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="xcops bench clustering", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--problem", type=int, action="append",
                        help=f"index into {PROBLEMS} (repeatable; default all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N by this")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run seeds 0..S-1 and average (the quality of one run varies with its seed)")
    parser.add_argument("--no-anchors", action="store_true",
                        help="xcops only: skip PECOS and the node-by-node loop (43 s on an H100 at N=1.3M)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        parser.error("--device cuda, but torch sees no GPU")
    rows = []
    for index in args.problem or range(len(PROBLEMS)):
        n, d, leaf_size = PROBLEMS[index]
        for device in devices:
            rows += bench(max(2 * leaf_size, int(n * args.scale)), d, leaf_size, device, args.seeds,
                          anchors=not args.no_anchors)
    print(format_table(rows, COLUMNS))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

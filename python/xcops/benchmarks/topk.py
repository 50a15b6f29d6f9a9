"""Exact top-k over all labels and in-batch hard negatives: xcops vs PyTorch eager.

    xcops bench topk                  # the reference shapes, on the GPU
    xcops bench topk --preset cpu     # small shapes for a CPU-only machine

dense_topk is timed against ``torch.topk(query @ weight.T, k)`` and hard_negatives against
the masked version of it. The floor is the plain GEMM ``query @ weight.T`` measured in the
same run (top-k over all labels cannot be faster than scoring them); extra memory is the
peak allocated beyond the inputs (CUDA only). On the CPU, when faiss-cpu is installed (it is
optional, never a dependency), dense_topk float32 rows gain faiss's brute-force
``IndexFlatIP.search`` on the same inputs and thread count, and ``vs_faiss`` (faiss time /
xcops time: above 1 means xcops is faster).
"""

from __future__ import annotations

import importlib.util

import torch

import xcops

from .timing import parse_bench_args, peak_extra_mib, report, time_ms

PRESETS = {
    "gpu": dict(
        dense=[  # batch, labels, dim, k, dtype
            (1024, 131_072, 768, 10, torch.bfloat16),
            (1024, 131_072, 768, 100, torch.bfloat16),
            (1024, 1_300_000, 768, 10, torch.bfloat16),
            (1024, 1_300_000, 768, 100, torch.bfloat16),
            (256, 3_000_000, 256, 100, torch.float32),
        ],
        negatives=[(4096, 12_000, 768, 10, torch.bfloat16)],  # batch, labels in batch, dim, k
    ),
    "cpu": dict(
        dense=[(256, 131_072, 128, 10, torch.float32), (1024, 65_536, 256, 10, torch.float32),
               (4096, 32_768, 128, 10, torch.float32), (256, 131_072, 128, 100, torch.float32)],
        negatives=[(1024, 3_000, 128, 10, torch.float32)],
    ),
    "smoke": dict(dense=[(8, 300, 16, 5, torch.float32)], negatives=[(8, 20, 16, 3, torch.float32)]),
}


def _inputs(batch, labels, dim, dtype, device):
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(batch, dim, generator=gen).to(device, dtype)
    weight = torch.randn(labels, dim, generator=gen).to(device, dtype)
    return query, weight


def _row(kind, batch, labels, dim, k, dtype, ours, eager, floor, device, repeat):
    ours_ms = time_ms(ours, device, repeat=repeat)
    eager_ms = time_ms(eager, device, repeat=repeat)
    floor_ms = time_ms(floor, device, repeat=repeat)
    return dict(
        op=kind, shape=f"B={batch} L={labels} d={dim} k={k} {str(dtype).replace('torch.', '')}",
        xcops_ms=ours_ms, eager_ms=eager_ms, speedup=eager_ms / ours_ms, gemm_ms=floor_ms,
        pct_of_floor=100 * floor_ms / ours_ms, xcops_extra_mib=peak_extra_mib(ours, device),
        eager_extra_mib=peak_extra_mib(eager, device),
    )


def _faiss_search(query, weight, k):
    """faiss IndexFlatIP.search on the same inputs and threads, or None without faiss-cpu."""
    if query.device.type != "cpu" or query.dtype != torch.float32 or importlib.util.find_spec("faiss") is None:
        return None
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(weight.shape[1])
    index.add(weight.numpy())
    queries = query.numpy()
    return lambda: index.search(queries, k)


def bench_dense(batch, labels, dim, k, dtype, device, repeat):
    query, weight = _inputs(batch, labels, dim, dtype, device)
    ours = lambda: xcops.dense_topk(query, weight, k)  # noqa: E731
    row = _row("dense_topk", batch, labels, dim, k, dtype, ours,
               lambda: torch.topk(query @ weight.T, k, dim=1), lambda: query @ weight.T, device, repeat)
    faiss_search = _faiss_search(query, weight, k)
    if faiss_search is not None:
        # Timed again right after faiss, so the two share the machine's load as far as possible.
        row["faiss_ms"] = time_ms(faiss_search, device, repeat=repeat)
        row["vs_faiss"] = row["faiss_ms"] / time_ms(ours, device, repeat=repeat)
    return row


def bench_negatives(batch, labels, dim, k, dtype, device, repeat):
    query, label_vectors = _inputs(batch, labels, dim, dtype, device)
    # Each query's positive is "its" column, as in NGAME's in-batch setting (P <= B rows).
    positive = torch.arange(batch, device=device) % labels
    indptr = torch.arange(batch + 1, device=device)
    mask = torch.zeros(batch, labels, dtype=torch.bool, device=device)
    mask[torch.arange(batch, device=device), positive] = True

    def eager():
        return torch.topk((query @ label_vectors.T).masked_fill(mask, float("-inf")), k, dim=1)

    return _row("hard_negatives", batch, labels, dim, k, dtype,
                lambda: xcops.hard_negatives(query, label_vectors, (indptr, positive), k),
                eager, lambda: query @ label_vectors.T, device, repeat)


def main(argv=None):
    args, device, preset, name = parse_bench_args("xcops bench topk", __doc__, PRESETS, 10, argv)
    print(f"device: {name}; torch {torch.__version__}")
    with torch.no_grad():
        rows = [bench_dense(*case, device, args.repeat) for case in preset["dense"]]
        rows += [bench_negatives(*case, device, args.repeat) for case in preset["negatives"]]
    columns = ["op", "shape", "xcops_ms", "eager_ms", "speedup", "gemm_ms", "pct_of_floor", "xcops_extra_mib",
               "eager_extra_mib"]
    if any("faiss_ms" in row for row in rows):
        columns += ["faiss_ms", "vs_faiss"]
    report(rows, columns, args.json, device=name)


if __name__ == "__main__":
    main()

"""dense_topk vs faiss IndexFlatIP.search vs torch mm on the CPU, interleaved.

Per-call CPU time on 1 thread (much less sensitive to other jobs on a shared machine than
wall time) and wall time on 2 threads. Needs faiss-cpu, which is optional for xcops.

    python bench/topk_vs_faiss_cpu_time.py [shape indices, e.g. 0,2]
"""

import statistics
import sys
import time

import faiss
import torch

import xcops

SHAPES = [(256, 131072, 128), (1024, 65536, 256), (4096, 32768, 128)]  # B, L, d; k = 10


def median_ms(fn, clock, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def main():
    shapes = [SHAPES[int(i)] for i in sys.argv[1].split(",")] if len(sys.argv) > 1 else SHAPES
    for threads, clock, name in ((1, time.process_time, "cpu-time 1 thread"), (2, time.perf_counter, "wall 2 threads")):
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        for batch, labels, dim in shapes:
            gen = torch.Generator().manual_seed(0)
            query, weight = torch.randn(batch, dim, generator=gen), torch.randn(labels, dim, generator=gen)
            index = faiss.IndexFlatIP(dim)
            index.add(weight.numpy())
            ours, theirs, gemm = [], [], []
            for _ in range(3):  # interleaved, so all three see the same load
                ours.append(median_ms(lambda: xcops.dense_topk(query, weight, 10), clock, 3))
                theirs.append(median_ms(lambda: index.search(query.numpy(), 10), clock, 3))
                gemm.append(median_ms(lambda: query @ weight.T, clock, 2))
            x, f, m = (statistics.median(t) for t in (ours, theirs, gemm))
            gflop = 2 * batch * labels * dim / 1e9
            print(f"{name} B={batch} L={labels} d={dim}: xcops {x:.0f} ms ({gflop / x * 1e3:.0f} GFLOP/s)  "
                  f"faiss {f:.0f} ms ({gflop / f * 1e3:.0f})  mm {m:.0f} ms ({gflop / m * 1e3:.0f})  "
                  f"faiss/xcops {f / x:.2f}  load {open('/proc/loadavg').read().split()[0]}", flush=True)


if __name__ == "__main__":
    main()

"""The measurements of docs/migration.md: an XC classifier head scored on a shortlist, written
the usual way (gather the shortlisted label vectors, then ``bmm``) and with
``xcops.nn.ShortlistLinear``, timed and memory-profiled on the CPU.

    python bench/bench_migration.py            # the table of docs/migration.md
    python bench/bench_migration.py --smoke    # tiny shapes: checks the script runs

Every row runs in a fresh process so that its memory is measured alone. ``ms`` is the median
time of a call, the best of ``--rounds`` such runs (the machine may be shared). ``extra MiB``
is the peak resident memory during the timed calls above the memory live between them
(inputs, weights, optimizer state). glibc is told to hand every block of 64 KiB or more back to the
system when it is freed, so a freed tensor does not stay resident and hide the next one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

SHAPES = {  # batch, shortlist width, labels, dim, k
    "default": (256, 128, 262_144, 128, 10),
    "smoke": (8, 12, 1000, 16, 5),
}


class GatherHead(nn.Module):
    """The pattern of existing XC code: the shortlist's label vectors gathered into a
    ``[B, K, d]`` tensor, then one ``bmm``. ``sparse=True`` is NGAME's and InceptionXML's
    sparse-embedding variant (sparse gradients for SparseAdam)."""

    def __init__(self, labels: int, dim: int, sparse: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(labels, dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(labels, 1))
        self.sparse = sparse

    def forward(self, query, shortlist):
        vectors = nn.functional.embedding(shortlist, self.weight, sparse=self.sparse)
        biases = nn.functional.embedding(shortlist, self.bias, sparse=self.sparse).squeeze(-1)
        return torch.bmm(vectors, query.unsqueeze(-1)).squeeze(-1) + biases


def build(case: str, shape):
    """``(fn, repeat)``: one call of ``fn`` is what the case times."""
    import xcops.nn

    batch, width, labels, dim, k = shape
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(batch, dim, generator=gen)
    shortlist = torch.randint(0, labels, (batch, width), generator=gen)
    targets = (torch.rand(batch, width, generator=gen) < 0.05).float()
    kind, variant = case.split(":")
    if variant == "xcops":
        head = xcops.nn.ShortlistLinear(labels, dim)
        optimizer = lambda: torch.optim.SparseAdam(head.sparse_parameters(), lr=1e-3)  # noqa: E731
    else:
        head = GatherHead(labels, dim, sparse=variant == "sparse")
        optimizer = lambda: (torch.optim.SparseAdam if head.sparse else torch.optim.Adam)(  # noqa: E731
            head.parameters(), lr=1e-3)

    if kind in ("train", "backward"):
        opt = optimizer()
        query.requires_grad_()  # as when it comes from an encoder being trained

        def fn():
            nn.functional.binary_cross_entropy_with_logits(head(query, shortlist), targets).backward()
            if kind == "train":
                opt.step()
            # Freed here, so that the gradients count as memory of the step, not as memory
            # live between steps.
            opt.zero_grad(set_to_none=True)
            query.grad = None
        return fn, 10
    if kind == "score":
        return torch.no_grad()(lambda: head(query, shortlist)), 20
    if kind == "shortlist_topk":
        if variant == "xcops":
            return lambda: head.topk(query, k, shortlist), 20
        return torch.no_grad()(lambda: torch.topk(head(query, shortlist), k, dim=1)), 20
    if kind == "exact_topk":
        if variant == "xcops":
            return lambda: head.topk(query, k), 5
        return torch.no_grad()(lambda: torch.topk(query @ head.weight.T + head.bias.T, k, dim=1)), 5
    raise ValueError(case)


CASES = [  # (case, what the row shows)
    ("backward:dense", "loss + backward: weight[shortlist] + bmm, dense grad"),
    ("backward:sparse", "loss + backward: embedding(sparse=True) + bmm"),
    ("backward:xcops", "loss + backward: ShortlistLinear"),
    ("train:dense", "train step: weight[shortlist] + bmm, dense grad, Adam"),
    ("train:sparse", "train step: embedding(sparse=True) + bmm, SparseAdam"),
    ("train:xcops", "train step: ShortlistLinear, SparseAdam"),
    ("score:dense", "scores, no grad: weight[shortlist] + bmm"),
    ("score:xcops", "scores, no grad: ShortlistLinear"),
    ("shortlist_topk:dense", "top-k of shortlist: bmm + torch.topk"),
    ("shortlist_topk:xcops", "top-k of shortlist: ShortlistLinear.topk"),
    ("exact_topk:dense", "exact top-k: query @ W.T + b, torch.topk"),
    ("exact_topk:xcops", "exact top-k: ShortlistLinear.topk (dense_topk)"),
]


def _memory_kib():
    status = open("/proc/self/status").read()
    return {key: int(value) for key, value in re.findall(r"(VmHWM|VmRSS):\s+(\d+) kB", status)}


def run_case(case: str, shape) -> dict:
    """Times one case in this process; returns ms (median) and the extra peak memory."""
    fn, repeat = build(case, shape)
    for _ in range(2):  # warm-up: allocates the optimizer state and the thread pools
        fn()
    baseline = _memory_kib()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return dict(ms=statistics.median(times), extra_mib=(_memory_kib()["VmHWM"] - baseline) / 1024)


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now}, commit {commit}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (seconds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine a parallel region stalls "
                             "whenever one of its threads is descheduled)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every case; the table shows the fastest median and the largest memory")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # child process: one case, JSON on stdout
    args = parser.parse_args(argv)
    shape = SHAPES["smoke" if args.smoke else "default"]
    torch.set_num_threads(args.threads)
    if args.run:
        print(json.dumps(run_case(args.run, shape)))
        return
    batch, width, labels, dim, k = shape
    print(f"{_machine()}\nB={batch} K={width} L={labels} d={dim} k={k} float32\n")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    results = {}
    for _ in range(args.rounds):  # rounds interleave the cases, so a burst of load hits one round
        for case, _ in CASES:
            command = [sys.executable, os.path.abspath(__file__), "--run", case, "--threads", str(args.threads)]
            command += ["--smoke"] if args.smoke else []
            run = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results.setdefault(case, []).append(json.loads(run.stdout))
    rows, before = [], {}
    for case, title in CASES:
        ms = min(r["ms"] for r in results[case])
        extra = max(r["extra_mib"] for r in results[case])
        first = before.setdefault(case.split(":")[0], ms)
        rows.append((title, f"{ms:.2f}", f"{first / ms:.1f}x", f"{extra:.0f}"))
    header = ("what", "ms", "speed-up", "extra MiB")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print("\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]))


if __name__ == "__main__":
    main()

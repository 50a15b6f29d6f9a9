"""Every xcops op and both backward ops once, at small awkward shapes, against the references.

    python -m xcops.benchmarks.gpu_smoke                 # small cases on CUDA (or the CPU)
    python -m xcops.benchmarks.gpu_smoke --large         # the one L*d > 2^31 case
    compute-sanitizer --tool memcheck python -m xcops.benchmarks.gpu_smoke

Made to run under compute-sanitizer (memcheck, racecheck, initcheck) in `tasks.sh
gpu-check`: small shapes, each case checked against xcops.ops.reference. Awkward cases:
bf16 weight and query whose base is not 16-byte aligned, a CSR shortlist with empty rows and
one very long row, int32 and int64 ids, B = 0 and K = 0, the deterministic mode, and (with
--large) L = 3M, d = 768 bf16 with ids near L - 1, so that label * d passes 2^31.
Prints one PASS/FAIL line per case; exits 1 when any case fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from typing import Callable, Dict, List, Tuple

import torch

import xcops
from xcops.ops import reference

Case = Tuple[str, Callable[[torch.device], None]]

TOLERANCE = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=2e-2, atol=5e-2),
    torch.float16: dict(rtol=2e-3, atol=5e-3),
}


def close(actual, expected, what: str) -> None:
    """assert_close at the tolerance of actual's dtype (expected may be more precise)."""
    tolerance = TOLERANCE[actual.dtype]
    if actual.layout != torch.strided:
        actual = actual.to_dense()
    if expected.layout != torch.strided:
        expected = expected.to_dense()
    torch.testing.assert_close(actual.double(), expected.double(), **tolerance,
                               msg=lambda m: f"{what}: {m}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unaligned(rows: int, cols: int, dtype, device, gen) -> torch.Tensor:
    """A contiguous [rows, cols] tensor whose base is one element past an aligned address."""
    storage = torch.empty(rows * cols + 1, dtype=dtype, device=device)
    view = storage[1:].view(rows, cols)
    view.copy_(torch.randn(rows, cols, generator=gen).to(dtype))
    return view


def long_row_csr(labels: int, long_row: int, device, index_dtype, gen):
    """CSR of 9 rows: empty rows, short rows and one row of `long_row` ids."""
    lengths = torch.tensor([0, 3, 0, long_row, 0, 1, 2, 0, 7])
    indptr = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    indptr[1:] = lengths.cumsum(0)
    indices = torch.randint(0, labels, (int(indptr[-1]),), generator=gen)
    indices[::11] = -1  # padding inside a CSR is allowed too
    return indptr.to(device, index_dtype), indices.to(device, index_dtype)


def check_shortlist(query, weight, shortlist, bias=None, sparse_grad=False, what="") -> None:
    """Forward, the query and weight (and bias) gradients, and the top-k, against the reference
    evaluated in float64 (its bf16 gradients would be summed in bf16)."""
    inputs = [t for t in (query, weight, bias) if t is not None]
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    q, w, *b = leaves
    rq, rw, *rb = ref_leaves
    ours = xcops.shortlist_score(q, w, shortlist, b[0] if b else None, sparse_grad=sparse_grad)
    want = reference.shortlist_score(rq, rw, shortlist, rb[0] if rb else None)
    close(ours, want, f"{what} forward")
    if ours.numel():
        grad = torch.randn(ours.shape, generator=_gen(1)).to(ours.device, ours.dtype)
        ours_grads = torch.autograd.grad(ours, leaves, grad)
        want_grads = torch.autograd.grad(want, ref_leaves, grad.double())
        for name, a, e in zip(("query", "weight", "bias"), ours_grads, want_grads):
            close(a, e, f"{what} grad {name}")
    k = 5
    values, labels = xcops.shortlist_topk(q.detach(), w.detach(), shortlist, k, b[0].detach() if b else None)
    want_values, _ = reference.shortlist_topk(rq.detach(), rw.detach(), shortlist, k,
                                              rb[0].detach() if rb else None)
    close(values, want_values, f"{what} top-{k} values")


def case_shortlist_dtypes(device) -> None:
    gen = _gen(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for index_dtype in (torch.int32, torch.int64):
            for dim in (72, 33):  # vectorised and scalar loads
                query = torch.randn(7, dim, generator=gen).to(device, dtype)
                weight = torch.randn(129, dim, generator=gen).to(device, dtype)
                bias = torch.randn(129, generator=gen).to(device, dtype)
                shortlist = torch.randint(-1, 129, (7, 13), generator=gen).to(device, index_dtype)
                for sparse in (False, True):
                    check_shortlist(query, weight, shortlist, bias, sparse,
                                    f"{dtype} {index_dtype} d={dim} sparse={sparse}")


def case_unaligned_bf16(device) -> None:
    gen = _gen(2)
    weight = unaligned(300, 64, torch.bfloat16, device, gen)
    query = unaligned(5, 64, torch.bfloat16, device, gen)
    assert weight.data_ptr() % 16 != 0 and query.data_ptr() % 16 != 0
    shortlist = torch.randint(0, 300, (5, 9), generator=gen).to(device)
    for sparse in (False, True):
        check_shortlist(query, weight, shortlist, sparse_grad=sparse, what=f"unaligned sparse={sparse}")


def case_csr_long_row(device) -> None:
    gen = _gen(3)
    for index_dtype in (torch.int32, torch.int64):
        query = torch.randn(9, 40, generator=gen).to(device)
        weight = torch.randn(2000, 40, generator=gen).to(device)
        csr = long_row_csr(2000, 5000, device, index_dtype, gen)
        for sparse in (False, True):
            check_shortlist(query, weight, csr, sparse_grad=sparse, what=f"CSR {index_dtype} sparse={sparse}")


def case_empty(device) -> None:
    gen = _gen(4)
    weight = torch.randn(50, 16, generator=gen).to(device)
    for batch, width in ((0, 6), (4, 0), (0, 0)):
        query = torch.randn(batch, 16, generator=gen).to(device)
        shortlist = torch.randint(0, 50, (batch, width), generator=gen).to(device)
        check_shortlist(query, weight, shortlist, what=f"B={batch} K={width}")
        q, w = query.clone().requires_grad_(), weight.clone().requires_grad_()
        scores = xcops.shortlist_score(q, w, shortlist)
        scores.sum().backward()
        assert q.grad.shape == q.shape and not q.grad.any()
        assert w.grad.shape == w.shape and not w.grad.any()
    close(*_dense_pair(torch.randn(0, 16, device=device), weight, 3), "dense_topk B=0")


def _dense_pair(query, weight, k, exclude=None):
    values, _ = xcops.dense_topk(query, weight, k, exclude)
    return values, reference.dense_topk(query, weight, k, exclude)[0]


def case_dense_topk(device) -> None:
    gen = _gen(5)
    for dtype in (torch.float32, torch.bfloat16):
        query = torch.randn(37, 64, generator=gen).to(device, dtype)
        weight = torch.randn(5000, 64, generator=gen).to(device, dtype)
        exclude = long_row_csr(5000, 300, device, torch.int64, gen)
        exclude = (torch.cat([exclude[0], exclude[0][-1:].repeat(28)]), exclude[1])
        for k in (1, 10, 100):
            for ex in (None, exclude):
                values, labels = xcops.dense_topk(query, weight, k, ex)
                close(values, reference.dense_topk(query, weight, k, ex)[0], f"dense_topk {dtype} k={k}")
                # The ids must score what they claim (ties may pick other ids than the reference).
                rescored = (query.float() @ weight.float().T).gather(1, labels.clamp_min(0))
                close(rescored.to(dtype).masked_fill(labels < 0, float("-inf")), values,
                      f"dense_topk {dtype} k={k} ids")


def case_hard_negatives(device) -> None:
    gen = _gen(6)
    for dtype in (torch.float32, torch.bfloat16):
        query = torch.randn(33, 32, generator=gen).to(device, dtype).requires_grad_()
        labels = torch.randn(50, 32, generator=gen).to(device, dtype).requires_grad_()
        positives = long_row_csr(50, 20, device, torch.int64, gen)
        positives = (torch.cat([positives[0], positives[0][-1:].repeat(24)]), positives[1])
        for k in (5, 50):  # k = P: rows with positives keep empty slots
            values, ids = xcops.hard_negatives(query, labels, positives, k)
            want, _ = reference.hard_negatives(query.detach(), labels.detach(), positives, k)
            close(values.detach(), want, f"hard_negatives {dtype} k={k}")
            finite = values.isfinite()
            grads = torch.autograd.grad(values[finite].sum(), (query, labels))
            assert all(torch.isfinite(g).all() for g in grads)


def case_kmeans(device) -> None:
    gen = _gen(7)
    # Eight well-separated blobs of 125 points: every split has a wide gap at its median, so
    # rounding cannot decide it and both devices must build the same tree.
    blobs = (torch.randn(8, 16, generator=gen) * 5).repeat_interleave(125, 0)
    for dtype in (torch.float32, torch.float64):
        x = (blobs + 0.1 * torch.randn(1000, 16, generator=gen)).to(device, dtype)
        assign, centroids = xcops.balanced_kmeans(x, 8, seed=3)
        sizes = torch.bincount(assign, minlength=8)
        assert int(sizes.max() - sizes.min()) <= 1, f"kmeans {dtype}: unbalanced sizes {sizes.tolist()}"
        close(centroids.norm(dim=1), torch.ones(8, dtype=dtype, device=device), f"kmeans {dtype} unit centroids")
        cpu_assign, _ = xcops.balanced_kmeans(x.cpu(), 8, seed=3)
        agree = float((cpu_assign == assign.cpu()).double().mean())
        assert agree >= 0.95, f"kmeans {dtype}: only {agree:.3f} of the points agree with the CPU"


def case_deterministic(device) -> None:
    gen = _gen(8)
    query = torch.randn(31, 48, generator=gen).to(device, torch.bfloat16)
    weight = torch.randn(200, 48, generator=gen).to(device, torch.bfloat16)
    shortlist = torch.randint(0, 20, (31, 40), generator=gen).to(device)  # many repeats per label
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            q, w = query.clone().requires_grad_(), weight.clone().requires_grad_()
            scores = xcops.shortlist_score(q, w, shortlist)
            scores.float().square().sum().backward()
            runs.append((scores, q.grad, w.grad, xcops.dense_topk(query, weight, 7)[0]))
        for a, b in zip(*runs):
            assert torch.equal(a, b), "deterministic mode: two runs differ"
        check_shortlist(query, weight, shortlist, what="deterministic")
    finally:
        torch.use_deterministic_algorithms(previous)


SMALL_CASES: List[Case] = [
    ("shortlist fp32/bf16/fp16/fp64 x int32/int64, padded, bias, dense+sparse grad", case_shortlist_dtypes),
    ("shortlist bf16 weight and query not 16-byte aligned", case_unaligned_bf16),
    ("shortlist CSR with empty rows and one 5000-id row", case_csr_long_row),
    ("shortlist B=0 and K=0", case_empty),
    ("dense_topk fp32/bf16 with exclusions", case_dense_topk),
    ("hard_negatives fp32/bf16, forward and backward", case_hard_negatives),
    ("balanced_kmeans fp32/fp64", case_kmeans),
    ("deterministic mode", case_deterministic),
]


def case_large(device, labels: int = 3_000_000, dim: int = 768) -> None:
    """L*d > 2^31 bf16, int32 ids near L - 1: forward and both backward ops."""
    gen = _gen(9)
    weight = torch.empty(labels, dim, dtype=torch.bfloat16, device=device)
    weight.normal_(generator=torch.Generator(device=device).manual_seed(9))
    query = torch.randn(64, dim, generator=gen).to(device, torch.bfloat16)
    window = min(1000, labels)
    shortlist = (labels - 1 - torch.randint(0, window, (64, 32), generator=gen)).to(device, torch.int32)
    tail = labels - window
    for sparse in (False, True):
        q, w = query.clone().requires_grad_(), weight.requires_grad_()
        ours = xcops.shortlist_score(q, w, shortlist, sparse_grad=sparse)
        want = reference.shortlist_score(query, weight.detach(), shortlist)
        close(ours, want, f"large forward sparse={sparse}")
        grad = torch.randn(ours.shape, generator=gen).to(device, ours.dtype)
        grad_q, grad_w = torch.autograd.grad(ours, (q, w), grad)
        rows = torch.repeat_interleave(torch.arange(64, device=device), 32)
        ids = shortlist.flatten().long()
        want_q = torch.zeros(64, dim, device=device).index_add_(
            0, rows, grad.flatten().float()[:, None] * weight.detach()[ids].float())
        want_w = torch.zeros(window, dim, device=device).index_add_(
            0, ids - tail, grad.flatten().float()[:, None] * query[rows].float())
        close(grad_q, want_q.to(grad_q.dtype), "large grad query")
        grad_w = grad_w.coalesce() if sparse else grad_w
        if sparse:
            assert int(grad_w.indices().min()) >= tail
            dense_tail = torch.zeros(window, dim, dtype=grad_w.dtype, device=device).index_copy_(
                0, grad_w.indices()[0] - tail, grad_w.values())
        else:
            assert not grad_w[:tail].any(), "large grad weight: rows outside the shortlist touched"
            dense_tail = grad_w[tail:]
        close(dense_tail, want_w.to(dense_tail.dtype), f"large grad weight sparse={sparse}")
        weight.requires_grad_(False)


def run(cases: List[Case], device: torch.device) -> List[Dict]:
    results = []
    for name, fn in cases:
        start = time.perf_counter()
        try:
            fn(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ok, error = True, ""
        except Exception as exc:  # a failing case must not hide the others
            ok, error = False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        seconds = time.perf_counter() - start
        print(f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.2f} s){'' if ok else ': ' + error}", flush=True)
        results.append(dict(case=name, ok=ok, seconds=round(seconds, 3), error=error))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcops.benchmarks.gpu_smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--large", action="store_true", help="run the L*d > 2^31 case only")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cases = [("L=3M d=768 bf16, int32 ids near L-1, forward + both backward", case_large)] if args.large \
        else SMALL_CASES
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        results = run(cases, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    failed = sum(not r["ok"] for r in results)
    print(f"{len(results) - failed}/{len(results)} smoke cases passed on {device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

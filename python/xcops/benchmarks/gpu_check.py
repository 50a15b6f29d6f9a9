"""The parts of `bash tasks.sh gpu-check` written in Python: the hardware ceilings and summary.md.

    python -m xcops.benchmarks.gpu_check ceilings --json ceilings.json
    python -m xcops.benchmarks.gpu_check summary OUT_DIR WORK_DIR

`summary` reads WORK_DIR/steps.tsv (step, exit status, seconds, log file: one line per step
that bench/gpu_check.sh ran), WORK_DIR/{ceilings,shortlist,topk,clustering,smoke}.json and
WORK_DIR/env.json, writes OUT_DIR/summary.md and OUT_DIR/results.json (everything merged),
and prints summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional

import torch

from .timing import copy_bandwidth_gbs, format_table, time_ms

# The target table (issue 10; DESIGN.md section 6): which bench row, and the test.
TARGETS = [
    dict(op="shortlist_score forward", bench="shortlist",
         match=dict(shape="B=1024 K=100 L=1300000 d=768 bfloat16", step="forward"),
         target=">= 3x eager, >= 75% of the bandwidth floor",
         met=lambda r: r["speedup"] >= 3 and r["pct_of_floor"] >= 75,
         figure=lambda r: f"{r['speedup']:.2f}x eager, {r['pct_of_floor']:.0f}% of floor ({r['xcops_ms']:.3f} ms)"),
    dict(op="shortlist_score fwd+bwd, sparse_grad", bench="shortlist",
         match=dict(shape="B=1024 K=100 L=1300000 d=768 bfloat16", step="fwd+bwd (sparse grad)"),
         target=">= 10x eager",
         met=lambda r: r["speedup"] >= 10,
         figure=lambda r: f"{r['speedup']:.2f}x eager ({r['xcops_ms']:.3f} vs {r['eager_ms']:.3f} ms)"),
    dict(op="dense_topk", bench="topk",
         match=dict(op="dense_topk", shape="B=1024 L=1300000 d=768 k=100 bfloat16"),
         target=">= 3x torch.topk(q @ W.T), < 64 MB extra memory",
         met=lambda r: r["speedup"] >= 3 and (r["xcops_extra_mib"] or 0) < 64,
         figure=lambda r: f"{r['speedup']:.2f}x eager, {r['xcops_extra_mib']:.0f} MiB extra ({r['xcops_ms']:.3f} ms)"),
    dict(op="hard_negatives", bench="topk",
         match=dict(op="hard_negatives", shape="B=4096 L=12000 d=768 k=10 bfloat16"),
         target=">= 2x masked mm+topk",
         met=lambda r: r["speedup"] >= 2,
         figure=lambda r: f"{r['speedup']:.2f}x eager ({r['xcops_ms']:.3f} vs {r['eager_ms']:.3f} ms)"),
    dict(op="balanced_kmeans", bench="clustering",
         match=dict(problem="N=1300000 d=256 leaf=128", method="xcops", device="cuda"),
         target="<= 1 s",
         met=lambda r: r["seconds"] <= 1,
         figure=lambda r: f"{r['seconds']:.3f} s, mean cosine {r['mean_cos']:.4f}"),
]

# Anchors too slow for a 5-minute check, with the figure measured before.
SKIPPED_ANCHORS = [
    "balanced_kmeans node-by-node torch (N=1.3M d=256 leaf 128): not run; 43 s on an H100 "
    "(DESIGN.md section 6)",
]

BENCH_COLUMNS = {
    "shortlist": ["shape", "step", "xcops_ms", "eager_ms", "speedup", "floor_ms", "pct_of_floor",
                  "xcops_extra_mib", "eager_extra_mib"],
    "topk": ["op", "shape", "xcops_ms", "eager_ms", "speedup", "gemm_ms", "pct_of_floor",
             "xcops_extra_mib", "eager_extra_mib"],
    "clustering": ["problem", "device", "method", "seconds", "mean_cos", "clusters", "sizes"],
}


def gemm_tflops(device: torch.device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b, device, warmup=3, repeat=10)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def ceilings(device: torch.device) -> Dict:
    return dict(copy_gbs=copy_bandwidth_gbs(device, mib=2048 if device.type == "cuda" else 64),
                bf16_gemm_tflops=gemm_tflops(device, 8192 if device.type == "cuda" else 512))


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bench_rows(data) -> List[Dict]:
    """Rows of a bench JSON: shortlist/topk write {..., rows: [...]}, clustering a list."""
    if data is None:
        return []
    return data["rows"] if isinstance(data, dict) else data


def find_row(rows: List[Dict], match: Dict) -> Optional[Dict]:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def target_rows(benches: Dict[str, List[Dict]]) -> List[Dict]:
    out = []
    for t in TARGETS:
        row = find_row(benches.get(t["bench"], []), t["match"])
        if row is None:
            verdict, figure = "not measured", "-"
        else:
            verdict, figure = ("met" if t["met"](row) else "missed"), t["figure"](row)
        out.append(dict(op=t["op"], target=t["target"], result=verdict, measured=figure))
    return out


def read_steps(path: str) -> List[Dict]:
    steps = []
    try:
        with open(path) as f:
            for line in f:
                name, rc, seconds, log = line.rstrip("\n").split("\t")
                steps.append(dict(step=name, result="pass" if rc == "0" else f"FAIL (exit {rc})",
                                  seconds=int(seconds), log=log))
    except OSError:
        pass
    return steps


def markdown_table(rows: List[Dict], columns: List[str]) -> str:
    text = format_table(rows, columns).splitlines()
    header, _, *body = text
    cells = lambda line: [c.strip() for c in line.split(" | ")]  # noqa: E731
    lines = ["| " + " | ".join(cells(header)) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cells(line)) + " |" for line in body])


def summary(out_dir: str, work_dir: str, emit: Callable[[str], None] = print) -> str:
    env = _load(os.path.join(work_dir, "env.json")) or {}
    steps = read_steps(os.path.join(work_dir, "steps.tsv"))
    ceil = _load(os.path.join(work_dir, "ceilings.json"))
    benches = {name: bench_rows(_load(os.path.join(work_dir, f"{name}.json"))) for name in BENCH_COLUMNS}
    smoke = _load(os.path.join(work_dir, "smoke.json")) or []
    targets = target_rows(benches)
    verdict = "PASS" if steps and all(s["result"] == "pass" for s in steps) else "FAIL"
    parts = [
        f"# xcops gpu-check: {verdict}",
        "",
        f"- GPU: {env.get('gpu', 'n/a')} (compute capability {env.get('capability', 'n/a')})",
        f"- torch {env.get('torch', 'n/a')}, CUDA {env.get('cuda', 'n/a')}; xcops build {env.get('build', 'n/a')}",
        f"- commit {env.get('commit', 'n/a')}; date {env.get('date', 'n/a')}",
    ]
    if ceil:
        parts.append(f"- ceilings measured in this run: copy {ceil['copy_gbs']:.0f} GB/s (read + write), "
                     f"bf16 GEMM {ceil['bf16_gemm_tflops']:.0f} TFLOP/s")
    parts += ["", "## Steps", "", markdown_table(steps, ["step", "result", "seconds", "log"]) if steps else "none ran"]
    failed_cases = [c for c in smoke if not c["ok"]]
    if failed_cases:
        parts += ["", "Failed smoke cases: " + "; ".join(f"{c['case']}: {c['error']}" for c in failed_cases)]
    parts += ["", "## Targets", "", markdown_table(targets, ["op", "target", "result", "measured"])]
    for name, columns in BENCH_COLUMNS.items():
        if benches[name]:
            parts += ["", f"## xcops bench {name}", "", markdown_table(benches[name], columns)]
    parts += ["", "Skipped anchors: " + "; ".join(SKIPPED_ANCHORS), ""]
    text = "\n".join(parts)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(dict(env=env, steps=steps, ceilings=ceil, smoke=smoke, targets=targets, benches=benches), f, indent=1)
    emit(text)
    return verdict


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcops.benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ceilings", help="copy bandwidth and bf16 GEMM throughput")
    p.add_argument("--json", required=True)
    p = sub.add_parser("summary", help="write summary.md and results.json")
    p.add_argument("out_dir")
    p.add_argument("work_dir")
    args = parser.parse_args(argv)
    if args.cmd == "ceilings":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        result = ceilings(device)
        print(f"copy {result['copy_gbs']:.0f} GB/s, bf16 GEMM {result['bf16_gemm_tflops']:.1f} TFLOP/s")
        with open(args.json, "w") as f:
            json.dump(result, f)
        return 0
    return 0 if summary(args.out_dir, args.work_dir) == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

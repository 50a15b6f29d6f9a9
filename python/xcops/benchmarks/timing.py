"""Timing, memory and bandwidth helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Optional

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeat: int = 20) -> float:
    """Median wall time of fn() in milliseconds, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Peak memory fn() allocates beyond what was live before it (CUDA only)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    sync(device)
    del result
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def copy_bandwidth_gbs(device: torch.device, mib: int = 1024) -> float:
    """Achievable memory bandwidth measured by a device-to-device copy (read + write)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=2, repeat=10)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def parse_bench_args(prog: str, doc: str, presets: dict, repeat: int, argv=None):
    """The flags every benchmark takes. Returns ``(args, device, preset, device_name)``; the
    preset defaults to "gpu" when CUDA is available, else "cpu"."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=None,
                        help="shapes to run (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--repeat", type=int, default=repeat, help="timed repetitions (median reported)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = presets[args.preset or ("gpu" if device.type == "cuda" else "cpu")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return args, device, preset, name


def report(rows: list[dict], columns: list[str], json_path: Optional[str], **facts) -> None:
    """Prints the table; with ``json_path`` also writes ``facts`` and the rows as JSON."""
    print(format_table(rows, columns))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(facts, torch=torch.__version__, rows=rows), f, indent=1)

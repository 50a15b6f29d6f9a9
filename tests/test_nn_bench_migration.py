"""bench/bench_migration.py (the migration guide's measurements) still runs: every case, tiny shapes."""

import importlib.util
import math
import os
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_migration.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_migration", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_every_case_runs_on_small_shapes(single_thread):
    bench = load_bench()
    for case, _ in bench.CASES:
        result = bench.run_case(case, bench.SHAPES["smoke"])
        assert result["ms"] > 0 and math.isfinite(result["extra_mib"]), case

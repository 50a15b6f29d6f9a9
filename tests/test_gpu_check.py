"""The parts of `bash tasks.sh gpu-check` that run without a GPU: the no-GPU exit, the smoke
cases and their reference comparisons on the CPU, and the summary writer on canned results."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from xcops.benchmarks import gpu_check, gpu_smoke

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _gpu_check(tmp_path, python):
    env = dict(os.environ, XCOPS_PYTHON=python, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(["bash", str(ROOT / "tasks.sh"), "gpu-check", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the whole check on this GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    for python, reason in ((sys.executable, "no CUDA GPU visible"),
                           (str(tmp_path / "no-python"), "torch is not importable")):
        done = _gpu_check(tmp_path, python)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("\n") == 1 and reason in done.stdout, done.stdout
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,case", gpu_smoke.SMALL_CASES, ids=[n for n, _ in gpu_smoke.SMALL_CASES])
def test_smoke_case_passes_on_cpu(name, case):
    case(torch.device("cpu"))


def test_large_case_logic_at_a_tiny_size():
    gpu_smoke.case_large(torch.device("cpu"), labels=3000, dim=24)


def test_awkward_inputs_are_what_they_claim(rng):
    weight = gpu_smoke.unaligned(30, 16, torch.bfloat16, "cpu", rng)
    assert weight.data_ptr() % 16 != 0 and weight.is_contiguous() and weight.shape == (30, 16)
    indptr, indices = gpu_smoke.long_row_csr(100, 777, "cpu", torch.int32, rng)
    lengths = indptr.diff()
    assert indices.dtype == indptr.dtype == torch.int32
    assert int(lengths.max()) == 777 and int((lengths == 0).sum()) >= 3
    assert int(indices.min()) == -1 and int(indices.max()) < 100


def test_a_failing_case_is_reported_and_fails_the_run(capsys):
    def broken(device):
        gpu_smoke.close(torch.ones(3), torch.zeros(3), "deliberate")

    results = gpu_smoke.run([("fine", lambda device: None), ("broken", broken)], torch.device("cpu"))
    assert [r["ok"] for r in results] == [True, False]
    assert "deliberate" in results[1]["error"]
    assert "FAIL broken" in capsys.readouterr().out


def _write(path, data):
    path.write_text(json.dumps(data))


def test_summary_from_canned_results(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "steps.tsv").write_text("build\t0\t70\tbuild.log\npytest\t1\t95\tpytest.log\n")
    _write(work / "env.json", dict(gpu="NVIDIA H200", capability="90", torch="2.11.0+cu130",
                                   cuda="13.0", commit="abc1234", date="2026-12-01 12:00 UTC"))
    _write(work / "ceilings.json", dict(copy_gbs=4300.0, bf16_gemm_tflops=790.0))
    shape = "B=1024 K=100 L=1300000 d=768 bfloat16"
    _write(work / "shortlist.json", dict(rows=[
        dict(shape=shape, step="forward", xcops_ms=0.06, eager_ms=0.2, speedup=3.3, floor_ms=0.05,
             pct_of_floor=80.0, xcops_extra_mib=0.2, eager_extra_mib=150.0),
        dict(shape=shape, step="fwd+bwd (sparse grad)", xcops_ms=0.5, eager_ms=3.5, speedup=7.0,
             floor_ms=0.15, pct_of_floor=30.0, xcops_extra_mib=5.0, eager_extra_mib=2000.0),
    ]))
    _write(work / "clustering.json", [dict(problem="N=1300000 d=256 leaf=128", device="cuda",
                                           method="xcops", seconds=0.8, mean_cos=0.61, clusters=16384,
                                           sizes="79-80")])
    lines = []
    verdict = gpu_check.summary(str(out), str(work), emit=lines.append)
    text = (out / "summary.md").read_text()
    assert verdict == "FAIL" and text.startswith("# xcops gpu-check: FAIL") and lines == [text]
    assert "NVIDIA H200" in text and "2.11.0+cu130" in text and "abc1234" in text
    assert "| pytest | FAIL (exit 1) | 95 | pytest.log |" in text
    targets = {t["op"]: t for t in json.loads((out / "results.json").read_text())["targets"]}
    assert targets["shortlist_score forward"]["result"] == "met"
    assert targets["shortlist_score fwd+bwd, sparse_grad"]["result"] == "missed"
    assert "7.00x eager" in targets["shortlist_score fwd+bwd, sparse_grad"]["measured"]
    assert targets["balanced_kmeans"]["result"] == "met"
    assert targets["dense_topk"]["result"] == targets["hard_negatives"]["result"] == "not measured"
    assert "4300 GB/s" in text and "790 TFLOP/s" in text and "43 s on an H100" in text
    assert len(os.listdir(out)) <= 8


def test_ceilings_on_cpu():
    result = gpu_check.ceilings(torch.device("cpu"))
    assert result["copy_gbs"] > 0 and result["bf16_gemm_tflops"] > 0

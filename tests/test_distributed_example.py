"""The README's two-process example runs as written, under torchrun on CPU (tiny sizes)."""

import doctest
import pathlib
import subprocess
import sys

import xcops.distributed.partition

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_torchrun_example_runs():
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(ROOT / "examples" / "sharded_classifier.py"), "--labels", "301", "--steps", "6"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gathered from 2 shards" in done.stdout and "full weight (301, 32)" in done.stdout, done.stdout
    assert "P@1 on rank 0's queries" in done.stdout


def test_readme_names_the_example():
    readme = (ROOT / "README.md").read_text()
    assert "torchrun --nproc-per-node 2 examples/sharded_classifier.py" in readme


def test_partition_docstring_example():
    result = doctest.testmod(xcops.distributed.partition)
    assert result.attempted > 0 and result.failed == 0

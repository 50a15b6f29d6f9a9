"""The README's Python example, the docs' code and every docstring example run as written."""

import doctest
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), flags=re.S)


def test_readme_ops_example_runs():
    example = next(b for b in python_blocks("README.md") if "xcops.shortlist_score" in b)
    exec(compile(example, "README.md", "exec"), {})


def test_readme_nn_example_runs():
    example = next(b for b in python_blocks("README.md") if "ShortlistLinear(" in b)
    exec(compile(example, "README.md", "exec"), {})


def test_migration_guide_runs():
    """The guide's blocks build on each other: one namespace, in order."""
    blocks = python_blocks("docs/migration.md")
    assert len(blocks) >= 5
    namespace = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/migration.md block {number}", "exec"), namespace)


@pytest.mark.parametrize("module", ["xcops.ops.shortlist", "xcops.ops.dense_topk", "xcops.ops.clustering",
                                    "xcops.nn.shortlist_linear", "xcops.nn.triplet_loss", "xcops.progress"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

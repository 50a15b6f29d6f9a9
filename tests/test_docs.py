"""The README's Python example and every docstring example run as written."""

import doctest
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_ops_example_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "xcops.shortlist_score" in b)
    exec(compile(example, "README.md", "exec"), {})


@pytest.mark.parametrize("module", ["xcops.ops.shortlist", "xcops.ops.dense_topk", "xcops.ops.clustering"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

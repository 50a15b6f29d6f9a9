"""The wheel metadata provider (cmake/torch_pin.py): torch pin and torch/CUDA local version."""

import importlib.util
from pathlib import Path

import pytest
import torch

from xcops import _build

ROOT = Path(__file__).resolve().parents[1]
RELEASE = torch.__version__.split("+")[0]


def provider(state):
    spec = importlib.util.spec_from_file_location("torch_pin", ROOT / "cmake" / "torch_pin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    p = module.Provider()
    p.build_state(state)
    return p


@pytest.mark.parametrize("torch_cuda, mode, tag", [
    ("13.0", "ON", "cu130"), ("12.8", "ON", "cu128"), ("13.0", "OFF", "cpu"), (None, "ON", "cpu"),
])
def test_wheel_pins_its_torch_and_names_it_in_the_local_version(monkeypatch, torch_cuda, mode, tag):
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setenv("XCOPS_CUDA", mode)
    fields = provider("wheel").dynamic_metadata({"sdist-torch": "torch>=2.7"}, {"version": "0.3.1"})
    label = "+pt" + RELEASE.replace(".", "") + tag
    assert fields == {"version": "0.3.1" + label, "dependencies": [f"torch=={RELEASE}"]}
    # the import guard points users to wheels by the same label
    assert _build._wheel_label(torch.__version__, torch_cuda if tag != "cpu" else None) == label


def test_sdist_keeps_the_plain_version_and_a_loose_torch():
    fields = provider("sdist").dynamic_metadata({"sdist-torch": "torch>=2.7"}, {"version": "0.3.1"})
    assert fields == {"dependencies": ["torch>=2.7"]}

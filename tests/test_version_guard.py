"""A build meeting a torch it was not made for fails with a clear error, not a symbol dump.

Each mismatch is faked in a fresh interpreter (the build facts in xcops._build_config, or
torch.version.cuda) so that this process's xcops stays loaded as it is.
"""

import subprocess
import sys
import textwrap

import pytest
import torch

import xcops
from xcops import _build, _build_config


def start_import(built_torch, built_cuda=None, running_cuda="real", blocked=()):
    """Starts importing xcops in a subprocess with faked build facts; :func:`finish` waits for it.
    The modules in ``blocked`` fail to import: a _C that cannot load, a build without the facts."""
    fake = textwrap.dedent(f"""
        import sys, types
        import torch
        if {running_cuda!r} != "real":
            torch.version.cuda = {running_cuda!r}
        config = types.ModuleType("xcops._build_config")
        config.TORCH_VERSION = {built_torch!r}
        config.TORCH_CUDA_VERSION = {built_cuda or ""!r}
        config.WITH_CUDA = {built_cuda is not None!r}
        config.CUDA_VERSION = config.CUDA_ARCHS = ""
        sys.modules["xcops._build_config"] = config
        sys.modules.update(dict.fromkeys({blocked!r}))
        import xcops
        print("imported", xcops.build_info()["torch_version"])
    """)
    return subprocess.Popen([sys.executable, "-c", fake], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
    """``(returncode, output)`` of a :func:`start_import`."""
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


RELEASE = torch.__version__.split("+")[0]
# Every import at once: each subprocess spends seconds importing torch, and they overlap.
IMPORTS = {
    "2.5.1": dict(built_torch="2.5.1"),
    "1.13.1+cpu": dict(built_torch="1.13.1+cpu"),
    "other label": dict(built_torch=RELEASE + "+other"),
    "cuda None": dict(built_torch=torch.__version__, built_cuda="13.0", running_cuda=None),
    "cuda 12.8": dict(built_torch=torch.__version__, built_cuda="13.0", running_cuda="12.8"),
    "no _C": dict(built_torch=torch.__version__, blocked=("xcops._C",)),
    "no build facts": dict(built_torch=torch.__version__, blocked=("xcops._build_config",)),
}


@pytest.fixture(scope="module")
def imports():
    started = {name: start_import(**kwargs) for name, kwargs in IMPORTS.items()}
    return {name: finish(process) for name, process in started.items()}


def last_line(output):
    return output.strip().splitlines()[-1]


def test_build_config_matches_the_compiled_extension():
    info = xcops.build_info()
    assert _build_config.TORCH_VERSION == info["torch_version"] == torch.__version__
    assert _build_config.WITH_CUDA == info["cuda"]


@pytest.mark.parametrize("built", ["2.5.1", "1.13.1+cpu"])
def test_other_torch_release_is_an_import_error_naming_both(imports, built):
    code, out = imports[built]
    assert code != 0
    msg = last_line(out)
    assert msg.startswith("ImportError: xcops was built for torch"), out
    assert built in msg and torch.__version__ in msg
    assert f"pip install torch=={built.split('+')[0]}" in msg and "--no-build-isolation" in msg
    assert "+pt" + torch.__version__.split("+")[0].replace(".", "") in msg  # the wheel to get instead


def test_same_release_with_another_local_label_imports(imports):
    # 2.14.1 and 2.14.1+cu130 share the C++ ABI: only the CUDA check below tells them apart
    code, out = imports["other label"]
    assert code == 0 and "imported" in out, out


@pytest.mark.parametrize("running_cuda", [None, "12.8"])
def test_cuda_build_on_torch_without_matching_cuda_is_an_import_error(imports, running_cuda):
    code, out = imports[f"cuda {running_cuda}"]
    assert code != 0
    msg = last_line(out)
    assert msg.startswith("ImportError: this xcops build has CUDA kernels"), out
    assert torch.__version__ in msg and "CUDA 13.0" in msg
    assert ("has no CUDA" if running_cuda is None else "has CUDA 12.8") in msg
    assert "xcops wheel made for your torch (xcops-*+pt" in msg


def test_extension_that_fails_to_load_is_wrapped_with_versions_and_fix(imports):
    code, out = imports["no _C"]
    assert code != 0
    msg = last_line(out)
    assert msg.startswith("ImportError: xcops's compiled extension"), out
    assert msg.count(torch.__version__) == 2 and "pip install torch==" in msg


def test_missing_build_facts_ask_for_a_rebuild(imports):
    code, out = imports["no build facts"]
    assert code != 0
    msg = last_line(out)
    assert msg.startswith("ImportError: xcops._build_config is missing"), out
    assert "--no-build-isolation" in msg


def test_cpu_only_build_refuses_cuda_calls_by_name():
    # An op with a CPU kernel only, standing in for a CPU-only build's ops; its CUDA kernel is
    # reached through the dispatcher without a GPU.
    lib = torch.library.Library("xcops_guard_test", "DEF")
    lib.define("twice(Tensor x) -> Tensor")
    lib.impl("twice", lambda x: 2 * x, "CPU")
    _build.register_cuda_refusals(_build_config, "xcops_guard_test")
    op = torch.ops.xcops_guard_test.twice.default
    x = torch.arange(3.0)
    assert torch.equal(op(x), 2 * x)
    with pytest.raises(RuntimeError, match=r"xcops_guard_test::twice was called on CUDA tensors, "
                                           r"but this xcops build is CPU-only") as err:
        op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), x)
    assert _build_config.TORCH_VERSION in str(err.value) and "XCOPS_CUDA=ON" in str(err.value)


@pytest.mark.skipif(_build_config.WITH_CUDA, reason="a CUDA build has compiled CUDA kernels")
def test_cpu_only_build_has_a_refusing_cuda_kernel_for_every_op():
    ops = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("xcops::")]
    assert ops
    for name in ops:
        assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(name, "CUDA"), name

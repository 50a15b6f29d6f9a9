"""scikit-build-core dynamic-metadata provider: ties the xcops wheel to the torch it is built on.

xcops._C links against torch's C++ API, whose ABI changes between releases, so a build only
loads with the torch release it was compiled against. Like the PyTorch-ecosystem wheels
(torch-scatter, torchao), the wheel therefore requires exactly that release and names torch
and CUDA in its local version: 0.1.0+pt2141cu130, or 0.1.0+pt2130cpu for a CPU-only build.
An sdist keeps the plain version and a loose torch requirement: it is compiled where it is
installed.
"""

import os
import re
import shutil


def _cuda_kernels_built(torch_cuda):
    """Whether CMakeLists.txt will compile the CUDA kernels (same rule: XCOPS_CUDA, nvcc)."""
    mode = os.environ.get("XCOPS_CUDA", "auto").upper()
    if not torch_cuda or mode == "OFF":
        return False
    return mode == "ON" or bool(
        os.environ.get("CUDACXX") or shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))


class Provider:
    def __init__(self):
        self.state = "wheel"

    def build_state(self, build_state):
        self.state = build_state

    def dynamic_wheel(self, settings):
        return {"dependencies": True}  # the sdist's loose torch requirement becomes a pin

    def dynamic_metadata(self, settings, project):
        if self.state == "sdist":
            return {"dependencies": [settings["sdist-torch"]]}
        import torch

        release = torch.__version__.split("+")[0]
        cuda = torch.version.cuda
        variant = "cu" + cuda.replace(".", "") if _cuda_kernels_built(cuda) else "cpu"
        local = "pt" + re.sub(r"[^0-9a-zA-Z]", "", release) + variant
        return {"version": f"{project['version']}+{local}", "dependencies": [f"torch=={release}"]}

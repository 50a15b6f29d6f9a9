"""Print the facts CMake needs about the installed torch, as CMake `set()` lines.

Taken from torch itself rather than find_package(Torch): a CUDA torch wheel's CMake config
fails when the system CUDA toolkit lacks cuBLAS/cuSPARSE/nvrtc headers, which the PyPI
nvidia packages provide instead.
"""
import os

import torch
import torch.utils.cpp_extension as cpp_ext


def cmake_list(paths):
    return ";".join(p.replace("\\", "/") for p in paths)


torch_dir = os.path.dirname(torch.__file__)
nvidia_includes = []
try:
    import nvidia  # the PyPI CUDA packages that ship with torch's CUDA wheel

    for root in nvidia.__path__:
        for sub in sorted(os.listdir(root)):
            inc = os.path.join(root, sub, "include")
            if os.path.isdir(inc):
                nvidia_includes.append(inc)
except ImportError:
    pass

print(f'set(TORCH_VERSION "{torch.__version__}")')
print(f'set(TORCH_CUDA_VERSION "{torch.version.cuda or ""}")')
print(f'set(TORCH_CXX11_ABI {int(torch._C._GLIBCXX_USE_CXX11_ABI)})')
print(f'set(TORCH_INCLUDE_DIRS "{cmake_list([os.path.join(torch_dir, "include"), os.path.join(torch_dir, "include", "torch", "csrc", "api", "include")])}")')
print(f'set(TORCH_LIBRARY_DIR "{os.path.join(torch_dir, "lib")}")')
print(f'set(TORCH_NVIDIA_INCLUDE_DIRS "{cmake_list(nvidia_includes)}")')

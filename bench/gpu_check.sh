#!/usr/bin/env bash
# The one-call GPU verdict (bash tasks.sh gpu-check [OUT_DIR]); see README "GPU check".
# On a machine with a CUDA GPU and the torch already installed there (no network, no pip
# download), it
#   1. builds xcops for the local GPU's architecture only, into build/gpu-check-site;
#   2. runs the whole pytest suite with CUDA;
#   3. runs the smoke cases (python/xcops/benchmarks/gpu_smoke.py) under compute-sanitizer
#      memcheck, racecheck and initcheck, then the L*d > 2^31 case once outside it;
#   4. measures the copy bandwidth and bf16 GEMM ceilings and runs xcops bench shortlist,
#      topk and clustering (xcops only at N = 1.3M: the node-by-node anchor takes 43 s);
#   5. writes OUT_DIR/summary.md, results.json and the logs (7 files) and prints summary.md.
# Without a GPU it says so in one line and exits 0.
# Environment: XCOPS_PYTHON (default .venv/bin/python if present, else python3);
# GPU_CHECK_STEPS (default "build pytest sanitizer large bench") to rerun a subset;
# XCOPS_COMMIT names the commit where the tree has no .git.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}
if [ -n "${XCOPS_PYTHON:-}" ]; then PY=$XCOPS_PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
STEPS=" ${GPU_CHECK_STEPS:-build pytest sanitizer large bench} "

# One interpreter start (importing torch takes seconds): "<cuda available> <capability> <torch>".
if ! probe=$("$PY" -c 'import torch; ok = torch.cuda.is_available()
print(int(ok), "%d%d" % torch.cuda.get_device_capability() if ok else "-", torch.__version__)' 2>/dev/null); then
  echo "gpu-check: no GPU check run: torch is not importable with $PY (set XCOPS_PYTHON)"
  exit 0
fi
read -r has_gpu ARCH torch_version <<<"$probe"
if [ "$has_gpu" != 1 ]; then
  echo "gpu-check: no CUDA GPU visible to torch $torch_version ($PY); nothing to check"
  exit 0
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SITE=$ROOT/build/gpu-check-site
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; }
: >"$WORK/steps.tsv"

# run NAME LOG TIMEOUT CMD...: runs CMD with its output appended to OUT/LOG, records the step.
run() {
  local name=$1 log=$2 limit=$3; shift 3
  local start=$SECONDS rc
  echo "== $name: $*" | tee -a "$OUT/$log"
  timeout "$limit" "$@" >>"$OUT/$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$log" >>"$WORK/steps.tsv"
  echo "   $name: exit $rc after $((SECONDS - start)) s (log: $log)"
  return $rc
}
wants() { [[ "$STEPS" == *" $1 "* ]]; }

"$PY" - "$WORK/env.json" "$ARCH" <<'EOF'
import datetime, json, subprocess, sys
import torch
import os
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
# A copy of the tree without .git (e.g. on a lent GPU machine) names its commit in XCOPS_COMMIT.
commit = git("rev-parse", "--short", "HEAD") or os.environ.get("XCOPS_COMMIT", "")
dirty = git("status", "--porcelain", "--untracked-files=no")
json.dump(dict(gpu=torch.cuda.get_device_name(), capability=sys.argv[2], torch=torch.__version__,
               cuda=torch.version.cuda, commit=(commit or "unknown") + (" (modified)" if dirty else ""),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
          open(sys.argv[1], "w"))
EOF

if wants build; then
  # --target: no venv and no write to the system site-packages; the build folder is reused.
  run build build.log 900 env XCOPS_CUDA=ON XCOPS_CUDA_ARCHS="$ARCH" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index --upgrade --target "$SITE" . &&
    run build-info build.log 60 "$PY" -c 'import xcops; print(xcops.__file__, xcops.build_info())'
  "$PY" -c 'import json, sys, xcops; json.dump(xcops.build_info(), open(sys.argv[1], "w"))' \
    "$WORK/build.json" 2>/dev/null || true
fi
"$PY" -c 'import json, sys; e = json.load(open(sys.argv[1]))
try: e["build"] = str(json.load(open(sys.argv[2])))
except OSError: pass
json.dump(e, open(sys.argv[1], "w"))' "$WORK/env.json" "$WORK/build.json"

# pytest keeps the CPU cores busy, the sanitizer runs mostly wait on the GPU and the tools:
# they overlap. The benchmarks run alone afterwards.
if wants pytest; then
  run pytest pytest.log 900 "$PY" -m pytest -q -p no:cacheprovider -rfEs tests &
fi

if wants sanitizer; then
  if ! command -v compute-sanitizer >/dev/null; then
    echo "compute-sanitizer not found" >>"$OUT/sanitizer.log"
    printf 'sanitizer\t127\t0\tsanitizer.log\n' >>"$WORK/steps.tsv"
  else
    # memcheck and racecheck instrument only xcops kernels (ATen's are not ours, and slow
    # under the tools); initcheck must see every write, so it instruments all of them.
    # Without the caching allocator an out-of-bounds access or an uninitialised read of a
    # fresh buffer cannot hide inside a pooled block.
    ours=()
    compute-sanitizer --help 2>/dev/null | grep -q -- '--kernel-name' && ours=(--kernel-name kns=xcops)
    for tool in memcheck racecheck initcheck; do
      filter=("${ours[@]}")
      [ "$tool" = initcheck ] && filter=()
      run "sanitizer $tool" sanitizer.log 600 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
        compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 50 "${filter[@]}" \
        "$PY" -m xcops.benchmarks.gpu_smoke --json "$WORK/smoke.json"
    done
  fi
fi

if wants large; then
  run "large L*d > 2^31" smoke.log 600 "$PY" -m xcops.benchmarks.gpu_smoke --large
fi

wait

if wants bench; then
  run ceilings bench.log 120 "$PY" -m xcops.benchmarks.gpu_check ceilings --json "$WORK/ceilings.json"
  run "bench shortlist" bench.log 300 "$PY" -m xcops.benchmarks.shortlist --json "$WORK/shortlist.json"
  run "bench topk" bench.log 300 "$PY" -m xcops.benchmarks.topk --json "$WORK/topk.json"
  run "bench clustering" bench.log 300 "$PY" -m xcops.benchmarks.clustering --device cuda --problem 1 \
    --no-anchors --json "$WORK/clustering.json"
fi

echo
"$PY" -m xcops.benchmarks.gpu_check summary "$OUT" "$WORK"

#!/usr/bin/env bash
# Everything a GPU machine checks, in one run that fits a short loan of the machine:
#
#   pallas_tests  tests/test_pallas.py with the kernels compiled (Triton), the TF32 test included;
#   suite         the whole test suite on the GPU (src on PYTHONPATH, 8 xdist workers);
#   breakdown     benchmarks/gpu_pallas.py --breakdown: per-step times of the kernel and cuDNN at
#                 one narrow shape (LSTM, and LSTMCell with a projection);
#   gpu_pallas    benchmarks/gpu_pallas.py: the kernel against a full-precision scan on the
#                 device, then the timing grid, within what time is left.
#
# Each stage runs under its own limit (cut to what is left of the total), its whole output goes
# to OUT_DIR/<stage>.txt, and OUT_DIR/summary.txt gets each stage's exit status, time and last
# lines, so that a run cut short still says what it saw. From the repository root:
#
#   bash benchmarks/gpu_session.sh OUT_DIR [TOTAL_SECONDS]    # default 540 s in all
#   STAGES="suite" bash benchmarks/gpu_session.sh OUT_DIR     # some stages only
#   bash benchmarks/gpu_session.sh --dry-run OUT_DIR          # on a CPU: the script itself
#
# The dry run runs a few tests per stage and gpu_pallas.py --dry-run, to check the script on a
# machine without a GPU. Needs jax with CUDA and a CUDA build of torch for the real run.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry=1
  shift
fi
out=${1:?usage: gpu_session.sh [--dry-run] OUT_DIR [TOTAL_SECONDS]}
total=${2:-540}
stages=${STAGES:-pallas_tests suite breakdown gpu_pallas}
mkdir -p "$out"
: > "$out/summary.txt"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # several processes share the GPU
start=$SECONDS
# the grid of benchmarks/RESULTS.md ("The Pallas kernel on a GPU"), narrow and long first
GRID="16,2000,32,32;8,4000,16,64;4,1000,3,5;32,1000,64,128;64,200,128,256;16,100,512,1024"

left() { echo $((total - (SECONDS - start))); }

stage() { # stage NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  [[ " $stages " == *" $name "* ]] || return 0
  local rest
  rest=$(left)
  ((limit > rest)) && limit=$rest
  if ((limit < 20)); then
    echo "== $name: not run (the time budget is spent)" | tee -a "$out/summary.txt"
    return 0
  fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$out/summary.txt"
  local t0=$SECONDS rc
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$out/$name.txt" 2>&1
  rc=$?
  local why=""
  ((rc == 124 || rc == 137)) && why=" (stopped at its time limit)"
  echo "== $name: exit $rc$why after $((SECONDS - t0)) s; its last lines:" | tee -a "$out/summary.txt"
  tail -n 8 "$out/$name.txt" | tee -a "$out/summary.txt"
}

{
  date -u
  git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
    echo "nvidia-smi: not found"
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" ||
    true
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

if ((dry)); then
  stage pallas_tests 300 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_pallas.py \
    -k "plan or rejects"
  stage suite 300 python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_static.py
  stage breakdown 300 python3 benchmarks/gpu_pallas.py --dry-run --out "$out/breakdown" \
    --families lstmp --methods pallas,cudnn --skip-check --breakdown 4,8,3,5
  stage gpu_pallas 300 python3 benchmarks/gpu_pallas.py --dry-run --out "$out/grid" \
    --families rnn --methods pallas,fused --shapes 4,6,3,5
else
  stage pallas_tests 100 python3 -m pytest -q -n 0 -p no:cacheprovider -rs tests/test_pallas.py
  stage suite 280 python3 -m pytest -q -n 8 --dist loadfile -p no:cacheprovider -rfEs
  stage breakdown 90 python3 benchmarks/gpu_pallas.py --out "$out/breakdown" \
    --families lstm,lstmp --methods pallas,cudnn --skip-check --budget-s 60 \
    --breakdown 16,2000,32,32
  stage gpu_pallas 600 python3 benchmarks/gpu_pallas.py --out "$out/grid" \
    --budget-s $(($(left) - 60)) --shapes "$GRID"
fi
echo "total $((SECONDS - start)) s; outputs in $out" | tee -a "$out/summary.txt"

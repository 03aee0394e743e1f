#!/usr/bin/env bash
# The device check: run it first whenever a GPU (or TPU) machine is at hand.
#
#   bash benchmarks/device_check.sh              # on the accelerator machine: install, then measure (<= 8 min)
#   bash benchmarks/device_check.sh --dry-run    # anywhere: tiny sizes, no install (a minute or two on a CPU)
#
# Extra arguments go to `python -m jaxpid.bench.device_check` (see its --help: --budget-s, --models).
# Writes device_check.log (this run's output), device_check.jsonl, throughput.jsonl and vs_pytorch.jsonl
# into $OUT, or ./device_check_out/ when $OUT is unset: four files, one folder, as the device tool
# brings back (at most 8 files, 2 folders deep).
#
# What it installs (skipped with --dry-run or --no-install): jaxpid from this checkout without touching
# the machine's preinstalled stack (`python3 -m pip install --no-deps -e .`; PORTING.md), and any wheels
# carried in .whl/ (the GPU image has no diffusers: without it the PyTorch comparison is skipped with a
# line saying so). To carry diffusers, beforehand, on a machine with a registry, in the repo's root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata
# and name .whl in the device tool's `carry` (about 5 MB; the tree that travels stays under 64 MiB).
# Nothing is downloaded on the machine itself: SD 2.1-base runs with random weights of its published
# architecture (jaxpid.bench.models.random_pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-./device_check_out}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/device_check.log"
TOTAL_S="${DEVICE_CHECK_SECONDS:-450}"  # the whole script's budget: install + measurements

install=1
args=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) install=0; args+=("$arg") ;;
    --no-install) install=0 ;;
    *) args+=("$arg") ;;
  esac
done

{
  echo "== device check: $(date -u +%FT%TZ), $(uname -m), $("$PY" --version 2>&1), out: $OUT_DIR"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if [ "$install" = 1 ]; then
    echo "== install jaxpid from this checkout (no dependencies: the machine's JAX, Flax, PyTorch stay as they are)"
    if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e .; then
      echo "pip could not install jaxpid; running it from the checkout instead (PYTHONPATH=$PWD)"
      export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if compgen -G ".whl/*.whl" >/dev/null; then
      echo "== carried wheels: $(ls .whl)"
      site=$(mktemp -d)  # the wheels go beside the machine's packages, not over them
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "== no .whl/ folder: diffusers is probably missing here, and the PyTorch comparison will say so"
    fi
  fi
  # JAX and PyTorch share the GPU in one process: JAX must not take 75 % of its memory up front.
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
  export PYTHONUNBUFFERED=1
  budget=$(( TOTAL_S - ($(date +%s) - start) - 30 ))
  [ "$install" = 0 ] && budget_args=() || budget_args=(--budget-s "$budget")
  echo "== $PY -m jaxpid.bench.device_check ${budget_args[*]} ${args[*]} --results $OUT_DIR"
  "$PY" -m jaxpid.bench.device_check "${budget_args[@]}" "${args[@]}" --results "$OUT_DIR"
} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "== done in $(( $(date +%s) - start )) s (status $status); files in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
exit "$status"

#!/usr/bin/env bash
# ci/gpu.sh: nn_xp's whole check on one machine with a CUDA GPU, Python and CuPy (issue 8).
#
# preflight  a CUDA device must answer CuPy, before anything long runs; versions -> versions.txt
# install    wheels from .whl/ (if any) into a scratch --target; nn_xp from this checkout via
#            PYTHONPATH, so no network and no build backend are needed
# tests      the whole suite with NN_XP_TEST_BACKENDS=cupy,numpy (+ torch:cuda where torch sees CUDA)
# examples   on the auto backend, which must pick CuPy
# bench      benchmarks/bench.py --gpu: CuPy against PyTorch CUDA
#
# A short summary is printed last and written to summary.txt; every step keeps its full log.
# The log folder holds at most 7 files (the device tool brings back 8). docs/gpu.md says more.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: ci/gpu.sh [--logs DIR] [--quick] [--skip-examples] [--skip-bench] [--help]

Run nn_xp's GPU checks (preflight, install, tests, examples, benchmark) and print a summary.

options:
  --logs DIR       where the logs go (default: $OUT if set, else ./gpu-logs)
  --quick          tests without the 'slow' marker, examples with fewer epochs, bench --quick
  --skip-examples  do not run the examples (nor the auto-backend check)
  --skip-bench     do not run benchmarks/bench.py
  -h, --help       show this help and exit

environment:
  PYTHON               the interpreter (default: python3)
  NN_XP_GPU_BUDGET     seconds for the whole run; each step's limit is cut to fit (default: 290)
  NN_XP_GPU_TESTS      pytest paths, space-separated, from the repository root (default: tests)
  NN_XP_GPU_EPOCHS     --epochs for the sine example (default: 2000; 200 with --quick)
  NN_XP_GPU_BENCH_ARGS arguments for benchmarks/bench.py (default: --gpu)

exit status:
  0  every step passed (a missing example or benchmark script is reported, not failed)
  1  a step failed or ran out of time
  2  usage error
  3  preflight failed: no Python, CuPy not importable, or no CUDA device answered
EOF
}

die_usage() {
  echo "ci/gpu.sh: $1" >&2
  echo "try 'ci/gpu.sh --help'" >&2
  exit 2
}

# ---------------------------------------------------------------- arguments
LOGS="${OUT:-./gpu-logs}"
QUICK=0
SKIP_EXAMPLES=0
SKIP_BENCH=0
while (($#)); do
  case "$1" in
    --logs)
      if (($# < 2)) || [[ -z "$2" ]]; then die_usage "--logs needs a folder"; fi
      LOGS="$2"; shift 2 ;;
    --logs=*)
      LOGS="${1#--logs=}"; [[ -n "$LOGS" ]] || die_usage "--logs needs a folder"; shift ;;
    --quick) QUICK=1; shift ;;
    --skip-examples) SKIP_EXAMPLES=1; shift ;;
    --skip-bench) SKIP_BENCH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown option: $1" ;;
  esac
done

PY="${PYTHON:-python3}"
BUDGET="${NN_XP_GPU_BUDGET:-290}"
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die_usage "NN_XP_GPU_BUDGET must be a whole number of seconds, got '$BUDGET'"
EPOCHS="${NN_XP_GPU_EPOCHS:-$( ((QUICK)) && echo 200 || echo 2000)}"
[[ "$EPOCHS" =~ ^[0-9]+$ ]] || die_usage "NN_XP_GPU_EPOCHS must be a whole number, got '$EPOCHS'"
read -r -a TEST_PATHS <<<"${NN_XP_GPU_TESTS:-tests}"
read -r -a BENCH_ARGS <<<"${NN_XP_GPU_BENCH_ARGS-"--gpu"}"

# the script works from the repository root: make a relative PYTHON path absolute first
[[ "$PY" == */* && -e "$PY" ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
mkdir -p "$LOGS" 2>/dev/null || die_usage "cannot create the log folder '$LOGS'"
LOGS="$(cd "$LOGS" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/nn_xp-gpu.XXXXXX")" || exit 2
trap 'rm -rf "$SCRATCH"' EXIT
touch "$SCRATCH/stamp"
START=$SECONDS
export PYTHONUNBUFFERED=1
unset NN_XP_BACKEND NN_XP_DEVICE  # the auto backend is the point; the tests pick their own

# ---------------------------------------------------------------- bookkeeping
STEP_NAMES=()
STEP_STATUS=()
STEP_SECS=()
STEP_INFO=()
GPU_LINE=""

record() {  # record NAME STATUS SECONDS DETAILS
  STEP_NAMES+=("$1"); STEP_STATUS+=("$2"); STEP_SECS+=("$3"); STEP_INFO+=("$4")
  printf '== %-9s %-7s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

limit() {  # limit CAP: seconds a step may take, cut so the whole run stays inside the budget
  local left=$((BUDGET - (SECONDS - START) - 5))
  ((left < 1)) && left=1  # never 0: 'timeout 0' would mean no limit at all
  ((left < $1)) && echo "$left" || echo "$1"
}

status_of() {  # status_of RC: ok, TIMEOUT or FAIL
  case "$1" in
    0) echo ok ;;
    124 | 137) echo TIMEOUT ;;
    *) echo FAIL ;;
  esac
}

has_option() {  # has_option --NAME SCRIPT: does the script's argument parser know --NAME?
  grep -qE -- "[\"']$1[\"']" "$2"
}

show_tail() {  # the end of a failing step's log, so the reason is on screen
  echo "-- last lines of $1 --"
  tail -n "${2:-25}" "$1"
  echo "--"
}

summary() {  # summary EXIT_CODE: print the table last and keep it in summary.txt
  local i result
  case "$1" in 0) result="PASS" ;; 3) result="NO GPU" ;; *) result="FAIL" ;; esac
  {
    echo "nn_xp GPU check: ${GPU_LINE:-no GPU}"
    printf '%-10s %-8s %7s  %s\n' step status seconds details
    for i in "${!STEP_NAMES[@]}"; do
      printf '%-10s %-8s %7s  %s\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECS[$i]}" "${STEP_INFO[$i]}"
    done
    echo "result: $result (exit $1) in $((SECONDS - START)) s; logs: $LOGS"
  } | tee "$LOGS/summary.txt"
  exit "$1"
}

not_run() {  # not_run WHY STEP...: the steps after a fatal one are listed, not run
  local why="$1" s
  shift
  for s in "$@"; do record "$s" "not run" 0 "$why"; done
}

# ---------------------------------------------------------------- 0. preflight
t0=$SECONDS
echo "== preflight: is there a Python and does a CUDA device answer CuPy? (logs: $LOGS)"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "ci/gpu.sh: no Python: '$PY' is not on PATH (set PYTHON)" >&2
  record preflight FAIL $((SECONDS - t0)) "no Python: '$PY' not found"
  not_run "no Python" install tests examples bench
  summary 3
fi
{
  echo "# ci/gpu.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || echo '?')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (with local changes)')"
  echo "python: $PY = $(command -v "$PY")"
  echo "## nvidia-smi"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi failed (exit $?)"
  else
    echo "nvidia-smi: not found"
  fi
  echo "## CuPy"
} >"$LOGS/versions.txt"
PREFLIGHT='
import sys
try:
    import cupy
except Exception as exc:
    print(f"CuPy is not importable: {type(exc).__name__}: {exc}")
    sys.exit(1)
try:
    n = int(cupy.cuda.runtime.getDeviceCount())
except Exception as exc:
    print(f"no CUDA device answered: {type(exc).__name__}: {exc}")
    sys.exit(1)
if n < 1:
    print("no CUDA device answered: CuPy sees 0 devices")
    sys.exit(1)

def ask(f):
    try:
        return f()
    except Exception as exc:
        return f"? ({type(exc).__name__})"

def cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}" if isinstance(v, int) else v

rt = cupy.cuda.runtime
name = ask(lambda: rt.getDeviceProperties(0)["name"])
name = name.decode() if isinstance(name, bytes) else name
print(f"{n} CUDA device(s): {name}")
print(f"cupy {ask(lambda: cupy.__version__)}")
print(f"CUDA driver API {cuda_version(ask(lambda: rt.driverGetVersion()))}")
print(f"CUDA runtime {cuda_version(ask(lambda: rt.runtimeGetVersion()))}")
print(f"python {sys.version.split()[0]}")
'
# stdout holds the answers, one a line; whatever CuPy warns on stderr goes to the log only
out="$(timeout -k 5 "$(limit 60)" "$PY" -c "$PREFLIGHT" 2>"$SCRATCH/preflight.err")"
rc=$?
{ echo "$out"; cat "$SCRATCH/preflight.err"; } >>"$LOGS/versions.txt"
if ((rc != 0)); then
  reason="$(grep -m1 -E '^(CuPy is not importable|no CUDA device answered)' <<<"$out")"
  [[ -n "$reason" ]] || reason="the CuPy probe $( ((rc == 124 || rc == 137)) && echo 'timed out' || echo "failed (exit $rc)"): $(tail -n1 "$SCRATCH/preflight.err")"
  echo "ci/gpu.sh: $reason" >&2
  record preflight FAIL $((SECONDS - t0)) "$reason"
  not_run "preflight failed" install tests examples bench
  summary 3
fi
GPU_LINE="$(head -n1 <<<"$out" | sed 's/^1 CUDA device(s): //'), $(sed -n 2p <<<"$out"), $(sed -n 3p <<<"$out")"
record preflight ok $((SECONDS - t0)) "$(head -n1 <<<"$out")"

# ---------------------------------------------------------------- 1. install
t0=$SECONDS
echo "== install: wheels from .whl/ and nn_xp from $ROOT (no network)"
log="$LOGS/install.log"
: >"$log"
n_wheels=0
shopt -s nullglob
wheels=("$ROOT"/.whl/*.whl)
shopt -u nullglob
install_rc=0
if ((${#wheels[@]})); then
  n_wheels=${#wheels[@]}
  site="$SCRATCH/site"
  printf 'wheel: %s\n' "${wheels[@]##*/}" >>"$log"
  timeout -k 5 "$(limit 60)" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "${wheels[@]}" >>"$log" 2>&1 || install_rc=$?
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
echo "PYTHONPATH=$PYTHONPATH" >>"$log"
IMPORTS='
import os, sys
import array_api_compat, nn_xp
root = os.path.realpath(sys.argv[1])
where = os.path.realpath(nn_xp.__file__)
if not where.startswith(root + os.sep):
    sys.exit(f"nn_xp imports from {where}, not from this checkout {root}")
print(f"nn_xp {nn_xp.__version__}, array_api_compat {array_api_compat.__version__}")
'
if ((install_rc == 0)); then
  imports="$(timeout -k 5 "$(limit 60)" "$PY" -c "$IMPORTS" "$ROOT" 2>&1)" || install_rc=$?
  echo "$imports" >>"$log"
fi
if ((install_rc != 0)); then
  show_tail "$log"
  record install "$(status_of $install_rc)" $((SECONDS - t0)) "$(tail -n1 "$log")"
  not_run "install failed" tests examples bench
  summary 1
fi
{
  echo "## Python packages"
  timeout 30 "$PY" - <<'EOF' 2>&1
from importlib import metadata
for dist in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "cupy", "torch", "array-api-compat",
             "array-api-strict", "pytest", "hypothesis", "safetensors", "tqdm", "scikit-learn"):
    try:
        print(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        pass
EOF
  echo "## python -m nn_xp"
  timeout 60 "$PY" -m nn_xp 2>&1 || echo "python -m nn_xp failed (exit $?)"
} >>"$LOGS/versions.txt"
record install ok $((SECONDS - t0)) "$imports; $n_wheels wheel(s) from .whl/"

# ---------------------------------------------------------------- 2. tests
t0=$SECONDS
backends="cupy,numpy"
if timeout 60 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  backends="$backends,torch:cuda"
fi
marker=()
((QUICK)) && marker=(-m "not slow")
log="$LOGS/tests.log"
cap="$(limit 180)"
echo "== tests: NN_XP_TEST_BACKENDS=$backends pytest ${TEST_PATHS[*]} (limit ${cap}s)"
if ((cap <= 5)); then
  record tests TIMEOUT 0 "no time left in NN_XP_GPU_BUDGET=$BUDGET"
else
  NN_XP_TEST_BACKENDS="$backends" timeout -k 10 "$cap" "$PY" -m pytest -q -p no:cacheprovider \
    --durations=15 "${marker[@]}" "${TEST_PATHS[@]}" >"$log" 2>&1
  rc=$?
  counts="$(grep -E '^(=+ )?(no tests ran|[0-9]+ (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?))' "$log" \
    | tail -n1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//; s/ =+$//')"
  # no summary line: pytest stopped early (a usage error, an internal error); name its last error line
  [[ -n "$counts" ]] || counts="$(grep -E '^(ERROR|INTERNALERROR>|E ) ' "$log" | tail -n1 | cut -c1-120)"
  [[ -n "$counts" ]] || counts="no pytest summary line"
  ((rc == 124 || rc == 137)) && counts="killed after ${cap}s; $counts"
  ((rc != 0)) && show_tail "$log" 40
  record tests "$(status_of $rc)" $((SECONDS - t0)) "$counts [$backends]"
fi

# ---------------------------------------------------------------- 3. examples
if ((SKIP_EXAMPLES)); then
  record examples skipped 0 "--skip-examples"
else
  t0=$SECONDS
  log="$LOGS/examples.log"
  echo "== examples: on the auto backend (must pick cupy), --epochs $EPOCHS"
  ex_rc=0
  {
    echo "## auto backend"
    timeout -k 5 "$(limit 60)" "$PY" -c '
import nn_xp
backend = nn_xp.resolve_backend()
print(f"auto picks: {backend}")
assert backend.name == "cupy", f"auto picked {backend.name!r}, not cupy"'
  } >"$log" 2>&1 || ex_rc=$?
  if ((ex_rc == 0)); then
    details="auto=cupy"
  else
    details="auto check failed: $(tail -n1 "$log" | cut -c1-100)"
  fi
  present=0
  for ex in sine digits; do
    script="$ROOT/examples/$ex.py"
    if [[ ! -f "$script" ]]; then
      details="$details; $ex missing"
      echo "## examples/$ex.py: missing" >>"$log"
      continue
    fi
    present=$((present + 1))
    args=()
    # the sine example's epochs are the blog's full batches; digits keeps its own (mini-batch) default
    [[ $ex == sine ]] && has_option "--epochs" "$script" && args+=(--epochs "$EPOCHS")
    has_option "--out" "$script" && args+=(--out "$SCRATCH/$ex.png")
    cap="$(limit 90)"
    echo "## examples/$ex.py ${args[*]} (limit ${cap}s)" >>"$log"
    e0=$SECONDS
    # run from the scratch folder, so whatever an example writes by default stays out of the checkout
    (cd "$SCRATCH" && timeout -k 5 "$cap" "$PY" "$script" "${args[@]}") >"$SCRATCH/$ex.log" 2>&1
    rc=$?
    cat "$SCRATCH/$ex.log" >>"$log"
    echo "## exit $rc after $((SECONDS - e0))s" >>"$log"
    # the example's last reported loss or error, a figure worth seeing in the summary
    figure="$(grep -oE '(error|loss|accuracy)[:= ]+[0-9][0-9.eE+-]*' "$SCRATCH/$ex.log" | tail -n1)"
    details="$details; $ex $(status_of $rc) $((SECONDS - e0))s${figure:+ ($figure)}"
    ((rc != 0 && ex_rc == 0)) && ex_rc=$rc
  done
  ((ex_rc != 0)) && show_tail "$log"
  status="$(status_of $ex_rc)"
  ((ex_rc == 0 && present == 0)) && status=missing
  record examples "$status" $((SECONDS - t0)) "$details"
fi

# ---------------------------------------------------------------- 4. benchmark
if ((SKIP_BENCH)); then
  record bench skipped 0 "--skip-bench"
elif [[ ! -f benchmarks/bench.py ]]; then
  record bench missing 0 "benchmarks/bench.py not found"
else
  t0=$SECONDS
  log="$LOGS/bench.log"
  ((QUICK)) && has_option "--quick" benchmarks/bench.py && BENCH_ARGS+=(--quick)
  cap="$(limit 120)"
  echo "== bench: benchmarks/bench.py ${BENCH_ARGS[*]} (limit ${cap}s)"
  if ((cap <= 5)); then
    record bench TIMEOUT 0 "no time left in NN_XP_GPU_BUDGET=$BUDGET"
  else
    timeout -k 5 "$cap" "$PY" benchmarks/bench.py "${BENCH_ARGS[@]}" >"$log" 2>&1
    rc=$?
    details="$(grep -v '^[[:space:]]*$' "$log" | tail -n1 | cut -c1-70)"
    if [[ -f docs/benchmarks-gpu.md && docs/benchmarks-gpu.md -nt "$SCRATCH/stamp" ]]; then
      cp docs/benchmarks-gpu.md "$LOGS/benchmarks-gpu.md"
      details="wrote docs/benchmarks-gpu.md (copied to logs); $details"
    fi
    ((rc != 0)) && show_tail "$log"
    record bench "$(status_of $rc)" $((SECONDS - t0)) "$details"
  fi
fi

# ---------------------------------------------------------------- summary
code=0
for s in "${STEP_STATUS[@]}"; do
  [[ "$s" == FAIL || "$s" == TIMEOUT ]] && code=1
done
summary "$code"

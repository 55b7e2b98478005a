#!/usr/bin/env bash
# ci/gpu.sh: nn_xp's checks on one machine with a CUDA GPU, Python and CuPy, as two calls (issue 17).
#
#   ci/gpu.sh          correctness: install, preflight, tests, slow, examples      (budget 420 s)
#   ci/gpu.sh --bench  benchmark:   install, preflight, bench                       (budget 240 s)
#
# install    wheels from .whl/ (if any) into a scratch --target; nn_xp from this checkout via
#            PYTHONPATH, so no network and no build backend are needed
# preflight  nn_xp's own CuPy check (several CuPy packages, no GPU, a driver too old for the build, NVRTC
#            and cuBLAS not found: each said with its fix, as `python -m nn_xp` says it), then a tiny
#            matmul (cuBLAS) and an elementwise kernel (compiled by NVRTC) checked against NumPy
# tests      the suite without the 'slow' tests on NN_XP_TEST_BACKENDS=cupy,numpy (+ torch:cuda)
# slow       the 'slow' tests (the blog's 20,000 epochs) once, on cupy only
# examples   on the auto backend, which must pick CuPy
# bench      benchmarks/bench.py --gpu: CuPy against PyTorch CUDA
#
# Budgets, from CPU timings (`pytest --durations`, 2 cores; docs/gpu.md has the figures): the suite
# without the slow tests took 24 s on numpy+torch (idle; 105 s loaded, with more tests; 100 s idle with
# issue 16's 2178 tests), the 20,000-epoch
# test 0.5 s on numpy and 1.4 s on torch; the script's own tests 50-60 s, left out here. On a GPU each backend step costs launches instead (~15 us each: ~10 s for 20,000 epochs) and
# CuPy compiles each new kernel once (~0.1-0.3 s, a few hundred of them): about 60-120 s of tests, 10-20 s
# of slow tests, 20 s of examples, 10-20 s to install and preflight; the benchmark about 120 s. The
# budgets are about twice that; each step's limit is cut so the call stays inside its budget, keeping
# some time for the steps after it. Give the device tool's call a timeout of the budget + 30 s.
#
# A short summary is printed last and written to summary.txt (bench-summary.txt); every step keeps its
# full log. Each call writes at most 6 files (the device tool brings back 8). docs/gpu.md says more.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: ci/gpu.sh [--bench] [--logs DIR] [--quick] [--skip-examples] [--help]

Check nn_xp on a CUDA GPU and print a summary. Two calls, each with its own budget and summary:
  ci/gpu.sh          correctness: install, preflight, tests (cupy,numpy[,torch:cuda]), slow tests
                     (once, on cupy), examples                              (NN_XP_GPU_BUDGET 420 s)
  ci/gpu.sh --bench  benchmark: install, preflight, benchmarks/bench.py --gpu  (NN_XP_GPU_BUDGET 240 s)

options:
  --bench          the benchmark call instead of the correctness call
  --logs DIR       where the logs go (default: $OUT if set, else ./gpu-logs)
  --quick          no slow tests, examples with fewer epochs; with --bench: bench --quick
  --skip-examples  do not run the examples (nor the auto-backend check); not with --bench
  -h, --help       show this help and exit

environment:
  PYTHON               the interpreter (default: python3)
  NN_XP_GPU_BUDGET     seconds for the call; each step's limit is cut to fit (default: 420, --bench 240)
  NN_XP_GPU_TESTS      pytest paths, space-separated, from the repository root (default: tests)
  NN_XP_GPU_EPOCHS     --epochs for the sine example (default: 2000; 200 with --quick)
  NN_XP_GPU_BENCH_ARGS arguments for benchmarks/bench.py (default: --gpu)

exit status:
  0  every step passed (a missing example or benchmark script is reported, not failed)
  1  a step failed or ran out of time
  2  usage error
  3  preflight failed: no Python, or CuPy cannot run on a GPU here (the summary says why, with the fix)
EOF
}

die_usage() {
  echo "ci/gpu.sh: $1" >&2
  echo "try 'ci/gpu.sh --help'" >&2
  exit 2
}

# ---------------------------------------------------------------- arguments
LOGS="${OUT:-./gpu-logs}"
BENCH=0
QUICK=0
SKIP_EXAMPLES=0
while (($#)); do
  case "$1" in
    --bench) BENCH=1; shift ;;
    --logs)
      if (($# < 2)) || [[ -z "$2" ]]; then die_usage "--logs needs a folder"; fi
      LOGS="$2"; shift 2 ;;
    --logs=*)
      LOGS="${1#--logs=}"; [[ -n "$LOGS" ]] || die_usage "--logs needs a folder"; shift ;;
    --quick) QUICK=1; shift ;;
    --skip-examples) SKIP_EXAMPLES=1; shift ;;
    --skip-bench) die_usage "--skip-bench is gone: the benchmark is a call of its own (ci/gpu.sh --bench)" ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown option: $1" ;;
  esac
done
((BENCH && SKIP_EXAMPLES)) && die_usage "--skip-examples is for the correctness call; --bench runs no examples"

PY="${PYTHON:-python3}"
BUDGET="${NN_XP_GPU_BUDGET:-$( ((BENCH)) && echo 240 || echo 420)}"
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die_usage "NN_XP_GPU_BUDGET must be a whole number of seconds, got '$BUDGET'"
EPOCHS="${NN_XP_GPU_EPOCHS:-$( ((QUICK)) && echo 200 || echo 2000)}"
[[ "$EPOCHS" =~ ^[0-9]+$ ]] || die_usage "NN_XP_GPU_EPOCHS must be a whole number, got '$EPOCHS'"
read -r -a TEST_PATHS <<<"${NN_XP_GPU_TESTS:-tests}"
read -r -a BENCH_ARGS <<<"${NN_XP_GPU_BENCH_ARGS-"--gpu"}"
# the benchmark call's files carry a prefix, so both calls can share one log folder
PREFIX="$( ((BENCH)) && echo bench- || true)"
CALL="$( ((BENCH)) && echo "GPU benchmark" || echo "GPU check")"

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
VERSIONS="$LOGS/${PREFIX}versions.txt"

# ---------------------------------------------------------------- bookkeeping
STEP_NAMES=()
STEP_STATUS=()
STEP_SECS=()
STEP_INFO=()
GPU_LINE=""
NO_GPU=0  # the preflight found no GPU at all (rather than a GPU that CuPy cannot use)

record() {  # record NAME STATUS SECONDS DETAILS
  STEP_NAMES+=("$1"); STEP_STATUS+=("$2"); STEP_SECS+=("$3"); STEP_INFO+=("$4")
  printf '== %-9s %-7s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

limit() {  # limit CAP [KEEP]: seconds a step may take, cut so the call stays in its budget, KEEP s spare
  local left=$((BUDGET - (SECONDS - START) - 5 - ${2:-0}))
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
  case "$1" in
    0) result="PASS" ;;
    3) result="$( ((NO_GPU)) && echo "NO GPU" || echo "PREFLIGHT FAILED")" ;;
    *) result="FAIL" ;;
  esac
  {
    echo "nn_xp $CALL: ${GPU_LINE:-no GPU}"
    printf '%-10s %-8s %7s  %s\n' step status seconds details
    for i in "${!STEP_NAMES[@]}"; do
      printf '%-10s %-8s %7s  %s\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECS[$i]}" "${STEP_INFO[$i]}"
    done
    echo "result: $result (exit $1) in $((SECONDS - START)) s of a $BUDGET s budget; logs: $LOGS"
  } | tee "$LOGS/${PREFIX}summary.txt"
  exit "$1"
}

not_run() {  # not_run WHY STEP...: the steps after a fatal one are listed, not run
  local why="$1" s
  shift
  for s in "$@"; do record "$s" "not run" 0 "$why"; done
}

pytest_counts() {  # pytest_counts LOG RC CAP: pytest's counts line, or why there is none
  local counts
  counts="$(grep -E '^(=+ )?(no tests ran|[0-9]+ (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?))' "$1" \
    | tail -n1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//; s/ =+$//')"
  # no summary line: pytest stopped early (a usage error, an internal error); name its last error line
  [[ -n "$counts" ]] || counts="$(grep -E '^(ERROR|INTERNALERROR>|E ) ' "$1" | tail -n1 | cut -c1-160)"
  [[ -n "$counts" ]] || counts="no pytest summary line"
  (($2 == 124 || $2 == 137)) && counts="killed after ${3}s; $counts"
  echo "$counts"
}

if ((BENCH)); then LATER=(bench); else LATER=(tests slow examples); fi

# ---------------------------------------------------------------- 0. Python
echo "== nn_xp $CALL (budget ${BUDGET}s, logs: $LOGS)"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "ci/gpu.sh: no Python: '$PY' is not on PATH (set PYTHON)" >&2
  record install "not run" 0 "no Python"
  record preflight FAIL 0 "no Python: '$PY' not found (set PYTHON)"
  not_run "no Python" "${LATER[@]}"
  summary 3
fi
{
  echo "# ci/gpu.sh $( ((BENCH)) && echo '--bench ')$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || echo '?')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (with local changes)')"
  echo "python: $PY = $(command -v "$PY")"
  echo "## nvidia-smi"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi failed (exit $?)"
  else
    echo "nvidia-smi: not found"
  fi
} >"$VERSIONS"

# ---------------------------------------------------------------- 1. install
t0=$SECONDS
echo "== install: wheels from .whl/ and nn_xp from $ROOT (no network)"
log="$LOGS/${PREFIX}install.log"
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
  not_run "install failed" preflight "${LATER[@]}"
  summary 1
fi
{
  echo "## Python packages"
  timeout 30 "$PY" - <<'EOF' 2>&1
from importlib import metadata
names = ["numpy", "torch", "array-api-compat", "array-api-strict", "pytest", "hypothesis", "safetensors",
         "tqdm", "scikit-learn", "matplotlib", "jax"]
names += sorted({d.metadata.get("Name", "") for d in metadata.distributions()
                 if (d.metadata.get("Name") or "").lower().replace("_", "-").startswith("cupy")})
for dist in names:
    try:
        print(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        pass
EOF
} >>"$VERSIONS"
record install ok $((SECONDS - t0)) "$imports; $n_wheels wheel(s) from .whl/"

# ---------------------------------------------------------------- 2. preflight
t0=$SECONDS
echo "== preflight: can CuPy run on a GPU here? (nn_xp's CuPy check, then two tiny kernels)"
# stdout: the backends table, the GPU's facts, one line per kernel, and last the verdict line
cat >"$SCRATCH/preflight.py" <<'EOF'
import sys

import numpy as np

from nn_xp.backends import available_backends, format_backends

report = available_backends()
print(format_backends(report))
info = report["cupy"]
if not info["usable"]:
    print(f"preflight: {info['reason']}")
    sys.exit(3)
import cupy


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
facts = (f"{name}, cupy {cupy.__version__}, CUDA driver {cuda_version(ask(rt.driverGetVersion))}, "
         f"runtime {cuda_version(ask(rt.runtimeGetVersion))}")
print(f"{len(info['devices'])} CUDA device(s); {facts}; python {sys.version.split()[0]}")
print(f"torch:cuda: {'yes' if 'cuda:0' in report['torch']['devices'] else 'no'}")
host = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
x = cupy.asarray(host)
for what, run, want in (("a 3x4 matmul (cuBLAS)", lambda: x @ x.T, host @ host.T),
                        ("an elementwise kernel (compiled by NVRTC)", lambda: cupy.tanh(x) * 2 + 1,
                         np.tanh(host) * 2 + 1)):
    try:
        got = cupy.asnumpy(run())
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        print(f"preflight: CuPy sees the GPU but cannot run {what} on it ({type(exc).__name__}: {text})")
        sys.exit(4)
    error = float(np.max(np.abs(got - want)))
    if not error <= 1e-5:
        print(f"preflight: {what} on CuPy gave wrong numbers (largest error {error:.3g} against NumPy)")
        sys.exit(4)
    print(f"{what}: ok")
print(f"preflight: ok: {facts}")
EOF
out="$(timeout -k 5 "$(limit 90)" "$PY" "$SCRATCH/preflight.py" 2>"$SCRATCH/preflight.err")"
rc=$?
{ echo "## preflight"; echo "$out"; cat "$SCRATCH/preflight.err"; } >>"$VERSIONS"
verdict="$(grep '^preflight: ' <<<"$out" | tail -n1 | sed 's/^preflight: //')"
if ((rc != 0)); then
  if [[ -z "$verdict" ]]; then
    how="$( ((rc == 124 || rc == 137)) && echo 'timed out' || echo "failed (exit $rc)")"
    verdict="the preflight $how: $(grep -v '^[[:space:]]*$' "$SCRATCH/preflight.err" | tail -n1)"
  fi
  [[ "$verdict" == "no GPU"* ]] && NO_GPU=1
  echo "ci/gpu.sh: $verdict" >&2
  record preflight FAIL $((SECONDS - t0)) "$verdict"
  not_run "preflight failed" "${LATER[@]}"
  summary 3
fi
GPU_LINE="${verdict#ok: }"
record preflight ok $((SECONDS - t0)) "$(grep -m1 'CUDA device(s)' <<<"$out" | sed 's/;.*//'); cuBLAS matmul and NVRTC kernel ok"
TORCH_CUDA="$(grep -q '^torch:cuda: yes' <<<"$out" && echo 1 || echo 0)"

# ---------------------------------------------------------------- 3. benchmark (--bench)
if ((BENCH)); then
  if [[ ! -f benchmarks/bench.py ]]; then
    record bench missing 0 "benchmarks/bench.py not found"
    summary 0
  fi
  t0=$SECONDS
  log="$LOGS/bench.log"
  ((QUICK)) && has_option "--quick" benchmarks/bench.py && BENCH_ARGS+=(--quick)
  cap="$(limit 220)"
  echo "== bench: benchmarks/bench.py ${BENCH_ARGS[*]} (limit ${cap}s)"
  timeout -k 5 "$cap" "$PY" benchmarks/bench.py "${BENCH_ARGS[@]}" >"$log" 2>&1
  rc=$?
  details="$(grep -v '^[[:space:]]*$' "$log" | tail -n1 | cut -c1-70)"
  if [[ -f docs/benchmarks-gpu.md && docs/benchmarks-gpu.md -nt "$SCRATCH/stamp" ]]; then
    cp docs/benchmarks-gpu.md "$LOGS/benchmarks-gpu.md"
    details="wrote docs/benchmarks-gpu.md (copied to logs); $details"
  fi
  ((rc != 0)) && show_tail "$log"
  record bench "$(status_of $rc)" $((SECONDS - t0)) "$details"
  summary "$( ((rc == 0)) && echo 0 || echo 1)"
fi

# ---------------------------------------------------------------- 3. tests (correctness)
# the script's own tests fake CuPy and need no GPU: the CPU suite runs them, here they would cost ~50 s
IGNORE=(--ignore "$ROOT/tests/test_gpu_script.py")
t0=$SECONDS
backends="cupy,numpy"
((TORCH_CUDA)) && backends="$backends,torch:cuda"
log="$LOGS/tests.log"
cap="$(limit 300 70)"  # keep 70 s for the slow tests and the examples
echo "== tests: NN_XP_TEST_BACKENDS=$backends pytest -m 'not slow' ${TEST_PATHS[*]} (limit ${cap}s)"
if ((cap <= 5)); then
  record tests TIMEOUT 0 "no time left in NN_XP_GPU_BUDGET=$BUDGET"
else
  NN_XP_TEST_BACKENDS="$backends" timeout -k 10 "$cap" "$PY" -m pytest -q -p no:cacheprovider \
    --durations=15 -m "not slow" "${IGNORE[@]}" "${TEST_PATHS[@]}" >"$log" 2>&1
  rc=$?
  ((rc != 0)) && show_tail "$log" 40
  record tests "$(status_of $rc)" $((SECONDS - t0)) "$(pytest_counts "$log" $rc "$cap") [$backends]"
fi

# ---------------------------------------------------------------- 4. slow tests, once
if ((QUICK)); then
  record slow skipped 0 "--quick"
else
  t0=$SECONDS
  log="$LOGS/slow.log"
  cap="$(limit 60 35)"  # keep 35 s for the examples
  echo "== slow: NN_XP_TEST_BACKENDS=cupy pytest -m slow ${TEST_PATHS[*]} (limit ${cap}s)"
  if ((cap <= 5)); then
    record slow TIMEOUT 0 "no time left in NN_XP_GPU_BUDGET=$BUDGET"
  else
    NN_XP_TEST_BACKENDS=cupy timeout -k 10 "$cap" "$PY" -m pytest -q -p no:cacheprovider \
      --durations=5 -m slow "${IGNORE[@]}" "${TEST_PATHS[@]}" >"$log" 2>&1
    rc=$?
    ((rc != 0)) && show_tail "$log" 40
    record slow "$(status_of $rc)" $((SECONDS - t0)) "$(pytest_counts "$log" $rc "$cap") [cupy]"
  fi
fi

# ---------------------------------------------------------------- 5. examples
if ((SKIP_EXAMPLES)); then
  record examples skipped 0 "--skip-examples"
else
  t0=$SECONDS
  log="$LOGS/examples.log"
  echo "== examples: on the auto backend (must pick cupy), --epochs $EPOCHS"
  ex_rc=0
  {
    echo "## auto backend"
    timeout -k 5 "$(limit 30)" "$PY" -c '
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
    [[ $ex == digits ]] && ((QUICK)) && has_option "--epochs" "$script" && args+=(--epochs 10)
    has_option "--out" "$script" && args+=(--out "$SCRATCH/$ex.png")
    cap="$(limit 60)"
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

# ---------------------------------------------------------------- summary
code=0
for s in "${STEP_STATUS[@]}"; do
  [[ "$s" == FAIL || "$s" == TIMEOUT ]] && code=1
done
summary "$code"

#!/usr/bin/env bash
# ci/fetch_wheels.sh: download into .whl/ the pure-Python wheels a GPU machine without network lacks.
#
# The GPU machine has numpy, CuPy, torch, pytest, hypothesis, safetensors and tqdm, but not
# array-api-compat (nn_xp's dependency) nor array-api-strict (a test backend), which these wheels carry.
# Nor scikit-learn or jax, which are not pure Python: their tests skip there, and examples/digits.py runs
# without scikit-learn (its comparison column is left out).
# ci/gpu.sh installs whatever .whl/ holds, offline. .whl/ is git-ignored: never commit the wheels.
#
# usage: ci/fetch_wheels.sh [NAME==VERSION ...]
#   Without arguments, each package's version is the one installed for $PYTHON (default python3),
#   so the GPU run tests what the CPU runs tested.
set -euo pipefail

case "${1:-}" in
  -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

PY="${PYTHON:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl

specs=("$@")
if ((${#specs[@]} == 0)); then
  for name in array-api-compat array-api-strict; do
    version="$("$PY" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$name" 2>/dev/null)" || {
      echo "ci/fetch_wheels.sh: $name is not installed for $PY; name it as $name==VERSION" >&2
      exit 2
    }
    specs+=("$name==$version")
  done
fi

for spec in "${specs[@]}"; do
  [[ "$spec" == *==* ]] || { echo "ci/fetch_wheels.sh: '$spec' is not NAME==VERSION" >&2; exit 2; }
  name="${spec%%==*}"
  stem="$(tr '.-' '__' <<<"$name")"  # a wheel's file name spells the project with underscores
  # one version of each package: two in .whl/ would stop the whole offline install
  rm -f .whl/"$stem"-*.whl .whl/"$(tr '[:upper:]' '[:lower:]' <<<"$stem")"-*.whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done

status=0
shopt -s nullglob
for wheel in .whl/*.whl; do
  if [[ "$wheel" != *-py3-none-any.whl ]]; then
    echo "ci/fetch_wheels.sh: $wheel is not a pure-Python (py3-none-any) wheel" >&2
    status=1
  fi
  requires="$("$PY" - "$wheel" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines()
            if l.startswith("Requires-Dist:") and "extra ==" not in l]
print(", ".join(reqs) or "nothing")
EOF
)"
  echo "$wheel ($(du -k "$wheel" | cut -f1) KiB) requires: $requires"
done
exit "$status"

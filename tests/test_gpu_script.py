"""``ci/gpu.sh`` checked as far as a CPU machine allows: syntax, arguments, the no-GPU failure, the summary.

CuPy is faked by a package put first on ``PYTHONPATH``: one that cannot be
imported, one whose ``getDeviceCount`` raises ``cudaErrorNoDevice``, one that
sees 0 devices, and one that sees a GPU, which lets the script run past its
preflight into a tiny test folder (``NN_XP_GPU_TESTS``) and print its summary.
torch is hidden the same way, so the script's ``torch.cuda`` probe costs nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ci" / "gpu.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="ci/gpu.sh needs bash")

NO_GPU = 3  # ci/gpu.sh's exit status when no CUDA device answers

FAKE_CUPY = {
    "not importable": 'raise ImportError("libcudart.so.13: cannot open shared object file")\n',
    "no device": (
        "import types\n"
        "class CUDARuntimeError(RuntimeError):\n"
        "    pass\n"
        "def getDeviceCount():\n"
        "    raise CUDARuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected')\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=getDeviceCount))\n"
    ),
    "zero devices": (
        "import types\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))\n"
    ),
    "one device": (
        "import types\n"
        "__version__ = '0.0+fake'\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(\n"
        "    getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {'name': b'Fake H200'},\n"
        "    driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000))\n"
    ),
}


def run_script(tmp_path: Path, *args: str, cupy: str | None = None,
               **env: str) -> subprocess.CompletedProcess:
    """Run ci/gpu.sh with a fake CuPy (by FAKE_CUPY key), torch hidden and a clean NN_XP_* environment."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True, exist_ok=True)
    (fake / "torch" / "__init__.py").write_text('raise ImportError("torch is hidden by test_gpu_script")\n')
    if cupy is not None:
        (fake / "cupy").mkdir(exist_ok=True)
        (fake / "cupy" / "__init__.py").write_text(FAKE_CUPY[cupy])
    base = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_") and k != "OUT"}
    paths = [str(fake)] + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])
    base.update(PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(paths), TMPDIR=str(tmp_path))
    base.update(env)
    return subprocess.run([BASH, str(SCRIPT), *args], cwd=tmp_path, env=base, capture_output=True,
                          text=True, timeout=120)


def test_syntax():
    for script in (SCRIPT, ROOT / "ci" / "fetch_wheels.sh"):
        assert subprocess.run([BASH, "-n", str(script)], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck():
    result = subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / "ci" / "fetch_wheels.sh")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_help(tmp_path):
    result = run_script(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ci/gpu.sh")
    for option in ("--logs", "--quick", "--skip-examples", "--skip-bench"):
        assert option in result.stdout
    assert not (tmp_path / "gpu-logs").exists()


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown option: --frobnicate"),
    (["extra"], "unknown option: extra"),
    (["--logs"], "--logs needs a folder"),
    (["--logs="], "--logs needs a folder"),
])
def test_usage_errors(tmp_path, args, message):
    result = run_script(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "gpu-logs").exists()


def test_bad_budget(tmp_path):
    result = run_script(tmp_path, NN_XP_GPU_BUDGET="five minutes")
    assert result.returncode == 2
    assert "NN_XP_GPU_BUDGET" in result.stderr


def test_no_python(tmp_path):
    result = run_script(tmp_path, "--logs", "logs", PYTHON=str(tmp_path / "no-such-python"))
    assert result.returncode == NO_GPU
    assert "no Python" in result.stderr


@pytest.mark.parametrize("cupy, reason", [
    ("not importable", "CuPy is not importable: ImportError: libcudart.so.13"),
    ("no device", "no CUDA device answered: CUDARuntimeError: cudaErrorNoDevice"),
    ("zero devices", "no CUDA device answered: CuPy sees 0 devices"),
])
def test_no_gpu_stops_at_preflight(tmp_path, cupy, reason):
    result = run_script(tmp_path, "--logs", "logs", cupy=cupy)
    assert result.returncode == NO_GPU, result.stdout + result.stderr
    assert reason in result.stderr
    logs = tmp_path / "logs"
    # nothing long ran: only the versions and the summary were written
    assert sorted(p.name for p in logs.iterdir()) == ["summary.txt", "versions.txt"]
    summary = (logs / "summary.txt").read_text()
    assert reason in summary and "result: NO GPU (exit 3)" in summary
    assert result.stdout.rstrip().endswith(summary.rstrip().splitlines()[-1])


@pytest.mark.parametrize("outcome", ["pass", "fail"])
def test_one_gpu_runs_to_the_summary(tmp_path, outcome):
    tests = tmp_path / "dummy_tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'slow: deselected by --quick')\n")
    (tests / "test_dummy.py").write_text(
        "import os\n\nimport pytest\n\n"
        "@pytest.mark.slow\n"
        "def test_slow():\n"
        "    assert False, '--quick must deselect this'\n\n"
        "def test_backends():\n"
        "    assert os.environ['NN_XP_TEST_BACKENDS'] == 'cupy,numpy'\n\n"
        f"def test_outcome():\n    assert {outcome == 'pass'}\n")
    quick = ["--quick"] if outcome == "pass" else []
    result = run_script(tmp_path, "--skip-bench", "--skip-examples", *quick, cupy="one device",
                        NN_XP_GPU_TESTS=str(tests), OUT=str(tmp_path / "out"))
    logs = tmp_path / "out"  # $OUT is the default log folder, as on the device machine
    summary = (logs / "summary.txt").read_text()
    assert result.stdout.endswith(summary), "the summary must be printed last"
    assert "Fake H200" in summary and "Fake H200" in (logs / "versions.txt").read_text()
    lines = {line.split()[0]: line for line in summary.splitlines()[2:-1]}
    assert list(lines) == ["preflight", "install", "tests", "examples", "bench"]
    assert lines["preflight"].split()[1] == "ok" and lines["install"].split()[1] == "ok"
    assert lines["examples"].split()[1] == "skipped" and lines["bench"].split()[1] == "skipped"
    if outcome == "pass":
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed, 1 deselected" in lines["tests"] and lines["tests"].split()[1] == "ok"
        assert "result: PASS (exit 0)" in summary
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "2 failed, 1 passed" in lines["tests"] and lines["tests"].split()[1] == "FAIL"
        assert "result: FAIL (exit 1)" in summary
        assert "test_outcome" in (logs / "tests.log").read_text()  # the full log is kept
    assert len(list(logs.iterdir())) <= 8  # the device machine brings back at most 8 files

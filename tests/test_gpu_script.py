"""``ci/gpu.sh`` checked as far as a CPU machine allows: arguments, the two calls, budgets, the preflight's
reasons, the summary; and ``examples/digits.py`` without scikit-learn, as the GPU machine runs it.

CuPy is faked by packages put first on ``PYTHONPATH`` (``cupy``, and ``cupy_backends``' NVRTC and
cuBLAS wrappers, which nn_xp's CuPy check loads): one that sees a GPU and computes with NumPy, which
lets the script run past its preflight into a tiny test folder (``NN_XP_GPU_TESTS``), and variants
with no device, a driver too old for the build, no NVRTC or cuBLAS, several CuPy packages installed,
a failing matmul and wrong numbers. The reasons themselves are nn_xp's (``tests/test_backends.py``
checks each); here the script must stop at its preflight with them, exit 3, and say NO GPU only when
there is none. torch is hidden, so the script's ``torch:cuda`` check costs nothing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ci" / "gpu.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="ci/gpu.sh needs bash")

PREFLIGHT_FAILED = 3  # ci/gpu.sh's exit status when CuPy cannot run on a GPU here

# a CuPy that sees one GPU and computes with NumPy; each variant below replaces some of its files
ONE_DEVICE = {
    "cupy/__init__.py": (
        "import types\n"
        "import numpy\n"
        "__version__ = '14.0+fake'\n"
        "class CUDARuntimeError(RuntimeError):\n"
        "    pass\n"
        "def getDeviceCount():\n"
        "    return 1\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(\n"
        "    getDeviceCount=lambda: getDeviceCount(), getDeviceProperties=lambda i: {'name': b'Fake H200'},\n"
        "    driverGetVersion=lambda: DRIVER, runtimeGetVersion=lambda: 13000))\n"
        "DRIVER = 13000\n"
        "asarray = numpy.asarray\n"
        "asnumpy = numpy.asarray\n"
        "tanh = numpy.tanh\n"
    ),
    "cupy_backends/__init__.py": "",
    "cupy_backends/cuda/__init__.py": "",
    "cupy_backends/cuda/libs/__init__.py": "",
    "cupy_backends/cuda/libs/nvrtc.py": "def getVersion():\n    return (13, 0)\n",
    "cupy_backends/cuda/libs/cublas.py": "",
}
NO_DEVICE = ("def getDeviceCount():\n"
             "    raise CUDARuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected')\n")
OLD_DRIVER = ("DRIVER = 12040\n"
              "def getDeviceCount():\n"
              "    raise CUDARuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient "
              "for CUDA runtime version')\n")
FAKES = {
    "one device": {},
    "no device": {"cupy/__init__.py": ONE_DEVICE["cupy/__init__.py"] + NO_DEVICE},
    "old driver": {"cupy/__init__.py": ONE_DEVICE["cupy/__init__.py"] + OLD_DRIVER},
    "no libraries": {
        "cupy_backends/cuda/libs/nvrtc.py": (
            "def getVersion():\n"
            "    raise RuntimeError('Failure finding \"libnvrtc.so.13\": No such file: libnvrtc.so.13')\n"),
        "cupy_backends/cuda/libs/cublas.py": (
            "raise ImportError('libcublas.so.13: cannot open shared object file')\n"),
    },
    "several packages": {
        # CuPy warns at import when it sees these: nn_xp must tell before importing it
        "cupy/__init__.py": "import warnings\nwarnings.warn('CuPy may not function correctly')\n"
                            + ONE_DEVICE["cupy/__init__.py"],
        **{f"cupy_cuda{v}x-14.0.dist-info/METADATA":
           f"Metadata-Version: 2.1\nName: cupy-cuda{v}x\nVersion: 14.0\n" for v in (12, 13)},
    },
    "matmul fails": {"cupy/__init__.py": ONE_DEVICE["cupy/__init__.py"] + (
        "class CUBLASError(RuntimeError):\n"
        "    pass\n"
        "class Array:\n"
        "    T = property(lambda self: self)\n"
        "    def __matmul__(self, other):\n"
        "        raise CUBLASError('CUBLAS_STATUS_NOT_INITIALIZED')\n"
        "asarray = lambda a: Array()\n")},
    "wrong numbers": {"cupy/__init__.py": ONE_DEVICE["cupy/__init__.py"]
                      + "asnumpy = lambda a: numpy.zeros_like(numpy.asarray(a))\n"},
}


def run_script(tmp_path: Path, *args: str, cupy: str | None = None,
               **env: str) -> subprocess.CompletedProcess:
    """Run ci/gpu.sh with a fake CuPy (by FAKES key), torch hidden and a clean NN_XP_* environment."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True, exist_ok=True)
    (fake / "torch" / "__init__.py").write_text('raise ImportError("torch is hidden by test_gpu_script")\n')
    if cupy is not None:
        for name, text in {**ONE_DEVICE, **FAKES[cupy]}.items():
            (fake / name).parent.mkdir(parents=True, exist_ok=True)
            (fake / name).write_text(text)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_") and k != "OUT"}
    paths = [str(fake)] + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])
    base.update(PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(paths), TMPDIR=str(tmp_path))
    base.update(env)
    return subprocess.run([BASH, str(SCRIPT), *args], cwd=tmp_path, env=base, capture_output=True,
                          text=True, timeout=180)


def steps(summary: str) -> dict[str, list[str]]:
    """The summary's table: step name -> [status, seconds, details]."""
    rows = {}
    for line in summary.splitlines()[2:-1]:
        name, rest = line.split(None, 1)
        status = "not run" if rest.startswith("not run") else rest.split()[0]
        seconds, details = rest[len(status):].split(None, 1) if rest[len(status):].strip() else ("", "")
        rows[name] = [status, seconds, details.strip()]
    return rows


def dummy_tests(tmp_path: Path, outcome: str = "pass", slow_body: str = "pass") -> Path:
    """A tiny test folder: a slow test that must run alone on cupy, two others on cupy,numpy."""
    tests = tmp_path / "dummy_tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'slow: the slow step runs these, once')\n")
    (tests / "test_dummy.py").write_text(
        "import os\nimport time\n\nimport pytest\n\n"
        "@pytest.mark.slow\n"
        "def test_slow():\n"
        "    assert os.environ['NN_XP_TEST_BACKENDS'] == 'cupy', 'slow tests run once, on cupy'\n"
        f"    {slow_body}\n\n"
        "def test_backends():\n"
        "    assert os.environ['NN_XP_TEST_BACKENDS'] == 'cupy,numpy'\n\n"
        f"def test_outcome():\n    assert {outcome == 'pass'}\n")
    return tests


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
    for option in ("--bench", "--logs", "--quick", "--skip-examples", "NN_XP_GPU_BUDGET"):
        assert option in result.stdout
    assert "--skip-bench" not in result.stdout
    assert not (tmp_path / "gpu-logs").exists()


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown option: --frobnicate"),
    (["extra"], "unknown option: extra"),
    (["--logs"], "--logs needs a folder"),
    (["--logs="], "--logs needs a folder"),
    (["--skip-bench"], "--skip-bench is gone: the benchmark is a call of its own (ci/gpu.sh --bench)"),
    (["--bench", "--skip-examples"], "--skip-examples is for the correctness call; --bench runs no examples"),
])
def test_usage_errors(tmp_path, args, message):
    result = run_script(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "gpu-logs").exists()


@pytest.mark.parametrize("variable", ["NN_XP_GPU_BUDGET", "NN_XP_GPU_EPOCHS"])
def test_bad_numbers(tmp_path, variable):
    result = run_script(tmp_path, **{variable: "five minutes"})
    assert result.returncode == 2
    assert f"{variable} must be a whole number" in result.stderr


def test_no_python(tmp_path):
    result = run_script(tmp_path, "--logs", "logs", PYTHON=str(tmp_path / "no-such-python"))
    assert result.returncode == PREFLIGHT_FAILED
    assert "no Python" in result.stderr
    assert "result: PREFLIGHT FAILED (exit 3)" in (tmp_path / "logs" / "summary.txt").read_text()


@pytest.mark.parametrize("cupy, reason, no_gpu", [
    ("no device", "no GPU (no CUDA device answered: CUDARuntimeError: cudaErrorNoDevice", True),
    ("old driver", "the NVIDIA driver is too old for this CuPy build", False),
    ("no libraries", 'CUDA libraries not found (NVRTC: RuntimeError: Failure finding "libnvrtc', False),
    ("several packages", "several CuPy packages are installed (cupy-cuda12x, cupy-cuda13x)", False),
    ("matmul fails", "CuPy sees the GPU but cannot run a 3x4 matmul (cuBLAS) on it (CUBLASError: "
                     "CUBLAS_STATUS_NOT_INITIALIZED)", False),
    ("wrong numbers", "a 3x4 matmul (cuBLAS) on CuPy gave wrong numbers", False),
])
def test_preflight_stops_with_the_reason(tmp_path, cupy, reason, no_gpu):
    """Issue 17, items 3, 4 and 9: each way CuPy cannot run is told, with its fix, before any test runs."""
    result = run_script(tmp_path, "--logs", "logs", cupy=cupy)
    assert result.returncode == PREFLIGHT_FAILED, result.stdout + result.stderr
    assert reason in result.stderr
    logs = tmp_path / "logs"
    # nothing long ran: only the install, the versions and the summary were written
    assert sorted(p.name for p in logs.iterdir()) == ["install.log", "summary.txt", "versions.txt"]
    summary = (logs / "summary.txt").read_text()
    rows = steps(summary)
    assert list(rows) == ["install", "preflight", "tests", "slow", "examples"]
    assert rows["install"][0] == "ok" and rows["preflight"][0] == "FAIL" and reason in rows["preflight"][2]
    assert all(rows[s][0] == "not run" for s in ("tests", "slow", "examples"))
    assert f"result: {'NO GPU' if no_gpu else 'PREFLIGHT FAILED'} (exit 3)" in summary
    assert result.stdout.rstrip().endswith(summary.rstrip().splitlines()[-1])
    if cupy == "old driver":  # the whole fix, with the build to install instead
        assert "this driver supports CUDA 12.4" in summary
        assert "'nn_xp[cuda12]', which is cupy-cuda12x" in summary
    if cupy in ("old driver", "no libraries", "several packages"):
        assert "fix: " in rows["preflight"][2]
    # the backends table (as `python -m nn_xp` prints it) is in the versions, with the same reason
    versions = (logs / "versions.txt").read_text()
    auto = "cupy" if cupy in ("matmul fails", "wrong numbers") else "numpy"  # nn_xp's own check passes those
    assert "## preflight" in versions and f"auto picks: {auto}" in versions


@pytest.mark.parametrize("outcome", ["pass", "fail"])
def test_one_gpu_runs_to_the_summary(tmp_path, outcome):
    """Issue 17, item 1: the suite runs without its slow tests, which then run once, on cupy alone."""
    tests = dummy_tests(tmp_path, outcome)
    result = run_script(tmp_path, "--skip-examples", cupy="one device",
                        NN_XP_GPU_TESTS=str(tests), OUT=str(tmp_path / "out"))
    logs = tmp_path / "out"  # $OUT is the default log folder, as on the device machine
    summary = (logs / "summary.txt").read_text()
    assert result.stdout.endswith(summary), "the summary must be printed last"
    assert summary.startswith("nn_xp GPU check: Fake H200, cupy 14.0+fake, CUDA driver 13.0, runtime 13.0")
    assert "Fake H200" in (logs / "versions.txt").read_text()
    rows = steps(summary)
    assert list(rows) == ["install", "preflight", "tests", "slow", "examples"]
    assert rows["install"][0] == "ok" and rows["preflight"][0] == "ok"
    assert "cuBLAS matmul and NVRTC kernel ok" in rows["preflight"][2]
    assert rows["examples"][0] == "skipped"
    assert rows["slow"][0] == "ok" and rows["slow"][2] == "1 passed, 2 deselected [cupy]"
    assert "of a 420 s budget" in summary
    if outcome == "pass":
        assert result.returncode == 0, result.stdout + result.stderr
        assert rows["tests"] == ["ok", rows["tests"][1], "2 passed, 1 deselected [cupy,numpy]"]
        assert "result: PASS (exit 0)" in summary
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert rows["tests"][0] == "FAIL" and "1 failed, 1 passed" in rows["tests"][2]
        assert "result: FAIL (exit 1)" in summary
        assert "test_outcome" in (logs / "tests.log").read_text()  # the full log is kept
    assert sorted(p.name for p in logs.iterdir()) == ["install.log", "slow.log", "summary.txt", "tests.log",
                                                      "versions.txt"]


def test_quick_skips_the_slow_tests(tmp_path):
    tests = dummy_tests(tmp_path, slow_body="assert False, '--quick must not run this'")
    result = run_script(tmp_path, "--quick", "--skip-examples", "--logs", "logs", cupy="one device",
                        NN_XP_GPU_TESTS=str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = steps((tmp_path / "logs" / "summary.txt").read_text())
    assert rows["slow"] == ["skipped", "0", "--quick"] and rows["tests"][0] == "ok"
    assert not (tmp_path / "logs" / "slow.log").exists()


def test_budget_cuts_each_step(tmp_path):
    """A step's limit is cut so the call stays in its budget, keeping time for the steps after it."""
    tests = dummy_tests(tmp_path)
    (tests / "test_dummy.py").write_text((tests / "test_dummy.py").read_text()
                                         + "\ndef test_sleeps():\n    time.sleep(120)\n")
    # the tests keep 70 s for the slow tests and the examples, and 5 s for the summary: ~10 s are theirs
    budget = 86
    result = run_script(tmp_path, "--skip-examples", "--logs", "logs", cupy="one device",
                        NN_XP_GPU_TESTS=str(tests), NN_XP_GPU_BUDGET=str(budget))
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "logs" / "summary.txt").read_text()
    rows = steps(summary)
    cap = int(re.search(r"== tests: .* \(limit (\d+)s\)", result.stdout).group(1))
    assert 1 <= cap <= budget - 75
    assert rows["tests"][0] == "TIMEOUT"
    # killed at its limit (or, on a machine so slow that under 6 s were left, never started)
    assert rows["tests"][2].startswith(f"killed after {cap}s" if cap > 5 else "no time left")
    # the slow tests still had their time, cut to keep 35 s for the examples
    slow_cap = int(re.search(r"== slow: .* \(limit (\d+)s\)", result.stdout).group(1))
    assert 1 <= slow_cap <= budget - 40 - cap and rows["slow"][0] == "ok"
    assert int(re.search(r"in (\d+) s of a 86 s budget", summary).group(1)) <= budget

    # a budget spent before a step starts: the step is reported, not run without a limit
    result = run_script(tmp_path, "--skip-examples", "--logs", "logs", cupy="one device",
                        NN_XP_GPU_TESTS=str(tests), NN_XP_GPU_BUDGET="60")
    rows = steps((tmp_path / "logs" / "summary.txt").read_text())
    assert result.returncode == 1
    assert rows["tests"] == ["TIMEOUT", "0", "no time left in NN_XP_GPU_BUDGET=60"]
    assert rows["slow"][0] == "ok"


def test_bench_is_a_call_of_its_own(tmp_path):
    """``--bench``: install, preflight and the benchmark only, its own summary and budget, its own files."""
    result = run_script(tmp_path, "--bench", "--logs", "logs", cupy="one device",
                        NN_XP_GPU_BENCH_ARGS="--help")  # bench.py's --help: quick, and exit 0
    assert result.returncode == 0, result.stdout + result.stderr
    logs = tmp_path / "logs"
    summary = (logs / "bench-summary.txt").read_text()
    assert result.stdout.endswith(summary)
    assert summary.startswith("nn_xp GPU benchmark: Fake H200")
    rows = steps(summary)
    assert list(rows) == ["install", "preflight", "bench"] and rows["bench"][0] == "ok"
    assert "result: PASS (exit 0)" in summary and "of a 240 s budget" in summary
    assert "usage: bench.py" in (logs / "bench.log").read_text()
    assert sorted(p.name for p in logs.iterdir()) == ["bench-install.log", "bench-summary.txt",
                                                      "bench-versions.txt", "bench.log"]
    failed = run_script(tmp_path, "--bench", "--logs", "logs", cupy="one device",
                        NN_XP_GPU_BENCH_ARGS="--no-such-option")
    assert failed.returncode == 1
    assert steps((logs / "bench-summary.txt").read_text())["bench"][0] == "FAIL"


def test_bench_stops_at_the_preflight_too(tmp_path):
    result = run_script(tmp_path, "--bench", "--logs", "logs", cupy="no device")
    assert result.returncode == PREFLIGHT_FAILED
    rows = steps((tmp_path / "logs" / "bench-summary.txt").read_text())
    assert list(rows) == ["install", "preflight", "bench"] and rows["bench"][0] == "not run"


# ------------------------------------------------------------------ examples/digits.py (issue 17, item 2)
DIGITS = ROOT / "examples" / "digits.py"


def run_digits(tmp_path: Path, *, hide_sklearn: bool) -> subprocess.CompletedProcess:
    """examples/digits.py for 2 epochs on NumPy; scikit-learn hidden as on the GPU machine, if asked."""
    args = ["--backend", "numpy", "--epochs", "2", "--out", str(tmp_path / "digits.png")]
    code = ("import runpy, sys\n"
            + ("sys.modules['sklearn'] = None  # import sklearn -> ImportError\n" if hide_sklearn else "")
            + f"sys.argv = [{str(DIGITS)!r}, *{args!r}]\n"
            + f"runpy.run_path({str(DIGITS)!r}, run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_digits_runs_without_scikit_learn(tmp_path):
    result = run_digits(tmp_path, hide_sklearn=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^(?:nn_xp \(\w+\)|scikit-learn) +[0-9.]+ .*$", result.stdout, re.M)
    assert len(rows) == 1 and rows[0].startswith("nn_xp (numpy)")
    accuracy = float(rows[0].split()[2])
    assert 0.1 < accuracy <= 1.0  # 2 epochs of Adam already beat chance (0.1) on 10 classes
    assert "scikit-learn is not installed: no comparison column" in result.stdout


def test_digits_data_are_scikit_learns():
    """The copy shipped in examples/data is exactly ``load_digits()``."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    with np.load(ROOT / "examples" / "data" / "digits.npz") as data:
        np.testing.assert_array_equal(data["data"], X)
        np.testing.assert_array_equal(data["target"], y)
        assert data["data"].dtype == np.uint8 and data["target"].dtype == np.uint8


def test_digits_compares_with_scikit_learn_where_installed(tmp_path):
    pytest.importorskip("sklearn")
    result = run_digits(tmp_path, hide_sklearn=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^nn_xp \(numpy\) +[0-9.]+ ", result.stdout, re.M)
    assert re.search(r"^scikit-learn +[0-9.]+ ", result.stdout, re.M)
    assert "not installed: no comparison" not in result.stdout

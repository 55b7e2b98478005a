"""Backend resolution: argument, else NN_XP_BACKEND, else auto; clear errors, never a silent fallback."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import nn_xp
from nn_xp import backends
from nn_xp.backends import BackendUnavailableError, resolve_backend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)


def _fake_cupy(monkeypatch, device_count, *, version="14.0-fake", driver=13000, runtime=13000,
               nvrtc_error=None, cublas_missing=False, packages=("cupy-cuda13x",)):
    """A stand-in ``cupy`` module: imports fine, its CUDA runtime answers ``device_count`` or raises.

    ``driver``/``runtime`` are what ``driverGetVersion``/``runtimeGetVersion`` answer (0: no driver);
    ``cupy_backends``' NVRTC and cuBLAS wrappers load unless ``nvrtc_error`` / ``cublas_missing``;
    ``packages`` are the CuPy distributions installed.
    """
    fake = types.ModuleType("cupy")
    fake.__version__ = version

    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count, driverGetVersion=lambda: driver, runtimeGetVersion=lambda: runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)

    def nvrtc_version():
        if nvrtc_error is not None:
            raise nvrtc_error
        return (13, 0)

    for name in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.libs"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.nvrtc",
                        types.SimpleNamespace(getVersion=nvrtc_version))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.cublas",
                        None if cublas_missing else types.ModuleType("cupy_backends.cuda.libs.cublas"))
    monkeypatch.setattr(backends, "_cupy_distributions", lambda: tuple(packages))
    return fake


class CUDARuntimeError(RuntimeError):
    """CuPy's error type for the CUDA runtime: its text starts with the status's name."""


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backend 'mxnet'.*numpy, cupy, torch, array_api_strict"):
        resolve_backend("mxnet")


def test_unknown_name_from_environment_says_so(monkeypatch):
    monkeypatch.setenv("NN_XP_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="from NN_XP_BACKEND"):
        resolve_backend()


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("NN_XP_BACKEND", "array_api_strict")
    assert resolve_backend("numpy").name == "numpy"
    assert resolve_backend().name == "array_api_strict"


def test_environment_device(monkeypatch):
    monkeypatch.setenv("NN_XP_BACKEND", "array_api_strict")
    monkeypatch.setenv("NN_XP_DEVICE", "device1")
    b = resolve_backend()
    assert str(b.device) == str(b.xp.Device("device1"))
    net = nn_xp.Network([2, 3, 1])
    assert net.backend.device == b.device
    assert all(p.device == b.device for p in net.params.values())


def test_case_insensitive_name():
    assert resolve_backend("NumPy").name == "numpy"


def test_auto_without_gpu_picks_numpy(monkeypatch):
    _fake_cupy(monkeypatch, RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"))
    assert resolve_backend("auto").name == "numpy"
    assert resolve_backend().name == "numpy"
    assert nn_xp.available_backends()["auto"]["picks"] == "numpy"


def test_auto_with_a_gpu_picks_cupy(monkeypatch):
    _fake_cupy(monkeypatch, 2)
    report = nn_xp.available_backends()
    assert report["cupy"]["usable"] and report["cupy"]["devices"] == ["cuda:0", "cuda:1"]
    assert report["auto"]["picks"] == "cupy"


def test_cupy_without_device_is_an_error_not_a_fallback(monkeypatch):
    _fake_cupy(monkeypatch, RuntimeError("cudaErrorNoDevice"))
    monkeypatch.setenv("NN_XP_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError) as info:
        nn_xp.Network([1, 2, 1])
    msg = str(info.value)
    assert "'cupy'" in msg and "no CUDA device" in msg and "unset NN_XP_BACKEND" in msg


def test_cupy_reasons_tell_no_gpu_from_an_old_driver(monkeypatch):
    """Issue 17, item 4: without any driver, the runtime also says cudaErrorInsufficientDriver, with a driver
    version of 0: that is no GPU; a driver for an older CUDA is told apart, with the build to install."""
    insufficient = CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for "
                                    "CUDA runtime version")
    _fake_cupy(monkeypatch, insufficient, driver=0, runtime=13020)
    reason = backends._probe("cupy")["reason"]
    assert reason.startswith("no GPU (no NVIDIA driver answered") and "cudaErrorInsufficientDriver" in reason
    assert "too old" not in reason and "fix: " in reason

    _fake_cupy(monkeypatch, insufficient, driver=12040, runtime=13020)
    report = backends._probe("cupy")
    assert report["installed"] and not report["usable"]
    reason = report["reason"]
    assert reason.startswith("the NVIDIA driver is too old for this CuPy build (cupy-cuda13x 14.0-fake runs "
                             "the CUDA 13.2 runtime, which needs a driver for CUDA 13")
    assert "this driver supports CUDA 12.4" in reason
    assert "fix: install the CuPy build for CUDA 12 instead (pip uninstall -y cupy-cuda13x;" in reason
    assert "'nn_xp[cuda12]', which is cupy-cuda12x), or update the NVIDIA driver" in reason
    with pytest.raises(BackendUnavailableError, match="driver is too old"):
        resolve_backend("cupy")
    assert nn_xp.available_backends()["auto"]["picks"] == "numpy"

    _fake_cupy(monkeypatch, insufficient, driver=11080, runtime=12080, packages=("cupy-cuda12x",))
    reason = backends._probe("cupy")["reason"]
    assert "supports CUDA 11.8" in reason and "fix: update the NVIDIA driver" in reason


@pytest.mark.parametrize("count, seen", [
    (CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"), "cudaErrorNoDevice"),
    (0, "CuPy sees 0 devices"),
])
def test_cupy_without_a_device_says_no_gpu(monkeypatch, count, seen):
    _fake_cupy(monkeypatch, count)
    reason = backends._probe("cupy")["reason"]
    assert reason.startswith("no GPU (no CUDA device answered: ") and seen in reason
    assert reason.endswith("fix: run on a machine with an NVIDIA GPU and its driver (nvidia-smi lists the "
                           "GPU), or pick another backend")


@pytest.mark.parametrize("version, fix", [
    ("14.0-fake", "fix: pip install 'cupy-cuda13x[ctk]' (the CUDA libraries as wheels)"),
    ("13.6.0", "or upgrade to CuPy 14 and pip install 'cupy-cuda13x[ctk]'"),
])
def test_cupy_without_its_cuda_libraries_is_not_usable(monkeypatch, version, fix):
    """Issue 17, item 3: a GPU answers, but NVRTC (every kernel) or cuBLAS (matmul) cannot be loaded."""
    _fake_cupy(monkeypatch, 1, version=version, nvrtc_error=RuntimeError(
        'Failure finding "libnvrtc.so.13": No such file: libnvrtc.so.13'), cublas_missing=True)
    report = backends._probe("cupy")
    assert not report["usable"] and report["devices"] == []
    reason = report["reason"]
    assert reason.startswith('CUDA libraries not found (NVRTC: RuntimeError: Failure finding "libnvrtc')
    assert "; cuBLAS: ModuleNotFoundError: " in reason and fix in reason and "CUDA 13 toolkit" in reason
    with pytest.raises(BackendUnavailableError, match="CUDA libraries not found"):
        resolve_backend("cupy")

    _fake_cupy(monkeypatch, 1, version=version, cublas_missing=True)  # NVRTC alone loads
    reason = backends._probe("cupy")["reason"]
    assert reason.startswith("CUDA libraries not found (cuBLAS: ") and "NVRTC" not in reason.split("fix:")[0]


def test_several_cupy_packages_are_named_before_cupy_is_imported(monkeypatch):
    """Issue 17, item 9: CuPy warns at import when several of its packages are installed (an error under
    filterwarnings=error); nn_xp names them, and the fix, without importing it."""
    _fake_cupy(monkeypatch, 1, packages=("cupy-cuda12x", "cupy-cuda13x"))
    monkeypatch.setitem(sys.modules, "cupy", None)  # an import would fail: the report must not need one
    report = backends._probe("cupy")
    assert report["installed"] and not report["usable"]
    assert report["reason"] == (
        "several CuPy packages are installed (cupy-cuda12x, cupy-cuda13x), which overwrite each other's "
        "files; fix: uninstall them all (pip uninstall -y cupy-cuda12x cupy-cuda13x), then install only the "
        f"one matching nvidia-smi's CUDA version ({backends._INSTALL_HINT['cupy']})")


def test_cupy_distributions_are_read_from_the_installed_metadata(tmp_path, monkeypatch):
    for name in ("cupy_cuda12x-14.0.0", "cupy_cuda13x-14.0.0", "cupy_xarray-0.1", "cupyx_like-1.0"):
        info = tmp_path / f"{name}.dist-info"
        info.mkdir()
        dist, version = name.split("-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._cupy_distributions.cache_clear()
    try:
        found = backends._cupy_distributions()
    finally:
        backends._cupy_distributions.cache_clear()
    assert {"cupy-cuda12x", "cupy-cuda13x"} <= set(found)  # normalised names; CuPy's own packages only
    assert "cupy-xarray" not in found and "cupyx-like" not in found


def test_the_test_run_explains_several_cupy_packages(tmp_path):
    """Issue 17, item 9: CuPy's import warning would crash pytest's configuration (filterwarnings=error);
    the run names the packages instead, failing when cupy is asked for and skipping it otherwise."""
    for dist in ("cupy_cuda12x", "cupy_cuda13x"):
        (tmp_path / f"{dist}-14.0.0.dist-info").mkdir()
        (tmp_path / f"{dist}-14.0.0.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 14.0.0\n")
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(  # as CuPy does: warn, then work
        "import warnings\nwarnings.warn('CuPy may not function correctly because multiple CuPy packages "
        "are installed')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               "tests/test_backends.py", "-k", "test_dtype_names"]
    asked = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**env, "NN_XP_TEST_BACKENDS": "numpy,cupy"})
    assert asked.returncode == pytest.ExitCode.USAGE_ERROR, asked.stdout + asked.stderr
    assert "NN_XP_TEST_BACKENDS asks for 'cupy', which is not usable here" in asked.stderr
    assert "several CuPy packages are installed (cupy-cuda12x, cupy-cuda13x)" in asked.stderr
    unasked = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert unasked.returncode == 0, unasked.stdout + unasked.stderr
    assert "cupy not available: " in unasked.stdout and "several CuPy packages" in unasked.stdout


def test_a_warning_at_import_is_reported_not_a_crash(tmp_path):
    """Any warning a backend raises at import (filterwarnings=error makes it an exception) is that backend's
    reason, not an INTERNALERROR before any test runs."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        "import warnings\nwarnings.warn('CUDA path could not be detected', UserWarning)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), NN_XP_TEST_BACKENDS="numpy,cupy")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_backends.py", "-k", "test_dtype_names"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert ("importing cupy warned, which filterwarnings=error makes an error (UserWarning: CUDA path could "
            "not be detected)") in result.stderr


def test_cupy_that_fails_to_import_is_installed_not_missing(tmp_path, monkeypatch):
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        'raise ImportError("libnvrtc.so.12: cannot open shared object file: No such file or directory")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(backends, "_cupy_distributions", lambda: ("cupy-cuda12x",))
    report = backends._probe("cupy")
    assert report["installed"] and not report["usable"]
    assert report["reason"].startswith("cupy-cuda12x is installed but does not import (ImportError: "
                                       "libnvrtc.so.12: cannot open shared object file")
    assert "fix: install what it names" in report["reason"]


def test_python_m_nn_xp_says_the_driver_is_too_old(tmp_path):
    """The table of ``python -m nn_xp`` carries the whole reason, from a CuPy that cannot start."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        "import types\n__version__ = '14.0-fake'\n"
        "def count():\n"
        "    raise RuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient')\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count,\n"
        "    driverGetVersion=lambda: 12020, runtimeGetVersion=lambda: 13000))\n")
    path = os.pathsep.join([str(tmp_path), *sys.path])
    out = subprocess.run([sys.executable, "-m", "nn_xp"], capture_output=True, text=True, check=True,
                         env={"PATH": "", "PYTHONPATH": path}).stdout
    row = next(line for line in out.splitlines() if line.startswith("cupy "))
    assert "the NVIDIA driver is too old for this CuPy build" in row and "supports CUDA 12.2" in row
    assert out.splitlines()[-1] == "auto picks: numpy"


def test_cupy_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"not installed.*nn_xp\[cuda12\]"):
        resolve_backend("cupy")
    assert nn_xp.available_backends()["cupy"] == {
        "name": "cupy", "installed": False, "usable": False, "devices": [], "version": None,
        "reason": backends._probe("cupy")["reason"]}


def test_missing_torch_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendUnavailableError, match="'torch'.*not installed.*pip install torch"):
        resolve_backend("torch")


def test_auto_with_device_but_no_gpu_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match="auto.*no CUDA device"):
        resolve_backend("auto", device=1)


def test_numpy_rejects_a_gpu_device():
    with pytest.raises(ValueError, match="only the 'cpu' device"):
        resolve_backend("numpy", device="cuda:0")


def test_array_api_strict_unknown_device():
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="no device 'device9'"):
        resolve_backend("array_api_strict", device="device9")


def test_torch_missing_cuda_device_is_an_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="torch sees 0 CUDA"):
        resolve_backend("torch", device="cuda:0")


def test_available_backends_reports_numpy():
    report = nn_xp.available_backends()
    assert set(report) == {"numpy", "cupy", "torch", "array_api_strict", "jax", "auto"}
    assert report["numpy"]["installed"] and report["numpy"]["usable"]
    assert report["numpy"]["devices"] == ["cpu"]
    assert report["numpy"]["version"] == np.__version__


def test_python_m_nn_xp_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "nn_xp"], capture_output=True, text=True, check=True,
                         env={"PATH": "", "PYTHONPATH": ":".join(sys.path)}).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["backend", "installed", "usable"]
    assert any(line.startswith("numpy") and " yes " in line for line in lines)
    assert lines[-1].startswith("auto picks: ")


def test_backend_of_an_array_round_trips(backend):
    x = backend.asarray(np.ones((2, 3)))
    found = backends.backend_of(x)
    assert found.xp is backend.xp and found.device == backend.device
    np.testing.assert_array_equal(backends.to_numpy(x), np.ones((2, 3)))


def test_dtype_names(backend):
    assert backend.dtype("float32") == backend.xp.float32
    with pytest.raises(ValueError, match="float32.*float64.*'float16'"):
        backend.dtype("float16")


def test_an_explicit_backend_ignores_nn_xp_device(monkeypatch):
    """NN_XP_DEVICE goes with NN_XP_BACKEND / auto; backend='numpy' must not inherit 'cuda:0'."""
    monkeypatch.setenv("NN_XP_DEVICE", "cuda:0")
    assert resolve_backend("numpy").device == "cpu"
    with pytest.raises(ValueError, match="only the 'cpu' device"):
        resolve_backend("numpy", device="cuda:0")


def test_torch_devices_are_canonical():
    """torch.device('cpu:0') != tensors' 'cpu' (and 'cuda' != 'cuda:0'): the backend stores what tensors
    report."""
    torch = pytest.importorskip("torch")
    b = resolve_backend("torch", device="cpu:0")
    assert b.device == torch.ones(1).device
    net = nn_xp.Network([2, 3, 1], backend="torch", device="cpu:0", dtype="float64")
    values = net.evaluate(torch.ones((4, 2), dtype=torch.float64))
    assert values[-1][1].shape == (4, 1)


def test_public_methods_run_inside_the_backend_context(monkeypatch):
    """CuPy works on the current GPU: fit, predict and friends enter the backend's device context."""
    entered = []

    class Recorder:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    net = nn_xp.Network([1, 3, 1], backend="numpy", dtype="float64")
    monkeypatch.setattr(backends.Backend, "context", lambda self: Recorder())
    monkeypatch.setattr(backends.Backend, "needs_context", property(lambda self: True))  # as CuPy does
    X = np.ones((4, 1))
    for call in (lambda: net.fit(X, X, epochs=1), lambda: net.predict(X), lambda: net.loss(X, X),
                 lambda: net.score(X, X), lambda: net.evaluate(X),
                 lambda: net.set_weights(net.get_weights())):
        before = len(entered)
        call()
        assert len(entered) > before


def test_a_backend_with_an_unhashable_device_hashes():
    """Issue 17, item 7: CuPy's Device is unhashable; a Backend (a frozen dataclass) must still hash."""

    class Device:  # like cupy.cuda.Device: compared by value, no __hash__
        __hash__ = None

        def __init__(self, i):
            self.i = i

        def __eq__(self, other):
            return isinstance(other, Device) and other.i == self.i

        def __repr__(self):
            return f"<CUDA Device {self.i}>"

    a, b = nn_xp.Backend("cupy", np, Device(0)), nn_xp.Backend("cupy", np, Device(0))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1

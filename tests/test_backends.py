"""Backend resolution: argument, else NN_XP_BACKEND, else auto; clear errors, never a silent fallback."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import nn_xp
from nn_xp import backends
from nn_xp.backends import BackendUnavailableError, resolve_backend


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)


def _fake_cupy(monkeypatch, device_count):
    """A stand-in ``cupy`` module: imports fine, its CUDA runtime answers ``device_count`` or raises."""
    fake = types.ModuleType("cupy")
    fake.__version__ = "99.0-fake"

    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backend 'jax'.*numpy, cupy, torch, array_api_strict"):
        resolve_backend("jax")


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
    assert set(report) == {"numpy", "cupy", "torch", "array_api_strict", "auto"}
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
